"""A conversation with a model: turns, context-window trimming, retry, reset.

The prompt of every turn is the persona's system prompt (never dropped), then as
many of the latest turns as fit beside room for the reply. When older turns no
longer fit they are dropped from the prompt (they stay in the transcript) and a
notice says so. Each turn's prompt extends the previous one, so the engine's KV
cache is reused and only the new tokens are evaluated.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.engine.base import Engine, GenerationParams, GenerationStats, Message
from chatllm.errors import EngineError, InputError
from chatllm.jobs.coverage import CoverageJudge
from chatllm.jobs.model_fit import ModelFit
from chatllm.jobs.persona_reply import PersonaTexts
from chatllm.jobs.prompting import reply_reserve
from chatllm.languages import detect_language
from chatllm.reply.events import Finish, Notice, Reasoning, Text, ToolCall, ToolResult
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Events, ReplyRequest, reply
from chatllm.reply.tool_loop import ToolRunner, ToolStep, ToolSteps, replayed, steps_json, transcript_lines

INTERRUPTED_MARK = " [interrupted]"


@dataclass
class Turn:
    user: str  # what the user typed
    prompt: str  # the user message as sent to the model (with retrieved knowledge)
    reply: str = ""
    interrupted: bool = False
    reasoning: str = ""  # a reasoning model's thinking: never sent back to it, never in the reply
    # The tools the reply called on its way (reply/tool_loop.py): replayed to
    # the model in later prompts; `reply` is all its text, theirs included.
    tools: list[ToolStep] = field(default_factory=list)

    def final_text(self) -> str:
        """What the reply said after its last tool call."""
        said = "".join(step.text for step in self.tools)
        return self.reply[len(said) :] if self.reply.startswith(said) else self.reply


@dataclass
class Persona:
    """What a conversation is set up with; see jobs/persona.py for building one
    from a template."""

    name: str
    system: str
    greeting: str = ""
    # Knowledge kept in the system prompt; /system and -s replace only the
    # instructions before it, never the knowledge.
    knowledge: str = ""
    # Turns the user's text into the user message (e.g. adds retrieved passages).
    render_user: Callable[[str], str] = field(default=lambda text: text)
    # All the knowledge the persona answers from: when set, a reply may state
    # only numbers found in it or in the conversation (jobs/grounding.py).
    facts: str | None = None
    # Said instead when nothing of a reply could be kept.
    fallback: str = ""
    # Added to a reply that declines without offering it (jobs/handover.py).
    handover: str = ""
    # The knowledge is too long to give whole: each message carries passages found for it.
    retrieves: bool = False
    # A reply to a question that draws on nothing in `facts` is replaced by the
    # fallback (jobs/knowledge_use.py).
    checks_answers: bool = False
    # The fixed texts above (and the reply to a question about one particular
    # order, jobs/orders.py) as said to the customer who wrote a message, in
    # their language; None: `fallback` and `handover` as they are.
    texts_for: Callable[[str], PersonaTexts] | None = None
    # Asks the model whether its knowledge answers a question before it answers
    # (jobs/coverage.py); None where the model cannot judge.
    coverage: CoverageJudge | None = None
    # Names a reply must not show the customer: the knowledge files' names.
    internal_names: tuple[str, ...] = ()
    # A question naming an order starts its reply with a lookup tool's call,
    # where one is offered (reply/pipeline.py, persona_reply).
    looks_up_first: bool = True


def with_knowledge(system: str, knowledge: str) -> str:
    if not knowledge:
        return system
    return f"{system}\n\nKNOWLEDGE:\n{knowledge}".strip()


class ChatSession:
    """A conversation. `send` and `retry` yield the reply's events
    (reply/events.py): notices (a dropped turn, a model too small for the
    language), thinking, text, drafts for a live view when `drafts`, and its
    `Finish`. `on_turn` is told of every turn that was answered, with what it
    cost (history). `tools` runs the tool calls the params offer."""

    def __init__(
        self,
        engine: Engine,
        persona: Persona,
        params: GenerationParams,
        on_turn: Callable[[ChatSession, Turn, GenerationStats], None] | None = None,
        repetition: str = "loops",
        fit: ModelFit | None = None,
        drafts: bool = False,
        tools: ToolRunner | None = None,
    ) -> None:
        self.engine = engine
        self.repetition = repetition
        # Says when a message needs a bigger model.
        self.fit = fit
        self.persona = persona
        self.system = persona.system
        self.params = params
        self.turns: list[Turn] = []
        self.first_in_context = 0  # turns before this index were dropped from the prompt
        self.on_turn = on_turn
        self.drafts = drafts
        self.tools = tools

    # ------------------------------------------------------------ commands

    def send(self, text: str) -> Events:
        """The reply to `text`. Closing the iterator early keeps what was
        generated, marked as interrupted."""
        if not text.strip():
            raise InputError("empty message")
        hint = None
        if self.fit is not None:
            language = detect_language(text)
            hint = self.fit.for_language(language.tag if language else None, language.name if language else "")
        turn = Turn(user=text, prompt=self.persona.render_user(text))
        return self._reply(turn, new=True, hint=hint)

    def retry(self) -> Events:
        """Generate the last reply again."""
        if not self.turns:
            raise InputError("nothing to retry yet")
        turn = self.turns[-1]
        turn.reply, turn.interrupted, turn.tools = "", False, []
        return self._reply(turn)

    def reset(self) -> None:
        self.turns.clear()
        self.first_in_context = 0

    def set_system(self, text: str) -> None:
        self.system = with_knowledge(text, self.persona.knowledge)

    def restore(self, turns: list[Turn]) -> None:
        """Continue an earlier conversation (e.g. loaded from history)."""
        self.turns = list(turns)
        self.first_in_context = 0

    # ------------------------------------------------------------ prompt

    def messages(self, turns: list[Turn] | None = None) -> list[Message]:
        messages = [Message("system", self.system)] if self.system else []
        for turn in self.turns[self.first_in_context :] if turns is None else turns:
            messages.append(Message("user", turn.prompt))
            messages += replayed(turn.tools)
            final = turn.final_text().strip() if turn.tools else turn.reply
            if final:
                messages.append(Message("assistant", final))
        return messages

    def _fit_to_context(self) -> tuple[list[Message], str | None]:
        """The prompt, without the oldest turns that no longer fit, and a
        notice saying so when any were dropped."""
        limit = self.engine.context_size - reply_reserve(self.params, self.engine.context_size)
        dropped = 0
        while True:
            messages = self.messages()
            if self.engine.count_prompt_tokens(messages) <= limit:
                break
            if self.first_in_context >= len(self.turns) - 1:
                raise EngineError(
                    f"this message does not fit in the {self.engine.context_size}-token context "
                    "beside the system prompt; shorten it or use a larger --ctx"
                )
            self.first_in_context += 1
            dropped += 1
        if not dropped:
            return messages, None
        return messages, (
            f"The conversation outgrew the {self.engine.context_size}-token context: "
            f"dropped the oldest {dropped} turn{'s' if dropped > 1 else ''} (the system prompt is kept)."
        )

    def _reply(self, turn: Turn, new: bool = False, hint: str | None = None) -> Events:
        if hint:
            yield Notice(hint)
        if new:  # added only once the reply starts: a stream closed unstarted leaves no turn
            self.turns.append(turn)
        try:
            messages, dropped = self._fit_to_context()
        except EngineError:
            self.turns.remove(turn)
            raise
        if dropped:
            yield Notice(dropped)
        turn.reasoning = ""
        meter = Meter(self.engine, self.repetition, self.drafts)
        events = reply(meter, ReplyRequest(messages, self.params, self.persona, turn.user, self.tools))
        finish: Finish | None = None
        steps = ToolSteps()
        turn.tools = steps.steps
        try:
            for event in events:
                if type(event) is Text:
                    turn.reply += event.text
                elif type(event) is Reasoning:
                    turn.reasoning += event.text
                elif type(event) is ToolCall:
                    steps.called(event, turn.reply)
                elif type(event) is ToolResult:
                    steps.returned(event)
                elif type(event) is Finish:
                    finish = event
                yield event
        finally:
            events.close()  # Ctrl-C, or the caller closed us: keep what we have
            turn.interrupted = finish is None or finish.reason == "interrupted"
            if turn.interrupted and not turn.reply:
                # Nothing was said: keeping the turn would put two user messages
                # in a row, which many chat templates reject.
                self.turns.remove(turn)
            elif self.on_turn is not None:
                self.on_turn(self, turn, finish.stats if finish is not None else meter.stats())

    # ------------------------------------------------------------ saving

    def to_markdown(self) -> str:
        lines = [f"# Conversation with {self.persona.name}", ""]
        if self.system:
            lines += ["## System", "", self.system, ""]
        for turn in self.turns:
            lines += ["## User", "", turn.user, "", "## Assistant", ""]
            lines += [f"_{line.strip()}_  " for line in transcript_lines(turn.tools)]
            lines += [turn.reply + (INTERRUPTED_MARK if turn.interrupted else ""), ""]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "persona": self.persona.name,
                "system": self.system,
                "turns": [{**vars(turn), "tools": steps_json(turn.tools)} for turn in self.turns],
            },
            ensure_ascii=False,
            indent=2,
        )

    def save(self, path: Path) -> None:
        """Write the transcript (Markdown, or JSON for a .json file) atomically."""
        text = self.to_json() if path.suffix.lower() == ".json" else self.to_markdown()
        path = path.expanduser()
        if path.is_dir():
            raise InputError(f"'{path}' is a directory; give a file name")
        try:
            handle, temporary = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, path)
        except OSError as error:
            raise InputError(f"cannot save to '{path}': {error.strerror}") from None
