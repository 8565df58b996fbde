"""Grammar-constrained sampling on llama.cpp: output valid by construction.

A JSON Schema becomes a GBNF grammar with llama-cpp-python's own converter
(`llama_cpp.llama_grammar.json_schema_to_gbnf`, loaded without the package's
heavy __init__); a raw GBNF grammar is used as it is. llama.cpp's grammar
sampler then decides which tokens may come next.

Grammar sampling over the whole vocabulary is slow (llama.cpp #3980, #7554),
so `ConstrainedSampler` does what llama.cpp's own `common_sampler_sample`
does: it samples as usual, checks only the chosen token against the grammar,
and only when the grammar rejects it samples again from all candidates with
the grammar applied first, before any truncating sampler (top-k, top-p, min-p
on a set the grammar then empties would abort the process: llama.cpp #18173).
Measured on the embedded model (benchmarks/README.md, "Structured output"),
this keeps decode speed; the grammar-first chain is kept as `GRAMMAR_FIRST`
for the comparison.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import json
import math
import re

from chatllm.engine.bindings import llama_bindings, prepare_package
from chatllm.errors import UsageError

llama_cpp = llama_bindings()

# The alternative measured against the lazy check: the grammar as the first
# sampler of the chain (every token checks the whole vocabulary).
GRAMMAR_FIRST = False
PREFILTER = 64


# Keywords the converter cannot express as a grammar (it would silently drop
# them or fail with a vague message): refused up front, by name.
UNSUPPORTED_KEYWORDS = (
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "patternProperties",
    "propertyNames",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "multipleOf",
)


def _unsupported(schema: object, where: str = "") -> tuple[str, str] | None:
    """The first keyword of `schema` a grammar cannot express, and where it is."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in UNSUPPORTED_KEYWORDS and where.rsplit("/", 1)[-1] not in ("properties", "$defs", "definitions"):
                return key, where or "/"
            found = _unsupported(value, f"{where}/{key}")
            if found:
                return found
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found = _unsupported(value, f"{where}/{index}")
            if found:
                return found
    return None


# Bounds the grammar adds where a schema has none, so that every reply ends,
# even at a high temperature (a string that never closes would run to the token
# limit and leave invalid JSON). Validation still uses the schema as given. They
# are written with GBNF's {m,n} (the converter's own maxLength expansion nests
# one optional per character).
DEFAULT_MAX_LENGTH = 160
DEFAULT_MAX_ITEMS = 10


def _bounded(gbnf: str) -> str:
    gbnf = re.sub(r"\bchar\*", f"char{{0,{DEFAULT_MAX_LENGTH}}}", gbnf)
    return re.sub(r'\("," space ([\w-]+)\)\*', rf'("," space \1){{0,{DEFAULT_MAX_ITEMS - 1}}}', gbnf)


@functools.lru_cache(maxsize=32)
def schema_to_gbnf(schema_text: str) -> str:
    """GBNF for a JSON Schema (given as JSON text), with bounds that make every
    reply end (`_bounded`). Raises UsageError naming what the converter cannot
    express."""
    found = _unsupported(json.loads(schema_text))
    if found:
        raise UsageError(
            f"the schema uses '{found[0]}' (at {found[1]}), which cannot be turned into a grammar; "
            "remove it (the reply is still validated against the whole schema)"
        )
    prepare_package()
    converter = importlib.import_module("llama_cpp.llama_grammar")
    try:
        gbnf = _bounded(converter.json_schema_to_gbnf(schema_text))
    except (ValueError, KeyError, TypeError, NotImplementedError, AssertionError, RecursionError) as error:
        detail = str(error) or type(error).__name__
        raise UsageError(f"the schema cannot be turned into a grammar: {detail}") from None
    # The converter's string characters include control characters, which JSON
    # strings may not hold raw: a tab or a line break inside a string made
    # replies at temperature 1.5 invalid JSON (benchmarks/structured.py: 77 of
    # 100 valid). llama.cpp's own converter excludes them too.
    gbnf = re.sub(r'(?m)^char ::= \[\^"\\\\\]', lambda _: 'char ::= [^"\\\\\\x7F\\x00-\\x1F]', gbnf)
    # The converter allows one space between tokens; models like to write JSON
    # indented, and each token the grammar rejects costs a second sampling.
    # llama.cpp's own converter now allows a line break and a bounded indent.
    return re.sub(r"(?m)^space ::= .*$", lambda _: 'space ::= | " " | "\\n" [ \\t]{0,20}', gbnf)


def grammar_text(grammar: str | None, json_schema: str | None) -> str | None:
    """The GBNF to constrain a reply with: the raw grammar, or the schema's."""
    if grammar:
        return grammar
    if json_schema:
        return schema_to_gbnf(json_schema)
    return None


def json_schema_text(schema: dict) -> str:
    """A schema as the canonical text GenerationParams carries (hashable, cacheable)."""
    return json.dumps(schema, ensure_ascii=False)  # key order kept: the model fills fields in that order


class ConstrainedSampler:
    """Samples from `chain` (which must not contain the grammar) so that every
    token is one the grammar allows, and advances the grammar. One per reply."""

    def __init__(self, vocab, context, chain, gbnf: str) -> None:
        self._context, self._chain = context, chain
        self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._grammar:
            raise UsageError("the grammar does not parse (llama.cpp rejected it; --verbose shows where)")
        # One candidate, for checking the token the chain chose.
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(self._one, 1, -1, False)
        # Every candidate, for sampling again under the grammar: ids, logits and
        # p are filled by strided copies (no Python loop over the vocabulary).
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._all = (llama_cpp.llama_token_data * self._n_vocab)()
        self._all_array = llama_cpp.llama_token_data_array(self._all, self._n_vocab, -1, False)
        self._ids = (ctypes.c_int32 * self._n_vocab)(*range(self._n_vocab))
        self._zeros = (ctypes.c_float * self._n_vocab)()
        # The grammar is checked on the PREFILTER best candidates first; the whole
        # vocabulary only when it allows none of them.
        self._prefilter = llama_cpp.llama_sampler_init_top_k(PREFILTER)
        self.resampled = 0  # how often the chain's choice was rejected

    def sample(self, index: int = -1) -> int:
        """The next token from the logits of the batch's `index`-th output."""
        token = llama_cpp.llama_sampler_sample(self._chain, self._context, index)
        one = self._one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        if not math.isinf(one.logit):
            llama_cpp.llama_sampler_accept(self._grammar, token)
            return token
        self.resampled += 1
        return self._sample_under_grammar(index)

    def _sample_under_grammar(self, index: int) -> int:
        """The chain's choice among the tokens the grammar allows. (The chain
        has already counted the rejected token in its penalty history.)"""
        raw = memoryview(self._all).cast("B")
        ints, floats = raw.cast("i"), raw.cast("f")
        logits = llama_cpp.llama_get_logits_ith(self._context, index)
        ints[0::3] = memoryview(self._ids).cast("B").cast("i")
        floats[1::3] = (
            memoryview(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float * self._n_vocab)).contents).cast("B").cast("f")
        )
        floats[2::3] = memoryview(self._zeros).cast("B").cast("f")
        array = self._all_array
        array.data = ctypes.cast(self._all, ctypes.POINTER(llama_cpp.llama_token_data))
        array.size, array.selected, array.sorted = self._n_vocab, -1, False
        llama_cpp.llama_sampler_apply(self._prefilter, ctypes.byref(array))  # sorts the best to the front
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        # The grammar leaves the order but not the ranking: the chain must sort
        # again, or a top-k could keep only tokens the grammar refused.
        array.sorted = False
        if all(math.isinf(array.data[i].logit) for i in range(array.size)):
            # None of the best is allowed: all candidates, the grammar first (it
            # must never see a set it rejects entirely, llama.cpp #18173).
            floats[1::3] = (
                memoryview(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float * self._n_vocab)).contents)
                .cast("B")
                .cast("f")
            )
            ints[0::3] = memoryview(self._ids).cast("B").cast("i")
            array.size, array.selected, array.sorted = self._n_vocab, -1, False
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
            array.sorted = False
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(array))
        token = array.data[array.selected].id
        llama_cpp.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        if self._grammar:
            llama_cpp.llama_sampler_free(self._grammar)
            llama_cpp.llama_sampler_free(self._prefilter)
            self._grammar = None


class GrammarFirst:
    """The grammar as the first sampler of the chain: every token is checked
    against the whole vocabulary (kept to measure ConstrainedSampler against)."""

    def __init__(self, vocab, context, chain, gbnf: str) -> None:
        self._context = context
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not grammar:
            raise UsageError("the grammar does not parse (llama.cpp rejected it; --verbose shows where)")
        # A chain of the grammar then the reply's own chain (which the outer chain frees).
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(self._chain, grammar)
        llama_cpp.llama_sampler_chain_add(self._chain, llama_cpp.llama_sampler_clone(chain))
        self.resampled = 0

    def sample(self, index: int = -1) -> int:
        return llama_cpp.llama_sampler_sample(self._chain, self._context, index)

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self._chain)
