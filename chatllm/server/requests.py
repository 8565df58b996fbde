"""Reading an OpenAI chat completion request for `chatllm serve`: what is
accepted, and the OpenAI-style errors for what is not.

Accepted: `model`, `messages` (roles system, developer (= system), user,
assistant (with `tool_calls`), tool; content as text or a list of
`{"type": "text"}` parts), `tools`, `tool_choice` and `parallel_tool_calls`
(server/tool_json.py), `stream`,
`stream_options.include_usage`, `temperature`, `top_p`, `max_tokens` (or
`max_completion_tokens`), `seed`, `stop`, `n` (1 only), `frequency_penalty`,
`presence_penalty`, llama.cpp's `top_k`, `min_p`, `repeat_penalty`,
`repeat_last_n` and `dry_*` (every field of GenerationParams), and chatllm's
`variables` for templates. Other fields are ignored, as OpenAI-compatible
servers usually do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from chatllm.engine.base import Message, Role, sampling_settings
from chatllm.errors import UsageError
from chatllm.jobs.schemas import check_schema
from chatllm.reply.tool_loop import defused
from chatllm.server.request_error import RequestError
from chatllm.server.tool_json import message_tool_calls, tool_settings

__all__ = ["ParsedRequest", "RequestError", "parse_chat_request"]

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


@dataclass(frozen=True)
class ParsedRequest:
    model: str
    messages: list[Message]
    # Sampling settings the request gave, by GenerationParams' names.
    overrides: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    repetition: str | None = None  # chatllm's own field: strict, loops or off
    # OpenAI's response_format: the JSON Schema a reply must match (None: free text).
    schema: dict[str, Any] | None = None


def parse_chat_request(body: Any, default_model: str) -> ParsedRequest:
    """Check `body` (decoded JSON); raise RequestError(400) naming the first problem."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    model = body.get("model") or default_model
    if not isinstance(model, str):
        raise RequestError(400, "'model' must be a string", code="invalid_value")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "'stream_options' must be an object")
    if body.get("n") not in (None, 1):
        raise RequestError(400, "only one choice per request is supported ('n' must be 1)")
    return ParsedRequest(
        model=model,
        messages=_messages(body.get("messages")),
        overrides={**_sampling(body), **tool_settings(body)},
        variables=_variables(body.get("variables")),
        stream=stream,
        include_usage=bool(stream and options.get("include_usage")),
        repetition=_repetition(body.get("repetition")),
        schema=_response_format(body.get("response_format")),
    )


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects")
    messages = []
    for index, item in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise RequestError(400, f"{where} must be an object with 'role' and 'content'")
        role = item.get("role")
        if role not in _ROLES:
            raise RequestError(400, f"{where}: role {role!r} is not supported (use system, user, assistant or tool)")
        calls = message_tool_calls(item.get("tool_calls"), where) if role == "assistant" else ()
        content = _content(item.get("content"), where, role)
        if role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestError(400, f"{where}: a tool message needs the 'tool_call_id' it answers")
            # A result is data: what reads as tool markup in it is made harmless, as for the CLI's own tools.
            name = str(item.get("name") or "")
            messages.append(Message("tool", defused(content), tool_call_id=call_id, name=name))
            continue
        messages.append(Message(_ROLES[role], content, tool_calls=calls))
    return messages


def _content(value: Any, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"{where}: only text content is supported")
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(400, f"{where}: 'content' must be a string or a list of text parts")


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    for setting in sampling_settings():
        name, low, high, whole = setting.name, setting.low, setting.high, setting.whole
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise RequestError(
                400, f"'{name}' must be {'a whole number' if whole else 'a number'}", code="invalid_value"
            )
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison
            raise RequestError(400, f"'{name}' must be a finite number, not {value}", code="invalid_value")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise RequestError(400, f"'{name}' must be {bounds}, not {value}", code="invalid_value")
        settings[name] = value
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("enable_thinking"), bool):
        settings["think"] = kwargs["enable_thinking"]  # as llama-server and vLLM take it
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError(400, "'stop' must be a string or a list of strings", code="invalid_value")
        settings["stop"] = tuple(s for s in stop if s)
    return settings


def _response_format(value: Any) -> dict[str, Any] | None:
    """OpenAI's `response_format`: text, json_object (any JSON object) or
    json_schema ({"json_schema": {"schema": ...}}), as llama-server takes them."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError(
                400, "'response_format.json_schema.schema' must be a JSON Schema object", code="invalid_value"
            )

        try:
            check_schema(schema, "'response_format.json_schema.schema'")
        except UsageError as error:
            raise RequestError(400, str(error), code="invalid_value") from None
        return schema
    raise RequestError(
        400, '\'response_format.type\' must be "text", "json_object" or "json_schema"', code="invalid_value"
    )


def _repetition(value: Any) -> str | None:
    if value is None or value in ("strict", "loops", "off"):
        return value
    raise RequestError(400, '\'repetition\' must be "strict", "loops" or "off"', code="invalid_value")


def _variables(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RequestError(400, '\'variables\' must be an object of text values, e.g. {"to": "French"}')
    return dict(value)
