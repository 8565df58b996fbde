"""The llama.cpp engine for many callers at once: `chatllm serve --parallel N`.

`BatchedLlamaEngine` loads a model as `LlamaEngine` does, but its context holds
N sequences and belongs to a scheduler thread (scheduler.py) that decodes
every running request in one batch per step. Any number of threads may call
`stream` and `score` at once: each call is a request with its own sequence,
sampler and queue, and `last_stats` is per thread (the stats of the last
reply that thread streamed), so a caller's Meter never reads another's.

`context_size` is what one request may use (a slot's share); the KV cache
holds that many cells for every slot and for each shared prefix
(scheduler.py): `--ctx` times (`--parallel` + 2).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chatllm.engine.base import EngineOptions, EngineStream, GenerationParams, GenerationStats, Message, Timings
from chatllm.engine.batch_work import END, Generation, Scoring, Work
from chatllm.engine.llama import LlamaEngine, llama_cpp
from chatllm.engine.sampling import ReplySampler
from chatllm.engine.scheduler import PREFIX_HOLDERS, Scheduler
from chatllm.engine.tool_grammar import ToolCalls
from chatllm.errors import EngineError
from chatllm.hub.models import ResolvedModel


class BatchedLlamaEngine(LlamaEngine):
    """A GGUF model serving up to `sequences` requests at once. Thread-safe."""

    def __init__(
        self,
        model: ResolvedModel,
        options: EngineOptions,
        on_model_loaded: Callable[[LlamaEngine], None] | None = None,
    ) -> None:
        self.max_sequences = max(1, options.sequences or 1)
        self._local = threading.local()
        self._shared_stats = GenerationStats()
        # Rendering a prompt sets state on the template (whether it opened a
        # <think>): one caller at a time.
        self._prompt_lock = threading.RLock()
        self._scheduler: Scheduler | None = None
        self._open_work: dict[int, Work] = {}  # by the thread waiting on it
        super().__init__(model, options, on_model_loaded)

    @property
    def last_stats(self) -> GenerationStats:
        """The stats of the last reply (or scoring) this thread asked for."""
        return getattr(self._local, "stats", self._shared_stats)

    @last_stats.setter
    def last_stats(self, stats: GenerationStats) -> None:
        self._local.stats = stats

    def _make_context(self, path: Path, params: Any, options: EngineOptions) -> None:
        slots = self.max_sequences
        params.n_seq_max = slots + PREFIX_HOLDERS
        # A stream of cells per sequence (scheduler.py says why), each a slot's context.
        params.kv_unified = False
        params.n_ctx = self.context_size * (slots + PREFIX_HOLDERS)
        super()._make_context(path, params, options)
        self._scheduler = Scheduler(self._context, slots, self.context_size, self._state_cache)

    # ---- what callers see -----------------------------------------------------

    def slot_states(self) -> list[str]:
        """Each slot's state: idle, prefill or generating."""
        return self._scheduler.slot_states() if self._scheduler is not None else ["idle"] * self.max_sequences

    def queue_depth(self) -> int:
        """Requests waiting for a free slot."""
        return self._scheduler.queue_depth() if self._scheduler is not None else 0

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        with self._prompt_lock:
            return super().count_prompt_tokens(messages)

    def prompt_tokens(self, messages: Sequence[Message], think: bool | None = None) -> list[int]:
        with self._prompt_lock:
            return super().prompt_tokens(messages, think)

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream:
        """The reply's pieces as the scheduler makes them. Raises EngineError (on
        the first `next`) if the prompt does not fit a slot's context."""
        self._require_model()
        stats = GenerationStats(timings=Timings(load_s=self.load_s))
        self.last_stats = stats
        started = time.perf_counter()
        with self._prompt_lock:
            calls = ToolCalls.of(params, self._prompt)
            prompt, thinking = self._checked_prompt(messages, params, stats)
            prefix = self._prompt.system_prefix_length(messages, prompt, params)
        self._wait_for_context()
        sampler = ReplySampler(self._vocab, self._context, params, prompt, self.context_size, self._seed, calls)
        work = Generation(prompt, prefix, stats, params, sampler, thinking, self._vocab, self.context_size)
        first_piece = True
        pieces = self._results(work)
        pieces = calls.events(pieces, stats) if calls else pieces  # closing it cancels the work too
        try:
            for piece in pieces:
                if first_piece:
                    stats.timings.ttft_s = time.perf_counter() - started
                    first_piece = False
                yield piece
        except (GeneratorExit, KeyboardInterrupt):
            stats.finish_reason = "interrupted"
            raise
        finally:
            pieces.close()
            stats.timings.total_s = time.perf_counter() - started
            if first_piece:
                stats.timings.ttft_s = stats.timings.total_s

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]:
        self._require_model()
        stats = GenerationStats(timings=Timings(load_s=self.load_s))
        self.last_stats = stats
        started = time.perf_counter()
        with self._prompt_lock:
            prompt, scored = self._scoring_tokens(messages, continuations)
            prefix = self._prompt.system_prefix_length(messages, prompt)
        stats.usage.prompt_tokens = len(prompt)
        self._wait_for_context()
        work = Scoring(prompt, prefix, stats, scored, llama_cpp.llama_vocab_n_tokens(self._vocab))
        try:
            results = list(self._results(work))
        finally:
            stats.timings.total_s = stats.timings.ttft_s = time.perf_counter() - started
        return results[0]

    def _results(self, work: Work):
        """What the scheduler puts on the request's queue, until its end; the
        request is cancelled when the caller stops reading."""
        scheduler = self._scheduler
        if scheduler is None:
            raise EngineError("the model has been closed")
        try:
            scheduler.submit(work)
        except BaseException:
            work.end()
            raise
        thread = threading.get_ident()
        self._open_work[thread] = work
        try:
            while True:
                item = work.outbox.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._open_work.pop(thread, None)
            scheduler.cancel(work)  # nothing to do once it has ended

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """A request is on its way from this thread: while it is prepared
        (until its first `stream` or `score` submits it), a prefill about to
        start waits briefly for it, so requests sent together are prefilled
        in one batch (scheduler.py)."""
        scheduler, thread = self._scheduler, threading.get_ident()
        if scheduler is not None:
            scheduler.expect(thread)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.unexpect(thread)

    def abandon(self, thread: int) -> None:
        """Cancel what the thread `thread` waits for (its client went away while
        it waited for a slot or for its first token): the slot is free at the
        next step, and the waiting thread raises EngineError."""
        work = self._open_work.get(thread)
        if work is not None and self._scheduler is not None:
            self._scheduler.cancel(work)

    def close(self) -> None:
        """Stop the scheduler (open requests end with an error), then free the
        context and the model."""
        self._context_made.wait()
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        super().close()
