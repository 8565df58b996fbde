"""Writing to the history as chatllm works: a one-shot run as a conversation of
one exchange, a chat turn by turn (history/store.py keeps the database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from chatllm.engine.base import GenerationStats, usage_json
from chatllm.history.store import HistoryStore, StoredMessage, title_of
from chatllm.reply.tool_loop import ToolStep, steps_json

if TYPE_CHECKING:
    from chatllm.jobs.chat import ChatSession, Turn


def record_run(
    *,
    model: str,
    template: str,
    output: str,
    stats: Any = None,
    prompt: str = "",
    variables: Mapping[str, Any] | None = None,
    params: Any = None,
    store: HistoryStore | None = None,
    reasoning: str | None = None,
    tools: Sequence[ToolStep] = (),
) -> int:
    """Save a one-shot run (the input and the output, and the tools it
    called) as a conversation of one exchange; returns its ID."""
    return (store or HistoryStore()).create_conversation(
        kind="run",
        model=model,
        template=template,
        title=title_of(prompt) or template,
        params=recorded_params(params),
        variables=variables,
        messages=[StoredMessage(0, "user", prompt), _reply_message(output, False, stats, reasoning, tools)],
    )


def recorded_params(params: Any) -> Any:
    """The settings as history shows them: the tools offered by name, and
    no tool settings when none were (most runs)."""
    if not is_dataclass(params) or isinstance(params, type):
        return params
    settings = asdict(params)
    tools = settings.pop("tools", ())
    if tools:
        settings["tools"] = [tool["name"] for tool in tools]
    else:
        settings.pop("tool_choice", None)
        settings.pop("parallel_tool_calls", None)
    return settings


class ConversationRecorder:
    """Saves a chat turn by turn: pass it as `ChatSession(on_turn=recorder)`.

    Each completed (or interrupted) turn is committed before the next one
    starts. A retried reply replaces the last one; a session that was reset
    continues in a new conversation. `conversation_id` (set after the first
    turn, or given to resume one) says where the chat is saved.
    """

    def __init__(
        self,
        *,
        model: str,
        template: str,
        params: Any = None,
        variables: Mapping[str, Any] | None = None,
        conversation_id: int | None = None,
        resumed_turns: int = 0,
        store: HistoryStore | None = None,
    ) -> None:
        self.store = store or HistoryStore()
        self.model, self.template, self.params, self.variables = model, template, recorded_params(params), variables
        self.conversation_id = conversation_id
        self._turns_saved = resumed_turns
        self._last_turn: Turn | None = None

    def __call__(self, session: ChatSession, turn: Turn, stats: GenerationStats) -> None:
        reply = _reply_message(turn.reply, turn.interrupted, stats, turn.reasoning, turn.tools)
        if turn is self._last_turn and self.conversation_id is not None:
            self.store.replace_last_reply(self.conversation_id, reply, system=session.system)
            return
        user = StoredMessage(0, "user", turn.user, prompt=turn.prompt if turn.prompt != turn.user else None)
        if self.conversation_id is None or len(session.turns) <= self._turns_saved:
            # First turn, or the session was reset: a new conversation.
            self.conversation_id = self.store.create_conversation(
                kind="chat",
                model=self.model,
                template=self.template,
                title=title_of(turn.user),
                params=self.params,
                variables=self.variables,
                system=session.system,
                messages=[user, reply],
            )
        else:
            self.store.append_messages(
                self.conversation_id, [user, reply], title=title_of(turn.user), system=session.system
            )
        self._turns_saved = len(session.turns)
        self._last_turn = turn


def _reply_message(
    text: str, interrupted: bool, stats: Any, reasoning: str | None = None, tools: Sequence[ToolStep] = ()
) -> StoredMessage:
    usage = usage_json(stats.usage) if stats is not None else None
    timings = asdict(stats.timings) if stats is not None else None
    finish = getattr(stats, "finish_reason", None)
    return StoredMessage(
        1,
        "assistant",
        text,
        interrupted=interrupted or finish == "interrupted",
        finish_reason=finish,
        usage=usage,
        timings=timings,
        reasoning=reasoning or None,
        tools=steps_json(tools) or None,
    )
