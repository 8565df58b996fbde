"""Feeds texts, token by token, to the lazy tool-call grammar of the embedded
model (its fallback format: `<tool_call>` is several tokens), as sampling
would accept them; then prints whether the grammar now constrains (a token
that cannot continue a call is ruled out). A grammar that rejects what it was
fed ends this process (llama.cpp throws through C), which the caller sees.

    python lazy_trigger.py TEXT...
"""

from __future__ import annotations

import ctypes
import json
import sys

from chatllm.engine.base import EngineOptions, GenerationParams, ToolSpec
from chatllm.engine.bindings import llama_bindings
from chatllm.engine.llama import LlamaEngine
from chatllm.engine.tool_grammar import ToolCalls, lazy_grammar_sampler
from chatllm.hub.models import ResolvedModel, embedded_model_path

SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}


def main() -> None:
    llama_cpp = llama_bindings()
    path = embedded_model_path()
    engine = LlamaEngine(ResolvedModel(reference=str(path), name=path.name, path=path), EngineOptions(n_ctx=256))
    prompt = engine._prompt
    params = GenerationParams(tools=(ToolSpec("order_status", "An order", json.dumps(SCHEMA)),))
    calls = ToolCalls.of(params, prompt)
    assert calls is not None and calls.grammar.lazy
    sampler = lazy_grammar_sampler(engine._vocab, calls.grammar, prompt.tokenize)
    for text in sys.argv[1:]:
        for token in prompt.tokenize(text, False):
            llama_cpp.llama_sampler_accept(sampler, token)
    (word,) = prompt.tokenize("Hello", False)
    data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(word, 1.0, 0.0))
    candidates = llama_cpp.llama_token_data_array(data, 1, -1, False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
    print("constrained" if data[0].logit == float("-inf") else "free")
    llama_cpp.llama_sampler_free(sampler)
    engine.close()


if __name__ == "__main__":
    main()
