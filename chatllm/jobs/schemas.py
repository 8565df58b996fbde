"""Schemas for structured output: reading them, checking them, and checking a
reply against one.

`--schema` takes a JSON Schema file, inline JSON, or a short field syntax in
the manner of `llm --schema`:

    'name, age int, tags list, city: where they live'

Fields are separated by commas (or new lines); each is a name, an optional
type (str, int, float, bool, list; list is a list of strings; str is the
default) and an optional description after a colon. Every field is required
and no other field is allowed.

A schema is checked as a JSON Schema (jsonschema's metaschema), and a reply is
validated against it with jsonschema: no hand-written checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from chatllm.errors import InputError, UsageError
from chatllm.inputs import read_file

_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "string": {"type": "string"},
    "int": {"type": "integer"},
    "integer": {"type": "integer"},
    "float": {"type": "number"},
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "boolean": {"type": "boolean"},
    "list": {"type": "array", "items": {"type": "string"}},
}
_FIELD = re.compile(r"^\s*([A-Za-z_\u00c0-\uffff][\w\u00c0-\uffff-]*)(?:\s+([A-Za-z]+))?\s*(?::\s*(.*))?$", re.S)


def parse_schema(value: str) -> dict[str, Any]:
    """The JSON Schema that `--schema VALUE` means (a file, inline JSON or the
    short syntax), checked. Raises UsageError saying what is wrong."""
    text = value.strip()
    if not text:
        raise UsageError("--schema is empty; give a JSON Schema file, inline JSON, or fields such as 'name, age int'")
    path = Path(text).expanduser()
    if not text.startswith(("{", "[")) and len(text) < 4096 and "\n" not in text and path.is_file():
        text = read_file(path).strip()
        where = f"'{path}'"
    else:
        where = "the schema"
    if text.startswith(("{", "[")):
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(
                f"{where} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
            ) from None
    elif where != "the schema":
        raise UsageError(f"{where} is not JSON: a schema file holds a JSON Schema")
    else:
        schema = short_schema(text)
    check_schema(schema, where)
    return schema


def short_schema(text: str) -> dict[str, Any]:
    """The JSON Schema of the short field syntax."""
    properties: dict[str, Any] = {}
    for part in (p for p in re.split(r"[,\n]", text) if p.strip()):
        match = _FIELD.match(part)
        if match is None:
            raise UsageError(
                f"'{part.strip()}' is not a field; write 'name', 'name type' or 'name: description' (types: str, int, float, bool, list)"
            )
        name, kind, description = match.group(1), (match.group(2) or "str").lower(), match.group(3)
        if kind not in _TYPES:
            raise UsageError(f"unknown type '{kind}' for field '{name}'; use one of: str, int, float, bool, list")
        if name in properties:
            raise UsageError(f"field '{name}' is given twice in the schema")
        properties[name] = {**_TYPES[kind]}
        if description and description.strip():
            properties[name]["description"] = description.strip()
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


# jsonschema's checks and the grammar builder recurse once or more per level:
# ~100 levels of `properties` reach Python's recursion limit. Real schemas
# nest a handful of levels.
MAX_SCHEMA_DEPTH = 64


def nesting_depth(value: Any) -> int:
    """How deep JSON `value` nests (a scalar: 0), counted without recursing."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def check_schema(schema: Any, where: str = "the schema") -> None:
    """Raise UsageError unless `schema` is a valid JSON Schema (a JSON object)."""
    import jsonschema

    if not isinstance(schema, dict):
        raise UsageError(f"{where} must be a JSON object (a JSON Schema), not {type(schema).__name__}")
    if nesting_depth(schema) > MAX_SCHEMA_DEPTH:
        raise UsageError(f"{where} is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        at = "/".join(str(p) for p in error.absolute_path)
        raise UsageError(f"{where} is not a valid JSON Schema{f' (at {at})' if at else ''}: {error.message}") from None


class SchemaMismatch(InputError):
    """A reply that is not JSON, or not valid against its schema."""


def validated(text: str, schema: dict[str, Any], source: str = "the reply") -> Any:
    """The JSON document in `text`, checked against `schema`. Raises
    SchemaMismatch naming the first field that is wrong."""
    import jsonschema

    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaMismatch(f"{source} is not JSON ({error.msg} at character {error.pos})") from None
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
    mismatch = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if mismatch is not None:
        field = "/".join(str(p) for p in mismatch.absolute_path) or "(the document)"
        raise SchemaMismatch(f"{source} does not match the schema at '{field}': {mismatch.message}")
    return document
