"""Pulling fields out of text as JSON that matches a schema.

The reply is constrained by the schema on every backend (a llama.cpp grammar
locally, `response_format` on an OpenAI-compatible server), then validated
against it with jsonschema: a server that ignored the schema, or a schema
feature a grammar cannot enforce (a `pattern`, a `minimum`), is a clear error
naming the field, never a silently wrong document.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.grammar import json_schema_text
from chatllm.errors import EngineError
from chatllm.jobs.schemas import SchemaMismatch, validated
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, complete

DEFAULT_INSTRUCTION = (
    "Extract the information from the user's text as JSON with these fields:\n{fields}\nUse only what the text says."
)


def describe_fields(schema: dict[str, Any]) -> str:
    """A line per top-level property ("- age (integer): their age"), or the
    schema itself when it is not an object of properties."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return json.dumps(schema, ensure_ascii=False)
    lines = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type", "value")
        if kind == "array":
            kind = f"list of {spec.get('items', {}).get('type', 'value')}"
        description = f": {spec['description']}" if spec.get("description") else ""
        lines.append(f"- {name} ({kind}){description}")
    return "\n".join(lines)


def structured_params(params: GenerationParams, schema: dict[str, Any], room: int) -> GenerationParams:
    """Constrained by `schema`, thinking off (a grammar cannot start after it on
    every backend, and a label or a field needs no deliberation), and bounded by
    --max-tokens or else by the `room` left in the context: the grammar bounds
    strings and lists (engine/grammar.py), so a reply ends well before."""
    return replace(
        params,
        json_schema=json_schema_text(schema),
        grammar=None,
        think=False,
        max_tokens=params.max_tokens or max(room, 16),
    )


def extract(
    meter: Meter, schema: dict[str, Any], text: str, params: GenerationParams, system: str | None = None
) -> Any:
    """The document extracted from `text`, valid against `schema`."""
    messages = [
        Message("system", system or DEFAULT_INSTRUCTION.format(fields=describe_fields(schema))),
        Message("user", text),
    ]
    return complete_json(meter, messages, schema, params)


def complete_json(meter: Meter, messages: list[Message], schema: dict[str, Any], params: GenerationParams) -> Any:
    """The reply to `messages` under `schema`, parsed and validated."""
    engine = meter.engine
    constrained = structured_params(params, schema, engine.context_size - engine.count_prompt_tokens(messages) - 8)
    reply = complete(meter, messages, constrained, Checks(repetition="off"))  # the schema bounds its form
    if meter.engine.last_stats.finish_reason == "length":
        raise EngineError(
            f"the reply reached its limit of {constrained.max_tokens} tokens before its JSON was "
            "complete; raise --max-tokens"
        )
    return check_reply(reply, schema, meter)


def check_reply(reply: str, schema: dict[str, Any], meter: Meter) -> Any:
    server = meter.engine.base_url
    try:
        return validated(reply, schema, f"the server at {server}'s reply" if server else "the reply")
    except SchemaMismatch as error:
        if server:
            raise SchemaMismatch(f"{error} (the server may have ignored response_format)") from None
        raise
