"""The grammar of a reply's tool calls, applied lazily by llama.cpp.

One JSON Schema describes every call the model may make (`anyOf` one object
per tool: its name as a constant and its arguments under the tool's own
schema); llama-cpp-python's converter turns it into GBNF (engine/grammar.py),
and the call's wrapping (`<tool_call>` ... `</tool_call>`) is added around it.

llama.cpp's lazy grammar sampler (`llama_sampler_init_grammar_lazy_patterns`)
lets every token through until a trigger appears in the output, then applies
the grammar from the trigger on: the same mechanism llama-server uses for
`<tool_call>`. The trigger is a token where the opening is one token in the
model's vocabulary (Qwen2.5's `<tool_call>`: a comparison per token, in C)
and a pattern otherwise. It sits first in the native sampler chain, so a
reply that calls no tool costs no Python work per token.

A pattern ends at the end of the text so far (`$`): when it matches, llama.cpp
replays into the grammar the text from the match to the end of the token that
completed it, and text the grammar rejects there is an uncaught C++ exception
that ends the process. A token that completes the opening and runs past it
(`<tool_call` then `></`, the model writing the tag in prose) must not
trigger; so a pattern allows after the opening only what the grammar accepts
there. A model that writes its call as a fenced JSON block (```json, then
`{"name": "order_status"`: Qwen2.5-Coder-1.5B does), or as a bare JSON
object, is held to the grammar from there on, as llama.cpp's Hermes format
triggers on such calls too.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from chatllm.engine.base import GenerationParams, ToolSpec
from chatllm.engine.bindings import llama_bindings
from chatllm.engine.grammar import json_schema_text, schema_to_gbnf
from chatllm.engine.tool_format import (
    LLAMA3,
    MAX_PARALLEL_CALLS,
    CallSplitter,
    ParsedCall,
    ToolSyntax,
    offered,
    split_calls,
)
from chatllm.errors import UsageError
from chatllm.reply.events import ToolCall

llama_cpp = llama_bindings()


@dataclass(frozen=True)
class CallGrammar:
    gbnf: str
    lazy: bool  # applied from the trigger on (tool_choice auto), or from the first token
    trigger: str  # the text that opens a call (a word) or, for llama3, a pattern
    patterns: tuple[str, ...] = ()  # more patterns that open a call (a fenced JSON call)


# The converter ignores an integer's bounds; a range of at most this many
# values is written as their list, which it does express. (A wider or
# one-sided bound is left to the toolbox's check of every call's arguments.)
MAX_ENUMERATED_RANGE = 1000


def enumerated_ranges(schema: Any) -> Any:
    """`schema` with each bounded integer range as the list of its values."""
    if isinstance(schema, list):
        return [enumerated_ranges(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: enumerated_ranges(value) for key, value in schema.items()}
    if schema.get("type") == "integer" and "enum" not in schema:
        low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else None)
        high = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else None)
        if isinstance(low, int | float) and isinstance(high, int | float) and 0 <= high - low < MAX_ENUMERATED_RANGE:
            return {"enum": list(range(math.ceil(low), math.floor(high) + 1))}
    return schema


def call_schema(tools: tuple[ToolSpec, ...], arguments_key: str) -> dict[str, Any]:
    """The JSON Schema of one call to any of `tools` (as the grammar reads it)."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, arguments_key: enumerated_ranges(json.loads(tool.parameters))},
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def call_grammar(params: GenerationParams, syntax: ToolSyntax) -> CallGrammar | None:
    """The grammar for `params`' tools, or None where no call may be made."""
    tools = offered(params)
    if not tools or params.tool_choice == "none":
        return None
    key = "parameters" if syntax.kind == LLAMA3 else "arguments"
    try:
        body = schema_to_gbnf(json_schema_text(call_schema(tools, key)))
    except UsageError as error:
        raise UsageError(f"a tool's parameters cannot be turned into a grammar: {error}") from None
    # The converter's root becomes one call; a reply's calls are wrapped around it.
    body = re.sub(r"(?m)^root ::=", "tool-call-json ::=", body)
    body = re.sub(r"(?<![\w-])root(?![\w-])", "tool-call-json", body)
    lazy = params.tool_choice == "auto"
    if syntax.kind == LLAMA3:
        root = "root ::= tool-call-json\n"
        # A reply opening with `{"name` (group 1: the call; the grammar's `space` after `{`).
        return CallGrammar(root + body, lazy, r'^\s*(\{(?: |\n[ \t]{0,20})?"(?:n(?:a(?:m(?:e"?)?)?)?)?)$')
    more = MAX_PARALLEL_CALLS - 1 if params.parallel_tool_calls else 0
    root = (
        f"root ::= tool-call (tool-call-ws tool-call){{0,{more}}} | fenced-call\n"
        'tool-call ::= "<tool_call>" tool-call-ws tool-call-json tool-call-ws "</tool_call>"\n'
        "tool-call-ws ::= [ \\t\\n]{0,3}\n"
        # A model that writes its call as a fenced JSON block or a bare object instead (Qwen2.5-Coder).
        'fenced-call ::= "```" "json"? "\\n" tool-call-json "```"\n'
    )
    root = root.replace(" | fenced-call\n", " | fenced-call | tool-call-json\n", 1)
    return CallGrammar(root + body, lazy, "<tool_call>", json_call_patterns(tools))


# The grammar's `space` (engine/grammar.py), as a pattern.
_SPACE = r"(?: |\n[ \t]{0,20})?"


def json_call_patterns(tools: tuple[ToolSpec, ...]) -> tuple[str, ...]:
    """A fenced JSON block, then a bare JSON object, that has named one of
    `tools` so far, at the end of the text (what follows the name's quote is
    left to the grammar). The fenced one first: llama.cpp takes the first
    pattern that matches, and the fence is where that call starts."""
    names = "|".join(re.sub(r"[^\w-]", lambda c: "\\" + c.group(0), tool.name) for tool in tools)
    call = rf'\{{{_SPACE}"name"{_SPACE}:{_SPACE}"(?:{names})"?$'
    return ("```(?:json)?\\n" + call, call)


def lazy_grammar_sampler(vocab: Any, grammar: CallGrammar, tokenize: Any) -> Any:
    """llama.cpp's grammar sampler for `grammar`: lazy (waiting for its
    trigger) or applying at once. `tokenize(text, special)` is the model's."""
    gbnf = grammar.gbnf.encode("utf-8")
    if not grammar.lazy:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf, b"root")
    else:
        tokens: list[int] = []
        patterns: list[bytes] = []
        if grammar.trigger.startswith("^"):
            patterns.append(grammar.trigger.encode("utf-8"))
        else:
            opening = tokenize(grammar.trigger, True)
            if len(opening) == 1:
                tokens = opening
            else:  # the opening, and at most `tool-call-ws` and the call's `{"` after it (see above)
                patterns.append((re.escape(grammar.trigger) + r'[ \t\n]{0,3}(?:\{"?)?$').encode("utf-8"))
        patterns += [pattern.encode("utf-8") for pattern in grammar.patterns]
        pattern_array = (ctypes.c_char_p * max(1, len(patterns)))(*patterns)
        token_array = (llama_cpp.llama_token * max(1, len(tokens)))(*tokens)
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, gbnf, b"root", pattern_array, len(patterns), token_array, len(tokens)
        )
    if not sampler:
        raise UsageError("the tools' grammar does not parse (llama.cpp rejected it; --verbose shows where)")
    return sampler


class ToolCalls:
    """What a reply with tools adds to a local engine's generation: the lazy
    grammar first in the sampler chain, and the calls read from the text."""

    def __init__(self, params: GenerationParams, syntax: ToolSyntax, grammar: CallGrammar, tokenize: Any) -> None:
        self.params, self.syntax, self.grammar = params, syntax, grammar
        self.tokenize = tokenize  # the model's (text, special) -> tokens: the trigger's token

    @classmethod
    def of(cls, params: GenerationParams, prompt: Any) -> ToolCalls | None:
        """For a reply that may call tools (None otherwise). `prompt` is the
        model's ChatPrompt (its template decides the format)."""
        if not params.tools or params.tool_choice == "none":
            return None
        if params.json_schema or params.grammar:
            raise UsageError("a reply cannot be held to a schema or grammar and call tools; give one or the other")
        if params.tool_choice not in ("auto", "required") and not offered(params):
            raise UsageError(f"tool_choice names '{params.tool_choice}', which is not one of the tools")
        syntax = prompt.tool_syntax
        grammar = call_grammar(params, syntax)
        return None if grammar is None else cls(params, syntax, grammar, prompt.tokenize)

    def sampler(self, vocab: Any, chain: Any) -> Any:
        """`chain` behind the grammar, in one native chain (which frees both)."""
        grammar = lazy_grammar_sampler(vocab, self.grammar, self.tokenize)
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        outer = llama_cpp.llama_sampler_chain_init(chain_params)
        llama_cpp.llama_sampler_chain_add(outer, grammar)
        llama_cpp.llama_sampler_chain_add(outer, chain)
        return outer

    def events(self, pieces: Any, stats: Any) -> Any:
        """`pieces` with the calls taken out of the text, as ToolCall events."""
        splitter = CallSplitter(self.syntax, {tool.name for tool in offered(self.params)})
        try:
            for piece in split_calls(pieces, splitter):
                if isinstance(piece, ParsedCall):
                    stats.finish_reason = "tool_calls"
                    yield ToolCall(piece.id, piece.name, piece.arguments)
                else:
                    yield piece
        finally:
            pieces.close()
