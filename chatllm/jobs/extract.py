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
from chatllm.errors import EngineError, UsageError
from chatllm.jobs.items import input_items
from chatllm.jobs.job import Plan, Setup
from chatllm.jobs.prompting import generation_params
from chatllm.jobs.schemas import SchemaMismatch, validated
from chatllm.jobs.structured import grammar_for, structure_for
from chatllm.reply.events import Finish, Text
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, Events, complete
from chatllm.templates import load_template

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


def extract_messages(schema: dict[str, Any], text: str, system: str | None = None) -> list[Message]:
    return [
        Message("system", system or DEFAULT_INSTRUCTION.format(fields=describe_fields(schema))),
        Message("user", text),
    ]


def extract(
    meter: Meter, schema: dict[str, Any], text: str, params: GenerationParams, system: str | None = None
) -> Any:
    """The document extracted from `text`, valid against `schema`."""
    return complete_json(meter, extract_messages(schema, text, system), schema, params)


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


class ExtractJob:
    """`chatllm extract`: one reply per input (each file, or each line with
    --jsonl), a JSON document valid against the schema."""

    def __init__(self, setup: Setup) -> None:
        values = setup.values
        chosen = load_template(values["template"]) if values.get("template") else None
        self.local = not setup.model.remote
        schema = structure_for(values.get("schema"), chosen.schema if chosen is not None else None, self.local)
        if schema is None:
            raise UsageError(
                "give --schema (a JSON Schema file, inline JSON, or fields such as 'name, age int'), "
                "or a template with a schema"
            )
        self.schema = schema
        self.system = values.get("system") or (
            chosen.render_system({}) if chosen is not None and chosen.system.strip() else None
        )
        self.jsonl = bool(values.get("jsonl"))
        self.items = input_items(list(values.get("files") or []), whole=not self.jsonl)
        defaults = {} if chosen is not None else {"temperature": 0.0}  # deterministic unless asked
        self.params = generation_params(chosen, defaults, setup.sampling)
        self.template = chosen.name if chosen is not None else "extract"
        self.repetition = "off"  # the schema bounds the reply's form
        self.record: dict[str, Any] | None = {"prompt": "\n\n".join(self.items), "variables": {}, "params": self.params}

    def plan(self) -> Plan:
        grammar = grammar_for(self.schema) if self.local else None
        return Plan(extract_messages(self.schema, self.items[0], self.system), self.params, self.schema, grammar)

    def run(self, meter: Meter) -> Events:
        for item in self.items:
            document = extract(meter, self.schema, item, self.params, self.system)
            stats = meter.engine.last_stats
            compact = json.dumps(document, ensure_ascii=False)
            # One document per line for --jsonl; --json gives it compact in its object.
            yield Text(compact if self.jsonl else json.dumps(document, ensure_ascii=False, indent=2))
            yield Finish(stats.finish_reason, stats, {"text": compact})


def prepare(setup: Setup) -> ExtractJob:
    return ExtractJob(setup)
