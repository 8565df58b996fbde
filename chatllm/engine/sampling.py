"""How one reply picks its tokens on llama.cpp, for the single-reply loop
(llama.py) and for the batch scheduler (scheduler.py) alike: the native
sampler chain, a grammar over it, stop strings and a reasoning model's
thinking budget.

Each reply has its own `ReplySampler`; in a batch each samples from its own
row of logits (`sample(index)`), so replies never share a seed, a grammar's
state or a penalty's history.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

from chatllm.engine.base import GenerationParams, GenerationStats
from chatllm.engine.bindings import llama_bindings
from chatllm.engine.grammar import GRAMMAR_FIRST, ConstrainedSampler, GrammarFirst, grammar_text
from chatllm.engine.reasoning import Piece, ThinkSplitter

if TYPE_CHECKING:
    from chatllm.engine.tool_grammar import ToolCalls

llama_cpp = llama_bindings()

# llama.cpp's default sequence breakers for DRY: a repeat does not reach across them.
DRY_BREAKERS = (b"\n", b":", b'"', b"*")
# Bytes of one token's text: no vocabulary has longer pieces.
PIECE_BUFFER = 256
# What ends a reasoning model's thinking when its budget is spent.
FORCED_CLOSE = "\n</think>\n\n"


def sampler_chain(vocab: Any, params: GenerationParams, prompt: list[int], context_size: int, seed: int | None) -> Any:
    """A native sampler chain in llama.cpp's own order (common/sampling.cpp):
    penalties, DRY, then the truncating samplers, temperature and the draw.
    `seed` is the engine's, used when `params` has none."""
    chain_params = llama_cpp.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(chain_params)
    add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
    history = 0  # how many of the prompt's last tokens the penalties look back on
    if params.repeat_penalty != 1.0 or params.frequency_penalty or params.presence_penalty:
        last_n = context_size if params.repeat_last_n < 0 else params.repeat_last_n
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        add(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
            )
        )
        history = last_n
    if params.dry_multiplier > 0:
        breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*DRY_BREAKERS)
        last_n = context_size if params.dry_penalty_last_n < 0 else params.dry_penalty_last_n
        add(
            llama_cpp.llama_sampler_init_dry(
                vocab,
                params.dry_multiplier,
                params.dry_base,
                params.dry_allowed_length,
                last_n,
                breakers,
                len(DRY_BREAKERS),
            )
        )
        history = max(history, last_n)
    for token in prompt[-history:] if history else ():  # their window starts in the prompt
        llama_cpp.llama_sampler_accept(chain, token)
    if params.temperature <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = seed if params.seed is None else params.seed
    if params.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
    if 0 < params.top_p < 1:
        add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0:
        add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
    add(llama_cpp.llama_sampler_init_temp(params.temperature))
    add(llama_cpp.llama_sampler_init_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF))
    return chain


class ReplySampler:
    """One reply's sampler: the chain, and the grammar of `response_format` or
    `--grammar` over it, or the lazy grammar of the tool calls it may make
    (`calls`, engine/tool_grammar.py) first in the chain. Raises UsageError for
    a grammar llama.cpp rejects. Free it with `close()` (once, by whoever
    samples with it last)."""

    def __init__(
        self,
        vocab: Any,
        context: Any,
        params: GenerationParams,
        prompt: list[int],
        context_size: int,
        seed: int | None,
        calls: ToolCalls | None = None,
    ) -> None:
        self._context = context
        self.chain = sampler_chain(vocab, params, prompt, context_size, seed)
        if calls is not None:
            self.chain = calls.sampler(vocab, self.chain)
        self.constrained: ConstrainedSampler | GrammarFirst | None = None
        gbnf = grammar_text(params.grammar, params.json_schema) if params.grammar or params.json_schema else None
        try:
            if gbnf is not None:
                grammar_class = GrammarFirst if GRAMMAR_FIRST else ConstrainedSampler
                self.constrained = grammar_class(vocab, context, self.chain, gbnf)
        except BaseException:
            llama_cpp.llama_sampler_free(self.chain)
            raise

    def sample(self, index: int = -1) -> int:
        """The next token, from the logits of the batch's `index`-th output."""
        if self.constrained is not None:
            return self.constrained.sample(index)
        return llama_cpp.llama_sampler_sample(self.chain, self._context, index)

    def close(self) -> None:
        if self.constrained is not None:
            self.constrained.close()
            self.constrained = None
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


class Thinking:
    """The thinking state of one reply: the splitter, the tokens spent thinking
    (`usage.reasoning_tokens`) and the budget."""

    def __init__(
        self, splitter: ThinkSplitter, budget: int | None, stats: GenerationStats, close_tokens: list[int]
    ) -> None:
        self.splitter, self.budget, self.stats, self.close_tokens = splitter, budget, stats, close_tokens
        self.forced = False

    def feed(self, text: str, forced: bool = False) -> list[Piece]:
        if self.splitter.thinking and not forced:
            self.stats.usage.reasoning_tokens += 1
        return self.splitter.feed(text) if text else []

    def over_budget(self) -> bool:
        if self.budget is None or self.forced or not self.splitter.thinking:
            return False
        if self.stats.usage.reasoning_tokens >= self.budget:
            self.forced = True
            return True
        return False

    def finish(self) -> list[Piece]:
        pieces = self.splitter.finish()
        self.stats.thinking_unclosed = self.splitter.unclosed
        return pieces


def split_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """Split `text` into (safe to emit, held back, stop string found). Text before a
    stop string is emitted; a tail that could begin a stop string is held back."""
    first = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if first >= 0:
        return text[:first], "", True
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:size]):
                hold = size
                break
    return text[: len(text) - hold], text[len(text) - hold :], False
