"""The reply pipeline: the one place where a reply's stages are put together.

Every reply chatllm makes, on the command line, in the chat session and in
`serve`, goes through here:

    engine stream ─► reasoning split ─► repetition guard ─► grounding
        ─► a persona's checks ─► drafts for a live view ─► finish and usage

and comes out as events (events.py). The reasoning split is the engine's: it
yields the answer as `str` and the thinking as `Reasoning` events, which go
around the stages (thinking is never guarded, grounded or shown as the
answer). The stages (stages.py) are fed each piece as it comes, in order; what
they hold back is sent as a `Draft` to a live view, once per change. A new
stage is a class in stages.py and a line in `_stages` or `persona_stages`.

`call` is one engine call of a job; a job (jobs/) makes one or many and
yields their events; `finished` ends a job's events with its notes and its
`Finish`; `reply` is the whole of a reply to a conversation (the chat
session's turn, `serve`'s completion), a persona's included; `answer` is a
job's reply that may call tools. A model's tool calls come out of the engine
as `ToolCall` events; they go around the stages and follow the call's text.
Given a `ToolRunner`, a reply runs them and goes on (tool_loop.py); without
one (`serve`: its client runs them) they end the reply.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chatllm.engine.base import EngineStream, GenerationParams, GenerationStats, Message
from chatllm.errors import ChatLLMError
from chatllm.jobs.grounding import GroundingFilter
from chatllm.jobs.persona_reply import PersonaTurn
from chatllm.jobs.repetition import RepetitionGuard, repeats_in
from chatllm.reply.events import Draft, Event, Finish, Notice, Reasoning, Text, ToolCall, text_of
from chatllm.reply.meter import Meter
from chatllm.reply.stages import (
    Ending,
    Grounding,
    KnowledgeDrawn,
    NoOrderStatus,
    NothingInternal,
    OffersHandover,
    Repetition,
    Stage,
    finish_all,
)
from chatllm.reply.tool_loop import (
    ToolRunner,
    offers_tools,
    prompt_messages,
    results_since_question,
    tool_loop,
    tool_results,
)

if TYPE_CHECKING:
    from chatllm.jobs.chat import Persona

Events = Generator[Event, None, None]


@dataclass(frozen=True)
class Checks:
    """What one call's reply is checked against, beyond the job's repetition mode.

    `source`: the text the reply renders (the text being translated): what it
    repeats, the reply may repeat too. `facts`: the text whose numbers the
    reply may state (grounding), with `fallback` said instead when that leaves
    nothing. `repetition`: the guard's mode for this call ("off" for a reply
    under a schema, which a cut would break); `guard`: one shared by the calls
    of one reply (RepetitionGuard.next_part). `drop_fragment_of_repeat`: a
    reply that is one unfinished sentence because the guard stopped a repeat in
    it is left out; `drop_cut_fragment`: so is one cut by a length limit (a
    caller that says the reply was too short)."""

    source: str = ""
    facts: str | None = None
    fallback: str = ""
    repetition: str | None = None
    guard: RepetitionGuard | None = None
    drop_fragment_of_repeat: bool = False
    drop_cut_fragment: bool = False


NO_CHECKS = Checks()


def call(
    meter: Meter,
    messages: Sequence[Message],
    params: GenerationParams,
    checks: Checks = NO_CHECKS,
    *,
    visible: bool = True,
    after: Sequence[Stage] = (),
) -> Events:
    """One engine call through the stages, recorded in `meter`. `visible=False`
    marks a call whose text the user does not see (a map step): it counts for
    usage but not for time to first token, and sends no drafts. `after`: the
    stages a persona adds after the generic ones."""
    meter.last_reasoning = ""
    stages = _stages(meter, checks) + list(after)
    pieces = meter.engine.stream(messages, params)
    run = _Call(meter, stages, visible)
    try:
        yield from run.events(pieces)
    finally:
        pieces.close()
        meter.record(run.stats(), params, run.dropped)


def _stages(meter: Meter, checks: Checks) -> list[Stage]:
    """The generic stages, in the order a reply's text goes through them."""
    stages: list[Stage] = []
    mode = checks.repetition or meter.repetition
    guard = checks.guard
    if guard is None and mode != "off":
        guard = RepetitionGuard(mode=mode, allowed=repeats_in(checks.source) if checks.source else 1)
    if guard is not None:
        stages.append(Repetition(guard))
    if checks.facts is not None:
        check = GroundingFilter(checks.facts)
        stages.append(Grounding(check, checks.fallback, checks.drop_cut_fragment, checks.drop_fragment_of_repeat))
    return stages


class _Call:
    """The state of one call while it streams."""

    def __init__(self, meter: Meter, stages: list[Stage], visible: bool) -> None:
        self.meter, self.stages, self.visible = meter, stages, visible
        self.guard = next((stage for stage in stages if isinstance(stage, Repetition)), None)
        self.grounding = next((stage for stage in stages if isinstance(stage, Grounding)), None)
        # Drafts only where something is held back piece by piece; a stage that
        # holds the whole reply until judged would show its later words first.
        self.drafting = meter.drafts and visible and bool(stages) and not any(s.holds_reply for s in stages)
        self.outermost_first = stages[::-1]
        self.dropped = 0
        self.calls: list[ToolCall] = []

    def events(self, pieces: EngineStream) -> Events:
        # Per piece: the stages' own work, one Text, one Draft when what they
        # hold changed; everything else is looked up once, here.
        meter, guard, feeds, held = self.meter, self.guard, [stage.feed for stage in self.stages], self.held
        repeats = guard.guard if guard is not None else None
        timing, drafting, draft = self.visible, self.drafting, ""
        answered = False
        calls = self.calls
        try:
            for piece in pieces:
                if timing and piece:
                    meter.first_piece()
                    timing = False
                if type(piece) is not str:  # thinking, or a tool call: around the stages
                    if type(piece) is ToolCall:
                        calls.append(piece)  # sent after the text that came before it
                    else:
                        assert isinstance(piece, Reasoning)
                        meter.thought(piece.text)
                        yield piece
                    continue
                answered = answered or bool(piece.strip())
                text = piece
                for feed in feeds:
                    text = feed(text)
                    if not text:
                        break
                else:
                    if text:
                        yield Text(text)
                        draft = ""
                if repeats is not None and repeats.tripped is not None:
                    break
                if drafting and (holding := held()) != draft:
                    draft = holding
                    yield Draft(holding)
            else:
                yield from self._unclosed_thinking(answered)
        except KeyboardInterrupt:
            # What the guard held is reply text the user would have seen next.
            text = self.feed(guard.interrupted(), start=1) if guard is not None else ""
            if text:
                yield Text(text)
            raise
        pieces.close()  # a stopped repeat stops the model now, not once the rest is shown
        for text in finish_all(self.stages, self.ending):
            if text:
                yield Text(text)
                draft = ""
        if draft:
            yield Draft("")
        yield from calls
        self.dropped = self.grounding.check.dropped if self.grounding is not None else 0

    def feed(self, text: str, start: int = 0) -> str:
        """`text` through the stages from the `start`-th on: what comes out now."""
        for stage in self.stages[start:]:
            text = stage.feed(text)
            if not text:
                break
        return text

    def held(self) -> str:
        """What the stages hold back, in the reply's order (the last stage's first)."""
        return "".join([stage.pending for stage in self.outermost_first])

    def _unclosed_thinking(self, answered: bool) -> Events:
        """A reply that never closed its thinking and said nothing else is not
        lost: its thinking is the reply, and a note says why."""
        meter = self.meter
        if not answered and meter.last_reasoning.strip() and meter.engine.last_stats.thinking_unclosed:
            meter.unclosed_thinking = True
            text = self.feed(meter.last_reasoning.strip())
            if text:
                yield Text(text)

    def stopped_a_repeat(self) -> bool:
        return self.guard is not None and self.guard.stops

    def ending(self) -> Ending:
        stopped = self.stopped_a_repeat()
        by_itself = not stopped and self.meter.engine.last_stats.finish_reason in ("stop", "tool_calls")
        return Ending(by_itself, stopped, called_tools=bool(self.calls))

    def stats(self) -> GenerationStats:
        """The engine's stats of the call, with the guard's finish."""
        stats = self.meter.engine.last_stats
        if self.stopped_a_repeat():
            stats.finish_reason = "repetition"
        return stats


def persona_stages(turn: PersonaTurn, looked_up: bool = False) -> list[Stage]:
    """The stages a persona's reply goes through after the generic ones
    (jobs/persona_reply.py says why each is there). Once a tool has answered
    (`looked_up`), the reply may draw on its result instead of the knowledge,
    and state the order status it returned."""
    stages: list[Stage] = []
    if turn.use is not None and not looked_up:
        stages.append(KnowledgeDrawn(turn.use, turn.texts.fallback))
    if turn.texts.no_order_lookup and not looked_up:
        stages.append(NoOrderStatus(turn.texts.no_order_lookup))
    if turn.persona.facts is not None:
        stages.append(NothingInternal(turn.persona.internal_names))
    stages.append(OffersHandover(turn.texts.handover))
    return stages


def persona_reply(
    meter: Meter,
    turn: PersonaTurn,
    messages: Sequence[Message],
    params: GenerationParams,
    tools: ToolRunner | None = None,
) -> Events:
    """A persona's reply to `messages` (whose last user message is `turn`'s):
    decided without the model where it must be (an order it cannot see, a
    question its knowledge does not cover), else the model's, checked; with
    `tools`, as many calls as its tool calls need."""
    try:
        # A tool may look an order up: offered now, or its result already in (serve's second request).
        looked_up = bool(results_since_question(messages))
        can_look_up = offers_tools(params) or looked_up
        forced = offers_tools(params) and params.tool_choice != "auto"
        instead = turn.reply_instead(can_look_up) or (None if forced else turn.judge(messages, meter, meter.can_score))
        if instead is not None:
            yield Text(instead)
            return
        lookup = turn.looks_up and turn.persona.looks_up_first and turn.names_an_order()
        if lookup and offers_tools(params) and params.tool_choice == "auto" and not looked_up:
            # An order named, a tool to look it up and no result yet: the reply
            # starts with a call. Left to choose, the 1.5B answered with a status
            # it made up. (With the result in, serve's second request, the 1.5B
            # made to call again looked the same order up a second time.)
            params = replace(params, tool_choice="required")

        def one_call(conversation: list[Message], params: GenerationParams) -> Events:
            looked_up = bool(results_since_question(conversation))
            checks = _persona_checks(turn, conversation)
            return call(meter, conversation, params, checks, after=persona_stages(turn, looked_up))

        messages = prompt_messages(messages, params)
        yield from one_call(messages, params) if tools is None else tool_loop(meter, tools, messages, params, one_call)
    finally:
        for note in turn.finish_notes():
            meter.add_note(note)


def _persona_checks(turn: PersonaTurn, conversation: Sequence[Message]) -> Checks:
    """A reply may state the numbers of the knowledge, of the conversation and
    of what its tools returned."""
    if turn.persona.facts is None:
        return NO_CHECKS
    said = [m.content for m in conversation if m.role == "user"]
    facts = "\n".join([turn.persona.facts, *said, *tool_results(conversation)])
    return Checks(facts=facts, fallback=turn.texts.fallback)


def finished(meter: Meter, events: Events) -> Events:
    """A job's events, then its note (when it has one) and its `Finish`. A job
    that fails still says what its note says, before its error."""
    try:
        yield from events
    except ChatLLMError:
        note = meter.finish_note()
        if note:
            yield Notice(note)
        raise
    meter.done()
    note = meter.finish_note()
    if note:
        yield Notice(note)
    stats = meter.stats()
    yield Finish(stats.finish_reason, stats)


@dataclass(frozen=True)
class ReplyRequest:
    """One reply to a conversation: the chat session's turn, `serve`'s completion."""

    messages: Sequence[Message]
    params: GenerationParams
    # A persona's reply goes through its stages too; `question` is the
    # customer's last message as they wrote it (not as the prompt renders it).
    persona: Persona | None = None
    question: str = ""
    # Runs the tools `params` offers (the CLI's declared tools); None: a
    # tool call ends the reply (`serve`, whose client runs its tools).
    tools: ToolRunner | None = None


def reply(meter: Meter, request: ReplyRequest) -> Events:
    """The events of one reply to `request`, ending with its `Finish`;
    `meter` adds up what it cost (also when it is cut short)."""
    if request.persona is None:
        return finished(meter, answer(meter, request.messages, request.params, tools=request.tools))
    turn = PersonaTurn(request.persona, request.question)
    return finished(meter, persona_reply(meter, turn, request.messages, request.params, request.tools))


def answer(
    meter: Meter,
    messages: Sequence[Message],
    params: GenerationParams,
    checks: Checks = NO_CHECKS,
    tools: ToolRunner | None = None,
) -> Events:
    """A reply to `messages`: one call, or with `tools` as many as its tool
    calls need (each checked against `checks`)."""
    messages = prompt_messages(messages, params)
    if tools is None:
        return call(meter, messages, params, checks)
    return tool_loop(
        meter, tools, messages, params, lambda conversation, params: call(meter, conversation, params, checks)
    )


def complete(meter: Meter, messages: Sequence[Message], params: GenerationParams, checks: Checks = NO_CHECKS) -> str:
    """The whole text of a call the user does not see as it streams."""
    return text_of(call(meter, messages, params, checks, visible=False))


def collect(events: Events) -> Generator[Event, None, str]:
    """The text of `events`, kept back; thinking and notices pass on (a map
    step of a summary: the user sees the model think, not its part summary)."""
    text = []
    try:
        for event in events:
            if type(event) is Text:
                text.append(event.text)
            elif type(event) is not Draft:
                yield event
    finally:
        events.close()
    return "".join(text)


def hold(meter: Meter, events: Events) -> Generator[Event, None, str]:
    """The text of `events`, held rather than sent, for a job that judges a
    reply before showing it (a summary, a translated paragraph): a live view
    shows it as a draft until the job sends it or drops it."""
    held = ""
    drafts = meter.drafts
    try:
        for event in events:
            if isinstance(event, Text):
                held += event.text
                if drafts:
                    yield Draft(held)
            elif isinstance(event, Draft):
                if drafts:
                    yield Draft(held + event.text)
            else:
                yield event
    finally:
        events.close()
    return held
