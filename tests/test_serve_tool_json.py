"""serve's translation of OpenAI's tools API (the reply path is wired with the
reply pipeline): requests with tools and tool messages, replies and chunks."""

from __future__ import annotations

import pytest

from chatllm.engine.base import GenerationStats, MessageToolCall, generation_params
from chatllm.reply.events import ToolCall
from chatllm.server.openai_json import completion_json
from chatllm.server.requests import RequestError, parse_chat_request
from chatllm.server.tool_json import tool_call_deltas, tool_calls_json

TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    },
}


def test_a_request_with_tools_and_a_tool_result() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Where is NB-51377?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "order_status", "arguments": '{"order_id": "NB-51377"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"status": "Shipped"}'},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "order_status"}},
        "parallel_tool_calls": False,
    }
    request = parse_chat_request(body, "m")
    params = generation_params(request.overrides)
    assert [t.name for t in params.tools] == ["order_status"]
    assert (params.tool_choice, params.parallel_tool_calls) == ("order_status", False)
    assert request.messages[1].tool_calls == (MessageToolCall("c1", "order_status", '{"order_id": "NB-51377"}'),)
    assert (request.messages[2].role, request.messages[2].tool_call_id) == ("tool", "c1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tools": [TOOL, TOOL]}, "two tools are named 'order_status'"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not one of the tools"),
        ({"tool_choice": "sometimes"}, "'tool_choice' must be"),
        (
            {"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": 5}}}]},
            "not a valid JSON Schema",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "needs the 'tool_call_id'"),
    ],
)
def test_bad_tool_requests_are_400s(change: dict, message: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL], **change}
    with pytest.raises(RequestError) as error:
        parse_chat_request(body, "m")
    assert error.value.status == 400 and message in error.value.message


def test_a_reply_that_calls_a_tool_is_shaped_as_openai_shapes_it() -> None:
    call = ToolCall("call_1", "order_status", {"order_id": "NB-51377"})
    stats = GenerationStats(finish_reason="tool_calls")
    reply = completion_json("id", 0, "m", "", stats, tool_calls=tool_calls_json([call]))
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "order_status", "arguments": '{"order_id": "NB-51377"}'},
        }
    ]
    head, arguments = tool_call_deltas(0, call)
    assert head["tool_calls"][0]["function"] == {"name": "order_status", "arguments": ""}
    assert arguments["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"order_id": "NB-51377"}'}}
