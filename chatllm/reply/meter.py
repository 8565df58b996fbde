"""Usage, timings and finish reasons added up over the engine calls of one
job (a map-reduce summary makes many), so --stats, --json and `serve` describe
the whole job; and what the job has to tell the user about how it went."""

from __future__ import annotations

import time
from collections.abc import Sequence

from chatllm.engine.base import (
    Engine,
    FinishReason,
    GenerationParams,
    GenerationStats,
    Message,
    Timings,
    Usage,
)

# When calls of one job end differently, the job's finish_reason is the one a
# user most needs to hear about.
# A call that asked for tools is the least: the reply goes on after it (a
# client that runs its tools, `serve`'s, is told by the reply's calls).
_NOTABLE: tuple[FinishReason, ...] = ("tool_calls", "stop", "length", "repetition", "interrupted")


class Meter:
    def __init__(self, engine: Engine, repetition: str = "strict", drafts: bool = False) -> None:
        """`repetition` is the repetition guard's mode for every call of the
        job: "strict", "loops" or "off" (see RepetitionGuard). `drafts`: the
        reply is shown on a live view, which is sent what the stages hold back
        (reply/events.py, Draft). A reasoning model's thinking never joins the
        reply: it is kept in `reasoning` (per call: `last_reasoning`)."""
        self.engine = engine
        self.repetition = repetition
        self.drafts = drafts
        self.reasoning = ""
        self.last_reasoning = ""
        self.unclosed_thinking = False
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
        # Tools run for the job's replies, and the seconds they took.
        self.tool_calls = 0
        self.tool_seconds = 0.0
        # When the job was done (see `done`); until then its time runs on.
        self.done_at: float | None = None

    def done(self) -> None:
        """The job has ended: its figures no longer change with the clock (what
        --json and --stats print of one job are the same)."""
        self.done_at = time.perf_counter()

    def record(self, stats: GenerationStats, params: GenerationParams, dropped: int = 0) -> None:
        """One call has ended: its `stats`, made with `params`, with `dropped`
        sentences left out by grounding."""
        if stats.finish_reason == "length":
            self.length_limit = params.max_tokens
        self._last_dropped = dropped
        self.ungrounded_sentences += dropped
        self._add(stats)

    def tool_ran(self, seconds: float) -> None:
        """A tool call of the job was run (or refused) in `seconds`."""
        self.tool_calls += 1
        self.tool_seconds += seconds

    def thought(self, text: str) -> None:
        """A piece of the current call's thinking."""
        self.last_reasoning += text
        self.reasoning += text

    def first_piece(self) -> None:
        """The model's first piece of a visible call came now (time to first
        token is the model's: the stages may show it a little later)."""
        if self.first_piece_at is None:
            self.first_piece_at = time.perf_counter()

    @property
    def last_finish_reason(self) -> FinishReason:
        """How the last call ended."""
        return self._last_reason

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

    def alongside(self) -> Meter:
        """A Meter for one item run beside others (jobs/concurrent_items.py):
        a Meter follows one call at a time; `include` adds it to this one."""
        return Meter(self.engine, repetition=self.repetition, drafts=False)

    def include(self, other: Meter) -> None:
        """Add the calls `other` measured (an item run beside others), as if
        they had been made here, after the ones made so far."""
        self.calls += other.calls
        for name, count in vars(other.usage).items():
            setattr(self.usage, name, getattr(self.usage, name) + count)
        for reason, count in other.finish_counts.items():
            self.finish_counts[reason] = self.finish_counts.get(reason, 0) + count
        if _NOTABLE.index(other.finish_reason) >= _NOTABLE.index(self.finish_reason):
            self.finish_reason = other.finish_reason
        if other.calls:
            self._last_reason, self._last_dropped = other._last_reason, other._last_dropped
        self.length_limit = other.length_limit or self.length_limit
        self.ungrounded_sentences += other.ungrounded_sentences
        self.retried = self.retried or other.retried
        self.retried_because = self.retried_because or other.retried_because
        self.notes += other.notes
        self.reasoning += other.reasoning
        self.last_reasoning = other.last_reasoning
        self.unclosed_thinking = self.unclosed_thinking or other.unclosed_thinking
        if other.first_piece_at is not None:
            self.first_piece_at = min(self.first_piece_at or other.first_piece_at, other.first_piece_at)
        self._prefill_tokens += other._prefill_tokens
        self._prefill_seconds += other._prefill_seconds
        self._decode_tokens += other._decode_tokens
        self._decode_seconds += other._decode_seconds

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
        now = self.done_at or time.perf_counter()
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
        return GenerationStats(
            usage=Usage(**vars(self.usage)),
            timings=timings,
            finish_reason=self.finish_reason,
            tool_calls=self.tool_calls,
            tool_seconds=round(self.tool_seconds, 3),
        )
