"""Adds up usage and timings over the engine calls of one job (a map-reduce
summary makes many), so --stats and --json describe the whole job, and puts
every call through the repetition guard (repetition.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from chatllm.engine.base import (
    Engine,
    FinishReason,
    GenerationParams,
    GenerationStats,
    Message,
    Stream,
    Timings,
    Usage,
)
from chatllm.engine.reasoning import Reasoning
from chatllm.jobs.grounding import GroundingFilter, grounded
from chatllm.jobs.repetition import RepetitionGuard, guarded, repeats_in

# When calls of one job end differently, the job's finish_reason is the one a
# user most needs to hear about.
_NOTABLE: tuple[FinishReason, ...] = ("stop", "length", "repetition", "interrupted")


class Meter:
    def __init__(
        self,
        engine: Engine,
        repetition: str = "strict",
        on_reasoning: Callable[[str], None] | None = None,
        on_draft: Callable[[str], None] | None = None,
    ) -> None:
        """`repetition` is the guard's mode for every call: "strict", "loops" or
        "off" (see RepetitionGuard). A reasoning model's thinking never joins the
        reply: it is kept in `reasoning` (per call: `last_reasoning`) and passed
        to `on_reasoning` as it comes, for the renderer to show or hide.
        `on_draft` receives, after every token of a visible call, the text the
        repetition guard and the grounding filter hold back (a suspect span, a
        sentence whose numbers are not checked yet), for a live view that can
        show it at once and take it back (Sink.draft)."""
        self.engine = engine
        self.on_reasoning = on_reasoning
        self.on_draft = on_draft
        self.reasoning = ""
        self.last_reasoning = ""
        self.unclosed_thinking = False
        self.repetition = repetition
        self.started = time.perf_counter()
        self.usage = Usage()
        self.first_piece_at: float | None = None
        self.finish_reason: FinishReason = "stop"
        # How many calls ended for each reason, for notes such as "2 parts were cut".
        self.finish_counts: dict[str, int] = {}
        # The max_tokens of the latest call cut by it, for the note that says so.
        self.length_limit: int | None = None
        # Sentences left out because they stated numbers not in the facts.
        self.ungrounded_sentences = 0
        # A reply thrown away and written again, and why (see forget_reply).
        self.retried = False
        self.retried_because = ""
        # What a job has to tell the user beside the finish (see add_note).
        self.notes: list[str] = []
        self._last_reason: FinishReason = "stop"
        self._last_dropped = 0
        self.calls = 0
        self._prefill_seconds = 0.0
        self._prefill_tokens = 0
        self._decode_seconds = 0.0
        self._decode_tokens = 0
        # Text a job holds back until it has judged it (see hold): a live view
        # shows it as a draft meanwhile.
        self.held = ""

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        *,
        visible: bool = True,
        source: str = "",
        facts: str | None = None,
        fallback: str = "",
        repetition: str | None = None,
        guard: RepetitionGuard | None = None,
        drop_fragment_of_repeat: bool = False,
        drop_cut_fragment: bool = False,
    ) -> Stream:
        """The engine's stream, guarded and recorded. `visible=False` marks
        intermediate calls (map steps) whose output the user does not see, for
        time to first token. `source` is the text the reply renders (e.g. the
        text being translated): what it repeats, the reply may repeat too.
        `facts`, when given, is the text whose numbers the reply may state:
        sentences stating others are left out (grounding.py), and `fallback` is
        said instead when that leaves nothing. `repetition` overrides the
        guard's mode for this call (structured output is constrained by its
        schema, and a guard cutting it would break the JSON); `guard` is one
        shared by the calls of one reply (see RepetitionGuard.next_part).
        `drop_fragment_of_repeat=True` leaves out a reply that is one unfinished
        sentence because the guard stopped a repeat in it (see
        grounding.grounded); one cut by a length limit stays, as asked, unless
        `drop_cut_fragment=True` (a caller that says the reply was too short)."""
        self.last_reasoning = ""
        pieces = self._answer_only(self._timed(self.engine.stream(messages, params), visible))
        mode = repetition or self.repetition
        if guard is None and mode != "off":
            guard = RepetitionGuard(mode=mode, allowed=repeats_in(source) if source else 1)
        check = GroundingFilter(facts) if facts is not None else None
        on_draft = self.on_draft if visible and (guard is not None or check is not None) else None
        if on_draft is not None:
            pieces = with_drafts(pieces, guard, check, on_draft, lambda: self.held)
        output = guarded(pieces, guard) if guard is not None else pieces
        if check is not None:
            output = grounded(
                output,
                check,
                fallback,
                lambda: self._ended_by_itself(guard),
                lambda: drop_cut_fragment or drop_fragment_of_repeat and _stopped_a_repeat(guard),
            )
        try:
            yield from output
        finally:
            output.close()
            pieces.close()
            if on_draft is not None:
                on_draft(self.held)
            stats = self.engine.last_stats
            if _stopped_a_repeat(guard):
                stats.finish_reason = "repetition"
            if stats.finish_reason == "length":
                self.length_limit = params.max_tokens
            self._last_dropped = check.dropped if check is not None else 0
            self.ungrounded_sentences += self._last_dropped
            self._add(stats)

    def hold(self, pieces: Stream) -> str:
        """The whole of `pieces`, held rather than streamed: a job that judges
        a reply before showing it (a summary, a translated paragraph). A live
        view shows the held text as a draft until the job yields it or drops it."""
        self.held = ""
        try:
            for piece in pieces:
                self.held += piece
            return self.held
        finally:
            pieces.close()
            self.held = ""

    @property
    def last_finish_reason(self) -> FinishReason:
        """How the last call ended."""
        return self._last_reason

    def _ended_by_itself(self, guard: RepetitionGuard | None) -> bool:
        """Whether the reply just streamed ended where the model ended it."""
        return not _stopped_a_repeat(guard) and self.engine.last_stats.finish_reason == "stop"

    def _answer_only(self, pieces: Stream) -> Stream:
        """The answer's pieces; thinking goes to `reasoning` and `on_reasoning`.
        A reply that never closed its thinking and said nothing else is not
        lost: its thinking is the reply, and a note says why."""
        answered = False
        try:
            for piece in pieces:
                if isinstance(piece, Reasoning):
                    self.last_reasoning += piece
                    self.reasoning += piece
                    if self.on_reasoning is not None:
                        self.on_reasoning(piece)
                    continue
                answered = answered or bool(piece.strip())
                yield piece
            if not answered and self.last_reasoning.strip() and self.engine.last_stats.thinking_unclosed:
                self.unclosed_thinking = True
                yield self.last_reasoning.strip()
        finally:
            pieces.close()

    def _timed(self, pieces: Stream, visible: bool) -> Stream:
        """`pieces`, noting when the first one came. Time to first token is the
        model's: the guard and the grounding filter may show it a little later
        (a sentence is shown once its numbers are checked)."""
        try:
            for piece in pieces:
                if visible and self.first_piece_at is None and piece:
                    self.first_piece_at = time.perf_counter()
                yield piece
        finally:
            pieces.close()

    def complete(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        source: str = "",
        facts: str | None = None,
        repetition: str | None = None,
    ) -> str:
        return "".join(self.stream(messages, params, visible=False, source=source, facts=facts, repetition=repetition))

    @property
    def can_score(self) -> bool:
        """Whether the engine can tell how likely a continuation is (`score`)."""
        return self.engine.supports_scoring

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]:
        """The engine's log-probabilities of `continuations` as the reply (only
        engines that have `score`), recorded like a call."""
        scores = self.engine.score(messages, continuations)
        self._add(self.engine.last_stats)
        return scores

    def _add(self, stats: GenerationStats) -> None:
        self.calls += 1
        self.usage.prompt_tokens += stats.usage.prompt_tokens
        self.usage.completion_tokens += stats.usage.completion_tokens
        self.usage.cached_prompt_tokens += stats.usage.cached_prompt_tokens
        self.usage.reasoning_tokens += stats.usage.reasoning_tokens
        reason = self._last_reason = stats.finish_reason
        self.finish_counts[reason] = self.finish_counts.get(reason, 0) + 1
        if _NOTABLE.index(reason) >= _NOTABLE.index(self.finish_reason):
            self.finish_reason = reason
        timings = stats.timings
        evaluated = stats.usage.prompt_tokens - stats.usage.cached_prompt_tokens
        if timings.prefill_tokens_per_s > 0:
            self._prefill_tokens += evaluated
            self._prefill_seconds += evaluated / timings.prefill_tokens_per_s
        decoded = max(stats.usage.completion_tokens - 1, 0)
        if timings.decode_tokens_per_s > 0:
            self._decode_tokens += decoded
            self._decode_seconds += decoded / timings.decode_tokens_per_s

    def add_note(self, note: str) -> None:
        """A sentence for the user's finish note (on stderr)."""
        self.notes.append(note)

    def forget_reply(self, why: str = "all repeats or invented numbers") -> None:
        """The last call's reply is thrown away and written again (it was
        `why`, said in the finish note; "" says nothing): its tokens and time
        still count, but its finish reason and notes no longer describe what
        the user gets."""
        self.retried_because = self.retried_because or why
        self.calls -= 1
        self.finish_counts[self._last_reason] -= 1
        self.ungrounded_sentences -= self._last_dropped
        reasons = [reason for reason in _NOTABLE if self.finish_counts.get(reason)]
        self.finish_reason = reasons[-1] if reasons else "stop"
        self.retried = True

    def finish_note(self) -> str | None:
        """A sentence for the user when a call did not end by itself: the guard
        stopped a repeat, or a length limit cut the reply. None otherwise."""
        parts = lambda reason: "" if self.calls == 1 else f" ({self.finish_counts[reason]} of {self.calls} parts)"  # noqa: E731
        notes = []
        if self.retried_because:
            notes.append(f"The first reply was {self.retried_because}, so it was written again.")
        if self.finish_counts.get("repetition"):
            notes.append(f"Stopped: the model began repeating itself{parts('repetition')}; the repeat is not shown.")
        elif self.finish_counts.get("length"):
            limit = f" of {self.length_limit} tokens" if self.length_limit else ""
            notes.append(f"Cut at the length limit{limit}{parts('length')}; --max-tokens N allows more.")
        if self.unclosed_thinking:
            notes.append("The model never finished thinking; its thinking is shown as the reply.")
        if self.ungrounded_sentences:
            count = self.ungrounded_sentences
            notes.append(
                f"Left out {count} sentence{'s' if count > 1 else ''} stating numbers that are not in the source."
            )
        return " ".join(notes + self.notes) or None

    def stats(self) -> GenerationStats:
        now = time.perf_counter()
        # An engine may finish loading after the job began (a local model's context
        # is made while the job prepares its prompt): that wait is load, not the
        # job's time, which counts from when both were ready.
        begun = max(self.started, self.engine.ready_at or self.started)
        timings = Timings(
            load_s=round(self.engine.load_s, 3),
            ttft_s=round((self.first_piece_at or now) - begun, 3),
            prefill_tokens_per_s=round(self._prefill_tokens / self._prefill_seconds, 1)
            if self._prefill_seconds
            else 0.0,
            decode_tokens_per_s=round(self._decode_tokens / self._decode_seconds, 1) if self._decode_seconds else 0.0,
            total_s=round(now - begun, 3),
        )
        return GenerationStats(usage=Usage(**vars(self.usage)), timings=timings, finish_reason=self.finish_reason)


def with_drafts(
    pieces: Stream,
    guard: RepetitionGuard | None,
    check: GroundingFilter | None,
    on_draft: Callable[[str], None],
    held: Callable[[], str] = lambda: "",
) -> Stream:
    """`pieces`, telling `on_draft` what the job (`held`), the grounding filter
    and the guard hold back each time the next piece is asked for: by then the
    last one has gone all the way through them and out to the display."""
    try:
        for piece in pieces:
            yield piece
            on_draft(
                held() + (check.pending if check is not None else "") + (guard.pending if guard is not None else "")
            )
    finally:
        pieces.close()


def _stopped_a_repeat(guard: RepetitionGuard | None) -> bool:
    return guard is not None and guard.tripped is not None
