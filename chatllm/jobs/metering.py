"""Adds up usage and timings over the engine calls of one job (a map-reduce
summary makes many), so --stats and --json describe the whole job."""

from __future__ import annotations

import time
from typing import Iterator, Sequence

from chatllm.engine.base import Engine, GenerationParams, GenerationStats, Message, Timings, Usage


class Meter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.started = time.perf_counter()
        self.usage = Usage()
        self.first_piece_at: float | None = None
        self.finish_reason = "stop"
        self.calls = 0
        self._prefill_seconds = 0.0
        self._prefill_tokens = 0
        self._decode_seconds = 0.0
        self._decode_tokens = 0

    def stream(self, messages: Sequence[Message], params: GenerationParams, *, visible: bool = True) -> Iterator[str]:
        """The engine's stream, recorded. `visible=False` marks intermediate calls
        (map steps) whose output the user does not see, for time to first token."""
        pieces = self.engine.stream(messages, params)
        try:
            for piece in pieces:
                if visible and self.first_piece_at is None and piece:
                    self.first_piece_at = time.perf_counter()
                yield piece
        finally:
            pieces.close()
            self._add(self.engine.last_stats)

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> str:
        return "".join(self.stream(messages, params, visible=False))

    def _add(self, stats: GenerationStats) -> None:
        self.calls += 1
        self.usage.prompt_tokens += stats.usage.prompt_tokens
        self.usage.completion_tokens += stats.usage.completion_tokens
        self.usage.cached_prompt_tokens += stats.usage.cached_prompt_tokens
        self.finish_reason = stats.finish_reason
        timings = stats.timings
        evaluated = stats.usage.prompt_tokens - stats.usage.cached_prompt_tokens
        if timings.prefill_tokens_per_s > 0:
            self._prefill_tokens += evaluated
            self._prefill_seconds += evaluated / timings.prefill_tokens_per_s
        decoded = max(stats.usage.completion_tokens - 1, 0)
        if timings.decode_tokens_per_s > 0:
            self._decode_tokens += decoded
            self._decode_seconds += decoded / timings.decode_tokens_per_s

    def stats(self) -> GenerationStats:
        now = time.perf_counter()
        # An engine may finish loading after the job began (a local model's context
        # is made while the job prepares its prompt): that wait is load, not the
        # job's time, which counts from when both were ready.
        begun = max(self.started, getattr(self.engine, "ready_at", None) or self.started)
        timings = Timings(
            load_s=round(self.engine.load_s, 3),
            ttft_s=round((self.first_piece_at or now) - begun, 3),
            prefill_tokens_per_s=round(self._prefill_tokens / self._prefill_seconds, 1) if self._prefill_seconds else 0.0,
            decode_tokens_per_s=round(self._decode_tokens / self._decode_seconds, 1) if self._decode_seconds else 0.0,
            total_s=round(now - begun, 3),
        )
        return GenerationStats(usage=Usage(**vars(self.usage)), timings=timings, finish_reason=self.finish_reason)  # type: ignore[arg-type]
