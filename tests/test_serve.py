"""`chatllm serve`, used the way other programs use it: with the official
`openai` Python client.

The server core runs in-process over the fake engine for the protocol and the
templates-as-models logic; `chatllm serve` itself runs as a subprocess on the
embedded model for the end-to-end path and Ctrl-C. Both servers are fixtures
in tests/support/server_fixtures.py (`served`, `chatllm_serve`), which other
test modules use too.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import httpx
import openai
import pytest

from chatllm.engine.base import EngineOptions, GenerationParams, Message
from chatllm.engine.openai import OpenAIEngine
from chatllm.errors import EngineError
from chatllm.hub.models import resolve_model
from chatllm.server import http as server
from chatllm.server.service import PersonaCache
from tests.support.cli import cli_env, run_chatllm
from tests.support.openai_servers import free_port, start_process, stop_process
from tests.support.server_fixtures import RecordingEngine, serve_command

HELLO = [{"role": "user", "content": "hello there"}]


def test_completion(served) -> None:
    reply = served.client.chat.completions.create(model="fake.gguf", messages=HELLO)
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "fake.gguf" and reply.id.startswith("chatcmpl-")
    prompt_tokens = served.engine.count_prompt_tokens([Message("user", "hello there")])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 3)
    assert reply.usage.total_tokens == prompt_tokens + 3


def test_streaming_with_usage(served) -> None:
    chunks = list(
        served.client.chat.completions.create(
            model="fake",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=2,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello "
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_streaming_without_usage_ends_with_done(served) -> None:
    body = {"model": "fake.gguf", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{served.url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(e.removeprefix("data: ")) for e in events[:-1])


def test_models_are_the_model_and_every_template(served) -> None:
    ids = [m.id for m in served.client.models.list()]
    assert ids[0] == "fake.gguf"
    assert {"chat", "support", "summarize", "translate"} <= set(ids)
    support = served.client.models.retrieve("support")
    assert support.id == "support" and support.owned_by == "chatllm"
    with pytest.raises(openai.NotFoundError):
        served.client.models.retrieve("nope")


def test_a_persona_as_model_brings_its_prompt_knowledge_and_defaults(served) -> None:
    served.client.chat.completions.create(model="support", messages=HELLO)
    system, user = served.engine.calls[-1]
    assert system.role == "system" and "customer-service agent" in system.content
    assert "KNOWLEDGE:" in system.content and "Examples of good replies" in system.content
    assert user == Message("user", "hello there")
    params = served.engine.params[-1]
    assert (params.temperature, params.max_tokens, params.seed) == (0, 160, 11)  # template, template, serve option

    served.client.chat.completions.create(
        model="support", messages=HELLO, temperature=0.9, max_tokens=7, seed=3, top_p=0.5, stop=["\n"]
    )
    params = served.engine.params[-1]
    assert (params.temperature, params.max_tokens, params.seed, params.top_p, params.stop) == (0.9, 7, 3, 0.5, ("\n",))


def test_a_served_persona_that_declines_offers_the_handover(served) -> None:
    served.engine.reply = lambda messages: "I'm sorry, I'm unable to provide that information."
    reply = served.client.chat.completions.create(model="support", messages=HELLO)
    assert reply.choices[0].message.content.endswith("who will reply by email within one business day.")
    pieces = served.client.chat.completions.create(model="support", messages=HELLO, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
    assert streamed == reply.choices[0].message.content
    served.engine.reply = lambda messages: "I'm unable to say."  # a plain model (no template) adds nothing
    assert served.client.chat.completions.create(model="fake", messages=HELLO).choices[0].message.content == (
        "I'm unable to say."
    )


def test_a_task_template_as_model_renders_the_input(served) -> None:
    messages = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "The cat sat on the mat."},
    ]
    served.client.chat.completions.create(model="summarize", messages=messages)
    system, user = served.engine.calls[-1]
    assert system.content == "Answer in French."  # the template has none; the client's own stays
    assert user.content.startswith("The cat sat on the mat.") and "Summarize the text above" in user.content
    assert served.engine.params[-1].temperature == 0.2


def test_template_variables_come_from_extra_body(served) -> None:
    with pytest.raises(openai.BadRequestError, match="needs the variable 'to'"):
        served.client.chat.completions.create(model="translate", messages=HELLO)
    served.client.chat.completions.create(model="translate", messages=HELLO, extra_body={"variables": {"to": "French"}})
    assert "into French" in served.engine.calls[-1][-1].content


def test_bad_requests_get_openai_style_errors(served) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        served.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert raised.value.status_code == 400
    assert raised.value.body["code"] == "model_not_found" and "does not exist" in raised.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="'messages' must be a non-empty list"):
        served.client.chat.completions.create(model="fake", messages=[])
    with pytest.raises(openai.BadRequestError, match="'temperature' must be between 0.0 and 2.0"):
        served.client.chat.completions.create(model="fake", messages=HELLO, temperature=5)
    with pytest.raises(openai.BadRequestError, match="role 'function' is not supported"):
        served.client.chat.completions.create(
            model="fake", messages=[{"role": "function", "content": "x", "name": "f"}]
        )

    response = httpx.post(
        f"{served.url}/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith("the request body is not valid JSON")
    missing = httpx.get(f"{served.url}/nowhere")
    assert missing.status_code == 404 and "no such endpoint" in missing.json()["error"]["message"]


def test_a_prompt_too_long_for_the_context_is_a_400(served) -> None:
    long_text = [{"role": "user", "content": "word " * 4000}]
    with pytest.raises(openai.BadRequestError) as raised:
        served.client.chat.completions.create(model="fake", messages=long_text)
    assert raised.value.body["code"] == "context_length_exceeded"


def test_an_engine_failure_is_a_500(served) -> None:
    def fail(messages):
        raise EngineError("llama.cpp failed to evaluate the prompt")

    served.engine.reply = fail
    with pytest.raises(openai.InternalServerError, match="llama.cpp failed to evaluate the prompt"):
        served.client.chat.completions.create(model="fake", messages=HELLO)
    with pytest.raises(openai.InternalServerError):
        served.client.chat.completions.create(model="fake", messages=HELLO, stream=True)


def test_a_client_hanging_up_mid_stream_frees_the_engine(served) -> None:
    served.engine.reply = lambda messages: " ".join(["word"] * 200_000)
    body = {"model": "fake", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{served.url}/chat/completions", json=body) as response:
        next(response.iter_lines())
    served.engine.reply = lambda messages: "fine"
    reply = served.client.chat.completions.create(model="fake", messages=HELLO, timeout=30)
    assert reply.choices[0].message.content == "fine"


def test_stopping_cuts_the_running_reply_and_frees_the_engine() -> None:
    engine = RecordingEngine()
    engine.reply = lambda messages: " ".join(f"word{n}" for n in range(1_000_000))  # endless, never repeating
    http = server.bind("127.0.0.1", 0)
    http.service = server.ChatService(engine, "fake.gguf", aliases=("fake",))
    running = threading.Thread(target=server.run, args=(http,), daemon=True)
    running.start()
    body = {"model": "fake", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{server.base_url(http)}/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith('data: {"id"')
        http.shutdown()  # what Ctrl-C does to serve_forever
        rest = list(lines)
    running.join(30)
    assert not running.is_alive() and engine.closed
    assert engine.last_stats.finish_reason == "interrupted"
    assert "data: [DONE]" not in rest  # the client can tell the reply was cut short


def test_chatllms_remote_engine_talks_to_chatllm_serve(served) -> None:
    engine = OpenAIEngine(resolve_model(f"openai:chat@{served.url}"), EngineOptions())
    assert engine.context_size == served.engine.context_size  # from max_model_len in /v1/models
    assert "".join(engine.stream([Message("user", "hi")], GenerationParams())) == "Echo: hi"
    assert engine.last_stats.usage.prompt_tokens == served.engine.last_stats.usage.prompt_tokens
    engine.close()


# ---- `chatllm serve` on the embedded model -------------------------------------


@pytest.mark.slow
def test_serve_answers_the_openai_client(chatllm_serve) -> None:
    client = chatllm_serve.extra["client"]
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "SmolLM2-135M-Instruct.Q4_1.gguf" and {"support", "summarize"} <= set(ids)
    assert f"Serving SmolLM2-135M-Instruct.Q4_1.gguf on {chatllm_serve.url} (templates: chat, " in chatllm_serve.log()

    reply = client.chat.completions.create(
        model=ids[0], messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content.strip()
    assert 0 < reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 5

    stream = client.chat.completions.create(
        model="embedded",
        # Prose at temperature 0: the same pieces every run (a reply the
        # repetition guard holds back, such as a count, may come as one piece).
        messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2 and chunks[-1].usage.completion_tokens <= 12


@pytest.mark.slow
def test_serve_support_persona_and_a_bad_request(chatllm_serve) -> None:
    client = chatllm_serve.extra["client"]
    reply = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Can I return a jacket?"}], max_tokens=16
    )
    assert reply.choices[0].message.content.strip()
    plain = client.chat.completions.create(
        model="embedded",
        messages=[{"role": "user", "content": "Can I return a jacket?"}],
        max_tokens=1,
    )
    # the persona's instructions and its retrieved knowledge came along
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens + 300
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 400 and "does not exist" in raised.value.body["message"]


@pytest.mark.slow
def test_ctrl_c_stops_serve_cleanly(embedded_model, tmp_path) -> None:
    port = free_port()
    process = start_process(serve_command(port), port, tmp_path / "serve.log", env=cli_env())
    assert stop_process(process, signal.SIGINT) == 0
    assert process.log().rstrip().endswith("Stopped.")


def test_a_taken_port_is_an_error() -> None:
    # The port is taken before the model loads, so this needs no model.
    with server.bind("127.0.0.1", 0) as taken:
        port = taken.server_address[1]
        result = run_chatllm("serve", "--port", str(port), "-m", "embedded", timeout=60)
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")


def test_an_api_key_guards_every_endpoint_but_health() -> None:
    engine = RecordingEngine()
    http = server.bind("127.0.0.1", 0)
    http.service = server.ChatService(engine, "fake.gguf", aliases=("fake",), api_key="s3cret")
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = server.base_url(http)
    try:
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        assert httpx.get(f"{url}/models").status_code == 401
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        response = httpx.post(f"{url}/chat/completions", json={"model": "fake", "messages": HELLO})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert (
            client.chat.completions.create(model="fake", messages=HELLO).choices[0].message.content
            == "Echo: hello there"
        )
        # chatllm's own remote backend sends CHATLLM_API_KEY
        os.environ["CHATLLM_API_KEY"] = "s3cret"
        try:
            remote = OpenAIEngine(resolve_model(f"openai:fake@{url}"), EngineOptions())
            assert "".join(remote.stream([Message("user", "hi")], GenerationParams())) == "Echo: hi"
            remote.close()
        finally:
            del os.environ["CHATLLM_API_KEY"]
    finally:
        http.shutdown()
        http.server_close()


def test_loopback_addresses() -> None:
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("192.168.1.10")


def test_the_persona_cache_is_bounded_and_keeps_no_refused_request(served) -> None:
    def ask(company: str) -> None:
        served.client.chat.completions.create(
            model="support", messages=HELLO, extra_body={"variables": {"company": company}}
        )

    limit = PersonaCache.MAX_ENTRIES
    for n in range(limit + 4):
        ask(f"Shop {n}")
    cached = served.service.personas
    assert len(cached) == limit
    with pytest.raises(openai.BadRequestError, match="context holds"):
        ask("big " * 3000)
    assert cached.get(("support", (("company", "big " * 3000),), ())) is None
    assert cached.get(("support", (("company", "Shop 4"),), ())) is not None  # the oldest kept: nothing pushed it out
    assert cached.get(("support", (("company", "Shop 3"),), ())) is None
