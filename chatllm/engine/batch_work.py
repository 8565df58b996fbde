"""What one request asks of the batch scheduler (scheduler.py): a reply to
generate (`Generation`) or continuations to score (`Scoring`).

The scheduler owns the sequence's place in the KV cache; a request owns
everything else about itself: its sampler, its text, its limits, and the
queue its caller reads. The scheduler calls, on its own thread only:

    first(row)  the prompt is evaluated; its last token's logits are at `row`
    next(rows)  the tokens of the last `Feed` are evaluated; their logits are at `rows`
    fail(error) / end()

`first` and `next` return the tokens to evaluate next (a `Feed`) or None
when the request is done. The caller's thread only reads the queue and may
set `cancelled`.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatllm.engine.base import FinishReason, GenerationParams, GenerationStats
from chatllm.engine.bindings import llama_bindings
from chatllm.engine.reasoning import Piece
from chatllm.engine.sampling import PIECE_BUFFER, ReplySampler, Thinking, split_at_stop

llama_cpp = llama_bindings()

# Put on a request's queue after its last piece (or its scores).
END = object()


@dataclass(frozen=True)
class Feed:
    """Tokens a sequence evaluates in the next step, after its KV cache is cut
    back to `rewind` tokens (None: kept). `all_logits`: a row of logits for
    every token (scoring), else for the last one only."""

    tokens: list[int]
    all_logits: bool = False
    rewind: int | None = None


class Work:
    """What the scheduler needs of every request."""

    def __init__(self, prompt: list[int], prefix: int, stats: GenerationStats) -> None:
        self.prompt = prompt
        # The leading tokens every request with the same system prompt shares
        # (0: none worth sharing); the scheduler evaluates them once.
        self.prefix = prefix
        self.stats = stats
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cancelled = False  # set by the caller's thread: it stopped reading
        self.submitted = time.perf_counter()
        self.prefill_started = 0.0
        self.prefill_s = 0.0  # seconds of the steps that evaluated this prompt
        self._ended = False

    def begin(self, cached: int) -> None:
        """Admitted to a sequence whose cache already holds `cached` prompt tokens."""
        self.stats.usage.cached_prompt_tokens = cached
        self.prefill_started = time.perf_counter()

    def prefilled(self, evaluated: int) -> None:
        """The prompt is evaluated (`evaluated` tokens of it in this request's steps)."""
        seconds = time.perf_counter() - self.prefill_started
        # A fully cached prompt still evaluates its last token, for its logits:
        # no prefill worth a rate.
        if seconds > 0 and (evaluated > 1 or self.stats.usage.cached_prompt_tokens == 0):
            self.stats.timings.prefill_tokens_per_s = evaluated / seconds

    def first(self, context: Any, row: int) -> Feed | None:
        raise NotImplementedError

    def next(self, context: Any, rows: Sequence[int]) -> Feed | None:
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        """Stop with `error`, which the caller raises."""
        self.outbox.put(error)
        self.end()

    def end(self) -> None:
        """Free what the request holds (once; the scheduler's thread)."""
        self._ended = True


class Generation(Work):
    """A reply: each step samples one token from this sequence's own logits
    with its own sampler, and puts its text on the queue."""

    def __init__(
        self,
        prompt: list[int],
        prefix: int,
        stats: GenerationStats,
        params: GenerationParams,
        sampler: ReplySampler,
        thinking: Thinking | None,
        vocab: Any,
        context_size: int,
    ) -> None:
        super().__init__(prompt, prefix, stats)
        self.sampler, self.thinking, self.vocab = sampler, thinking, vocab
        self.context_size = context_size
        self.stops = tuple(s for s in params.stop if s)
        self.limit = params.max_tokens
        self.held = ""  # text that may be the start of a stop string
        self.position = len(prompt)  # where the next token goes
        self.generated = 0
        self.first_token_at = self.last_token_at = 0.0
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._piece = ctypes.create_string_buffer(PIECE_BUFFER)

    def first(self, context: Any, row: int) -> Feed | None:
        if self.limit is not None and self.limit <= 0:
            return self._finish("length")
        return self._sample(row)

    def next(self, context: Any, rows: Sequence[int]) -> Feed | None:
        return self._sample(rows[-1])

    def _sample(self, row: int) -> Feed | None:
        token = self.sampler.sample(row)
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            return self._finish("stop")
        self._count_token()
        usage = self.stats.usage
        usage.completion_tokens += 1
        text, hit = self._text(token, special=False)
        self._emit(self.thinking.feed(text) if self.thinking is not None else (text,))
        if hit:
            return self._finish("stop")
        if self.limit is not None and usage.completion_tokens >= self.limit or self.position >= self.context_size:
            return self._finish("length")
        tokens = [token]
        if self.thinking is not None and self.thinking.over_budget():
            # End the thinking as llama-server's --reasoning-budget does: the
            # closing tag, as if the model had written it.
            for forced in self.thinking.close_tokens:
                usage.completion_tokens += 1
                text, _ = self._text(forced, special=True, stops=False)
                self._emit(self.thinking.feed(text, forced=True))
            tokens += self.thinking.close_tokens
        self.position += len(tokens)
        return Feed(tokens)

    def _text(self, token: int, special: bool, stops: bool = True) -> tuple[str, bool]:
        length = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, PIECE_BUFFER, 0, special)
        text = self._utf8.decode(self._piece.raw[:length]) if length > 0 else ""
        if stops and self.stops:
            text, self.held, hit = split_at_stop(self.held + text, self.stops)
            return text, hit
        return text, False

    def _emit(self, pieces: Sequence[Piece]) -> None:
        for piece in pieces:
            if piece:
                self.outbox.put(piece)

    def _count_token(self) -> None:
        now = time.perf_counter()
        if not self.generated:
            self.first_token_at = now
        self.last_token_at = now
        self.generated += 1

    def _finish(self, reason: FinishReason) -> Feed | None:
        """End the reply (nothing more to evaluate: None)."""
        # Held text that only looked like the start of a stop string is part of
        # the reply after all (a stop string found leaves nothing held).
        if self.held:
            self._emit(self.thinking.feed(self.held) if self.thinking is not None else (self.held,))
        if self.thinking is not None:
            self._emit(self.thinking.finish())
        self.stats.finish_reason = reason
        if self.generated > 1 and self.last_token_at > self.first_token_at:
            self.stats.timings.decode_tokens_per_s = (self.generated - 1) / (self.last_token_at - self.first_token_at)
        self.outbox.put(END)
        self.end()
        return None

    def end(self) -> None:
        if not self._ended:
            self.sampler.close()
        super().end()


class Scoring(Work):
    """The log-probability of each continuation as the whole reply: the prompt
    once, then each continuation's tokens in one step, its logits row by row."""

    def __init__(
        self, prompt: list[int], prefix: int, stats: GenerationStats, continuations: list[list[int]], n_vocab: int
    ) -> None:
        super().__init__(prompt, prefix, stats)
        self.continuations = continuations
        self.n_vocab = n_vocab
        self.scores: list[float] = []
        self._first: Any = None
        self._total = 0.0

    def first(self, context: Any, row: int) -> Feed | None:
        self._first = self._log_softmax(context, row)
        return self._next_continuation()

    def next(self, context: Any, rows: Sequence[int]) -> Feed | None:
        tokens = self.continuations[len(self.scores)]
        for row, token in zip(rows, tokens[1:]):
            self._total += float(self._log_softmax(context, row)[token])
        self.scores.append(self._total)
        return self._next_continuation()

    def _next_continuation(self) -> Feed | None:
        while len(self.scores) < len(self.continuations):
            tokens = self.continuations[len(self.scores)]
            self._total = float(self._first[tokens[0]])
            if len(tokens) > 1:
                return Feed(tokens[:-1], all_logits=True, rewind=len(self.prompt))
            self.scores.append(self._total)
        self.outbox.put(self.scores)
        self.outbox.put(END)
        self.end()
        return None

    def _log_softmax(self, context: Any, row: int) -> Any:
        import numpy  # scoring only (classify, a persona's judge); ~50 ms to import

        logits = numpy.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, row), shape=(self.n_vocab,))
        top = float(logits.max())
        return logits - (top + math.log(float(numpy.exp(logits - top).sum())))
