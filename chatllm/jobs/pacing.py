"""How long a job of many parts will take: said before its first part, and
again as parts finish.

A long summary or translation makes one model call per part. Before the
first call, the speed is a guess from the model file's size; once a call is
done, the engine's own measured prefill and decode rates replace it. Either
way it is an estimate, and it says which kind it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatllm.reply.meter import Meter

# The embedded model (SmolLM2-135M Q4_1, 98 MB) on the 2-core development VM:
# prefill 470 tokens/s, decode 150 (benchmarks/README.md, "Latest table"). On
# a CPU both are bound by reading the weights, so speed goes as 1 / file size:
# a 1.5B Q4_K_M (1.1 GB) is measured at ~13 tokens/s of decode there, as this
# scaling says. A slow machine's figures, so the first estimate errs long;
# on a GPU the measured one is far shorter.
REFERENCE_BYTES = 98_362_432
REFERENCE_PREFILL_PER_S = 470.0
REFERENCE_DECODE_PER_S = 150.0
# A job expected to take less than this says nothing before it starts.
ANNOUNCE_SECONDS = 30.0


@dataclass(frozen=True)
class Call:
    """One model call a job expects to make: tokens to read, tokens to write."""

    prompt_tokens: int
    reply_tokens: int


@dataclass(frozen=True)
class Progress:
    """Where a job of many parts stands, for a progress display."""

    doing: str  # "summarizing", "combining the summaries", "translating"
    done: int
    total: int
    tokens: int  # of what is split into these parts
    seconds_left: float | None  # the rest of the job, not only these parts; None: no estimate yet
    measured: bool  # the estimate comes from this run's own speeds

    @property
    def worth_saying(self) -> bool:
        """Whether this job is long enough to announce and follow."""
        if self.total < 2:
            return False
        return self.seconds_left is None or self.seconds_left >= ANNOUNCE_SECONDS

    def announcement(self) -> str:
        """The line said before the first part."""
        if self.seconds_left is None:
            when = "how long it takes is estimated once the first part is done"
        else:
            basis = (
                "measured" if self.measured else "a first guess from the model's size, measured after the first part"
            )
            when = f"about {duration(self.seconds_left)} to finish ({basis})"
        return f"{self.doing.capitalize()}: {self.tokens:,} tokens in {self.total:,} parts; {when}. Ctrl-C stops."

    def status(self) -> str:
        """A line after a part, for a display that cannot redraw (a pipe)."""
        left = f"; about {duration(self.seconds_left)} left" if self.seconds_left is not None else ""
        return f"{self.doing.capitalize()}: part {self.done:,} of {self.total:,} done{left}."


ProgressCallback = Callable[[Progress], None]


class Pace:
    """Seconds that model calls will take on `meter`'s engine: at the speeds
    measured so far, or before any, guessed from the model's size."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    @property
    def measured(self) -> bool:
        timings = self.meter.stats().timings
        return timings.prefill_tokens_per_s > 0 and timings.decode_tokens_per_s > 0

    def rates(self) -> tuple[float, float] | None:
        """(prefill, decode) tokens per second, or None when nothing tells them."""
        timings = self.meter.stats().timings
        if timings.prefill_tokens_per_s > 0 and timings.decode_tokens_per_s > 0:
            return timings.prefill_tokens_per_s, timings.decode_tokens_per_s
        size = self.meter.engine.model_bytes
        if not size:
            return None
        scale = REFERENCE_BYTES / size
        return REFERENCE_PREFILL_PER_S * scale, REFERENCE_DECODE_PER_S * scale

    def seconds(self, calls: Sequence[Call]) -> float | None:
        rates = self.rates()
        if rates is None:
            return None
        prefill, decode = rates
        return sum(call.prompt_tokens / prefill + call.reply_tokens / decode for call in calls)

    def progress(self, doing: str, done: int, total: int, tokens: int, left: Sequence[Call]) -> Progress:
        """Where a job stands with `left` still to call."""
        return Progress(doing, done, total, tokens, self.seconds(left), self.measured)


def duration(seconds: float) -> str:
    """A rough, readable length of time: 40 s, 12 min, 2 h 10 min, 28 h."""
    if seconds < 59.5:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours >= 10:
        return f"{hours + (minutes >= 30)} h"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
