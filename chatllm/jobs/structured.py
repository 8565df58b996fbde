"""Replies under a schema: the schema a reply must match, the grammar a local
model is constrained by, and the settings that constrain a reply (the CLI's
jobs and `serve` alike). jobs/schemas.py reads and checks schemas themselves."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from chatllm.engine.base import GenerationParams
from chatllm.engine.grammar import json_schema_text, schema_to_gbnf
from chatllm.jobs.schemas import parse_schema


def structure_for(given: str | None, declared: dict[str, Any] | None, local: bool) -> dict[str, Any] | None:
    """The schema a reply must match: --schema, else the template's, else
    None; checked now, before any model loads (`local`: against llama.cpp's
    grammar too, see check_grammar)."""
    schema = parse_schema(given) if given is not None else declared
    if schema is not None:
        check_grammar(schema, local)
    return schema


def grammar_for(schema: dict[str, Any]) -> str:
    """The GBNF grammar a local model's reply under `schema` is constrained by."""
    return schema_to_gbnf(json_schema_text(schema))


def check_grammar(schema: dict[str, Any], local: bool) -> None:
    """For a local model, raise UsageError now (before any model loads) when
    llama.cpp's grammar cannot express `schema`; a server checks its own."""
    if local:
        grammar_for(schema)


def constrained(params: GenerationParams, schema: dict[str, Any], max_tokens: int | None = None) -> GenerationParams:
    """`params` with every reply constrained by `schema` (a grammar locally,
    `response_format` on a server), and bounded by `max_tokens` unless they
    are already."""
    return replace(params, json_schema=json_schema_text(schema), max_tokens=params.max_tokens or max_tokens)
