"""A GGUF's chat template (Hugging Face's Jinja format), rendered the way
Transformers and llama-cpp-python's `Jinja2ChatFormatter` render it: a sandboxed
Jinja2 environment with the same options, extensions, filters and variables.

Not `llama_cpp.llama_chat_format` itself: importing that module imports
llama-cpp-python's whole high-level API and numpy, about 100 ms and 15 MB on
every command, for one Jinja2 environment; chatllm uses nothing else from it.
tests/test_chat_template.py renders real templates through both and checks that
the text is identical.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _IgnoreGenerationTags(Extension):
    """Transformers' `{% generation %}` tag (marks assistant text for training)
    renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """One compiled chat template with the model's BOS and EOS token texts."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        environment = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_IgnoreGenerationTags, loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        self._template = environment.from_string(source)
        self._bos_token = bos_token
        self._eos_token = eos_token

    def render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, tools: list | None = None, **extra: Any
    ) -> str:
        """The prompt text; raises what the template raises (ValueError from its
        raise_exception, e.g. when roles do not alternate). `extra` are template
        variables such as Qwen3's `enable_thinking`; `tools` are OpenAI's
        function descriptions, for a template that renders them."""
        return self._template.render(
            messages=messages,
            bos_token=self._bos_token,
            eos_token=self._eos_token,
            add_generation_prompt=add_generation_prompt,
            raise_exception=_raise_exception,
            strftime_now=_strftime_now,
            functions=None,
            function_call=None,
            tools=tools,
            tool_choice=None,
            **extra,
        )
