"""OpenAI's tools API for `chatllm serve`: reading `tools`, `tool_choice`,
`parallel_tool_calls` and the messages of a conversation with tool calls,
and writing `tool_calls` in replies and stream chunks.

The client runs the tools (as with OpenAI's API): a reply that calls one ends
with `finish_reason: "tool_calls"`, and the client sends the results back as
`tool` messages in its next request.
"""

from __future__ import annotations

import json
from typing import Any

from chatllm.engine.base import MessageToolCall, ToolSpec
from chatllm.errors import UsageError
from chatllm.jobs.schemas import check_schema
from chatllm.reply.events import ToolCall
from chatllm.server.request_error import RequestError


def tool_settings(body: dict[str, Any]) -> dict[str, Any]:
    """`tools`, `tool_choice` and `parallel_tool_calls` as GenerationParams
    settings (empty when the request declares no tools)."""
    raw = body.get("tools")
    if raw is None or raw == []:
        return {"tool_choice": "none"} if body.get("tool_choice") not in (None, "none", "auto") else {}
    if not isinstance(raw, list):
        raise RequestError(
            400, "'tools' must be a list of {type: function, function: {...}} objects", code="invalid_value"
        )
    tools = tuple(_tool(item, f"tools[{index}]") for index, item in enumerate(raw))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise RequestError(400, f"two tools are named '{twice}'", code="invalid_value")
    settings: dict[str, Any] = {"tools": tools, "tool_choice": _choice(body.get("tool_choice"), set(names))}
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise RequestError(400, "'parallel_tool_calls' must be true or false", code="invalid_value")
        settings["parallel_tool_calls"] = parallel
    return settings


def _tool(item: Any, where: str) -> ToolSpec:
    function = item.get("function") if isinstance(item, dict) and item.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise RequestError(400, f"{where} must be {{type: function, function: {{name, description, parameters}}}}")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    try:
        check_schema(parameters, f"{where}.function.parameters")
    except UsageError as error:
        raise RequestError(400, str(error), code="invalid_value") from None
    description = function.get("description") or ""
    return ToolSpec(function["name"], str(description), json.dumps(parameters, ensure_ascii=False))


def _choice(value: Any, names: set[str]) -> str:
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return value
    name = value.get("function", {}).get("name") if isinstance(value, dict) else None
    if not isinstance(name, str):
        raise RequestError(
            400,
            '\'tool_choice\' must be "auto", "none", "required" or {type: function, function: {name}}',
            code="invalid_value",
        )
    if name not in names:
        raise RequestError(400, f"'tool_choice' names '{name}', which is not one of the tools", code="invalid_value")
    return name


def message_tool_calls(value: Any, where: str) -> tuple[MessageToolCall, ...]:
    """An assistant message's `tool_calls` (arguments as JSON text)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(400, f"{where}: 'tool_calls' must be a list")
    calls = []
    for index, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError(
                400, f"{where}.tool_calls[{index}] must be {{id, type: function, function: {{name, arguments}}}}"
            )
        arguments = function.get("arguments") or "{}"
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(MessageToolCall(str(item.get("id") or f"call_{index}"), function["name"], arguments))
    return tuple(calls)


def tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Calls as a reply's `message.tool_calls`."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        for call in calls
    ]


def tool_call_deltas(index: int, call: ToolCall) -> list[dict[str, Any]]:
    """One call as OpenAI streams it: its id and name first, then its arguments."""
    head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    arguments = {"index": index, "function": {"arguments": json.dumps(call.arguments, ensure_ascii=False)}}
    return [{"tool_calls": [head]}, {"tool_calls": [arguments]}]
