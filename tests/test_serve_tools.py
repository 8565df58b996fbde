"""`chatllm serve` speaks OpenAI's tools API to the official `openai` client:
`tools`, `tool_choice` (auto, none, required, a named function),
`parallel_tool_calls`, `tool_calls` in replies with finish_reason
"tool_calls", streamed deltas, and the `tool` role; the client runs the
tools. The server core over the fake engine for the exact shapes; `chatllm
serve` on the embedded model for the two turns a client makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatllm.engine.base import Message

ORDERS = json.loads((Path(__file__).parent.parent / "prompts" / "tools" / "orders.json").read_text())
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "description": "Look up one order by its number (such as MM-123456): its status and dates.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{5,6}$"}},
            "required": ["order_id"],
        },
    },
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "Where is my order NB-51377?"}]


def look_up(messages: list[Message]) -> str:
    """The fake model: a lookup first, then what the tool said."""
    if messages[-1].role == "tool":
        return "It is " + json.loads(messages[-1].content)["status"] + "."
    return 'Let me see. <tool_call>{"name": "order_status", "arguments": {"order_id": "NB-51377"}}</tool_call>'


def with_the_result(client, model: str, message, call_id: str):
    """A client's second request: the question, the reply's call and NB-51377's status."""
    result = json.dumps({"order_id": "NB-51377", **ORDERS["NB-51377"]})
    messages = [
        *QUESTION,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]
    return client.chat.completions.create(model=model, messages=messages, tools=[ORDER_TOOL])


def test_a_reply_that_calls_a_tool_and_the_next_request_with_its_result(served) -> None:
    served.engine.reply = look_up
    first = served.client.chat.completions.create(model="fake", messages=QUESTION, tools=[ORDER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "order_status" and call.id
    assert json.loads(call.function.arguments) == {"order_id": "NB-51377"}
    assert choice.message.content == "Let me see."

    second = with_the_result(served.client, "fake", choice.message, call.id)
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert second.choices[0].message.content == "It is Shipped."
    sent = served.engine.calls[-1]
    assert [m.role for m in sent][-3:] == ["user", "assistant", "tool"]
    assert sent[-2].tool_calls[0].name == "order_status" and sent[-1].tool_call_id == call.id


def test_tool_calls_stream_as_openai_streams_them(served) -> None:
    served.engine.reply = look_up
    stream = served.client.chat.completions.create(model="fake", messages=QUESTION, tools=[ORDER_TOOL], stream=True)
    chunks = list(stream)
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head, *rest = [d[0] for d in deltas]
    assert head.index == 0 and head.id and head.function.name == "order_status" and head.type == "function"
    assert json.loads("".join(d.function.arguments for d in rest)) == {"order_id": "NB-51377"}
    assert all(d.id is None and d.function.name is None for d in rest)  # id and name come once, first
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me see."


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, ("auto", True)),
        ("none", None, ("none", True)),
        ("required", False, ("required", False)),
        ({"type": "function", "function": {"name": "weather"}}, None, ("weather", True)),
    ],
)
def test_tool_choice_and_parallel_calls_reach_the_model(served, choice, parallel, expected) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    served.client.chat.completions.create(
        model="fake", messages=QUESTION, tools=[ORDER_TOOL, WEATHER_TOOL], tool_choice=choice, **extra
    )
    params = served.engine.params[-1]
    assert (params.tool_choice, params.parallel_tool_calls) == expected
    assert [tool.name for tool in params.tools] == ["order_status", "weather"]


def test_with_tool_choice_none_a_call_the_model_writes_is_text(served) -> None:
    served.engine.reply = look_up
    reply = served.client.chat.completions.create(
        model="fake", messages=QUESTION, tools=[ORDER_TOOL], tool_choice="none"
    )
    assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls


# ---- `chatllm serve` on the embedded model, as a client uses it ------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_support_persona_through_serve_in_two_turns(chatllm_serve) -> None:
    """The client sends its tool; the model (made to call it: the 135M seldom
    does by itself) calls it; the client runs it and sends the result; the
    persona answers, and may now state the status it was given."""
    client = chatllm_serve.extra["client"]
    first = client.chat.completions.create(
        model="support",
        messages=QUESTION,
        tools=[ORDER_TOOL],
        tool_choice={"type": "function", "function": {"name": "order_status"}},
        parallel_tool_calls=False,
        max_tokens=80,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    order_id = json.loads(call.function.arguments)["order_id"]  # fits the schema's pattern: the grammar's doing
    assert order_id[:2].isupper() and order_id[2] == "-" and order_id[3:].isdigit()
    status = ORDERS.get(order_id, {"status": "unknown"})
    result = json.dumps({"order_id": order_id, **status})
    second = client.chat.completions.create(
        model="support",
        messages=[*QUESTION, choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": result}],
        tools=[ORDER_TOOL],
        tool_choice="none",
        max_tokens=80,
    )  # fmt: skip
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length") and not answer.message.tool_calls
    assert answer.message.content.strip()
    assert "I can't see orders from here" not in answer.message.content  # the lookup is in: no pre-emption

    streamed = client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=QUESTION,
        tools=[ORDER_TOOL, WEATHER_TOOL],
        tool_choice="required",
        max_tokens=80,
        stream=True,
    )
    chunks = list(streamed)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call_so_far = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call_so_far["name"] += delta.function.name or ""
            call_so_far["arguments"] += delta.function.arguments or ""
    assert calls and chunks[-1].choices[0].finish_reason == "tool_calls"
    for made in calls.values():
        assert made["name"] in ("order_status", "weather") and isinstance(json.loads(made["arguments"]), dict)


def test_the_support_persona_answers_once_the_clients_lookup_is_in(served) -> None:
    # A question naming an order starts the persona's reply with a call; the
    # client's second request carries the result, and the reply is the answer
    # (made to call again, the 1.5B looked the same order up once more).
    served.engine.reply = look_up
    first = served.client.chat.completions.create(model="support", messages=QUESTION, tools=[ORDER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and served.engine.params[-1].tool_choice == "required"
    (call,) = choice.message.tool_calls
    second = with_the_result(served.client, "support", choice.message, call.id)
    assert served.engine.params[-1].tool_choice == "auto"
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert "Shipped" in second.choices[0].message.content
