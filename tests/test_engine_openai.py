"""The remote backend (`-m openai:MODEL@URL`).

Against a real OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`
with the embedded model) for streaming, usage and the CLI end to end; against a
scripted stand-in for what a real server does only when things go wrong: HTTP
errors, malformed or cut-off streams, stalls.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from chatllm.engine.base import EngineOptions, GenerationParams, Message
from chatllm.engine.openai import OpenAIEngine
from chatllm.errors import EngineError
from chatllm.hub.models import resolve_model
from tests.support.cli import run_chatllm
from tests.support.openai_servers import ScriptedServer, chunk, free_port, streaming

ASK = [Message("user", "Name three colours.")]
SHORT = GenerationParams(temperature=0.0, max_tokens=12)
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "prompt_tokens_details": {"cached_tokens": 3}}


def remote(url: str, model: str = "stub", **options) -> OpenAIEngine:
    return OpenAIEngine(resolve_model(f"openai:{model}@{url}"), EngineOptions(**options))


@pytest.fixture
def stub():
    with ScriptedServer() as server:
        yield server


# ---- a scripted server: the protocol, and every way it can go wrong --------------


def test_streams_pieces_and_reads_the_usage_chunk(stub, monkeypatch) -> None:
    monkeypatch.setenv("CHATLLM_API_KEY", "sk-test")
    stub.route(
        "POST",
        "/v1/chat/completions",
        streaming(
            chunk(""),
            ": keep-alive comment",
            "",
            chunk("Hel"),
            "",
            chunk("lo"),
            "",
            chunk(finish="stop"),
            "",
            f"data: {json.dumps({'choices': [], 'usage': USAGE})}",
            "",
            "data: [DONE]",
            "",
        ),
    )
    engine = remote(stub.url)
    params = GenerationParams(temperature=0.2, max_tokens=5, seed=7, stop=("###",))
    assert list(engine.stream(ASK, params)) == ["Hel", "lo"]
    stats = engine.last_stats
    assert (stats.usage.prompt_tokens, stats.usage.completion_tokens, stats.usage.cached_prompt_tokens) == (7, 2, 3)
    assert stats.finish_reason == "stop"
    assert 0 <= stats.timings.ttft_s <= stats.timings.total_s
    sent = stub.requests_to("/v1/chat/completions")[0]
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert sent.body == {
        "model": "stub",
        "messages": [{"role": "user", "content": "Name three colours."}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.95,
        "max_tokens": 5,
        "seed": 7,
        "stop": ["###"],
    }


def test_llama_server_context_tokenizer_and_timings(stub) -> None:
    stub.route("GET", "/props", lambda h, body: h.send_json(200, {"default_generation_settings": {"n_ctx": 1536}}))
    stub.route(
        "POST", "/tokenize", lambda h, body: h.send_json(200, {"tokens": list(range(len(body["content"].split())))})
    )
    timings = {"prompt_per_second": 900.0, "predicted_per_second": 55.5, "cache_n": 4}
    stub.route(
        "POST",
        "/v1/chat/completions",
        streaming(
            chunk("One"),
            "",
            chunk(" two"),
            "",
            chunk(finish="length", timings=timings),
            "",
            "data: [DONE]",
            "",
        ),
    )
    engine = remote(stub.url)
    assert engine.context_size == 1536
    assert remote(stub.url, n_ctx=1024).context_size == 1024  # --ctx may only narrow what the server has
    assert engine.count_tokens("one two three") == 3
    assert "".join(engine.stream(ASK, SHORT)) == "One two"
    stats = engine.last_stats
    # No usage chunk: completion tokens are the content chunks, the prompt is counted.
    assert stats.usage.completion_tokens == 2
    assert stats.usage.prompt_tokens == engine.count_prompt_tokens(ASK)
    assert stats.usage.cached_prompt_tokens == 4
    assert (stats.timings.prefill_tokens_per_s, stats.timings.decode_tokens_per_s) == (900.0, 55.5)
    assert stats.finish_reason == "length"


def test_without_a_tokenizer_counts_are_estimated_at_four_characters_a_token(stub) -> None:
    engine = remote(stub.url)
    assert engine.context_size == 4096
    assert engine.count_tokens("abcdefghi") == 3
    assert engine.count_tokens("abcd") == 1
    assert len(stub.requests_to("/tokenize")) == 1  # probed once, then remembered


def test_model_defaults_to_the_servers_first(stub) -> None:
    engine = remote(stub.url, model="")
    assert engine.model_name == "stub"
    stub.route("GET", "/v1/models", lambda h, body: h.send_json(200, {"object": "list", "data": []}))
    with pytest.raises(EngineError, match="lists no models; name one: openai:MODEL@"):
        remote(stub.url, model="")


def test_http_500_shows_the_servers_message(stub) -> None:
    stub.route(
        "POST",
        "/v1/chat/completions",
        lambda h, body: h.send_json(500, {"error": {"message": "model\ncrashed", "type": "server_error"}}),
    )
    with pytest.raises(EngineError) as raised:
        list(remote(stub.url).stream(ASK, SHORT))
    assert str(raised.value) == f"the server at {stub.url} answered HTTP 500 Internal Server Error: model crashed"


def test_unauthorized_hints_at_the_api_key(stub) -> None:
    stub.route(
        "GET", "/v1/models", lambda h, body: h.send_json(401, {"error": {"message": "Incorrect API key provided"}})
    )
    with pytest.raises(
        EngineError, match="HTTP 401 Unauthorized: Incorrect API key provided; set CHATLLM_API_KEY or OPENAI_API_KEY"
    ):
        remote(stub.url)


def test_a_server_that_rejects_stream_options_is_asked_again_without(stub) -> None:
    def respond(handler, body):
        if "stream_options" in body:
            handler.send_json(400, {"error": {"message": "Unrecognized request argument supplied: stream_options"}})
        else:
            streaming(chunk("ok"), "", "data: [DONE]", "")(handler, body)

    stub.route("POST", "/v1/chat/completions", respond)
    engine = remote(stub.url)
    assert list(engine.stream(ASK, SHORT)) == ["ok"]
    assert list(engine.stream(ASK, SHORT)) == ["ok"]
    assert [("stream_options" in e.body) for e in stub.requests_to("/v1/chat/completions")] == [True, False, False]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            (chunk("a"), "", "data: {not json", "", "data: [DONE]", ""),
            "sent a malformed stream: '{not json' is not JSON",
        ),
        ((chunk("a"), "", "<html>oops</html>", ""), "sent a malformed stream: '<html>oops</html>' is not an SSE line"),
        ((chunk("a"), "", chunk("b"), ""), "ended the stream before it finished (no 'data: [DONE]')"),
        ((chunk("a"), "", 'data: {"error": {"message": "out of memory"}}', ""), "failed mid-reply: out of memory"),
    ],
    ids=["bad-json", "not-sse", "no-done", "error-event"],
)
def test_broken_streams_are_one_line_errors(stub, lines, message) -> None:
    stub.route("POST", "/v1/chat/completions", streaming(*lines))
    pieces = []
    with pytest.raises(EngineError, match=re.escape(message)) as raised:
        for piece in remote(stub.url).stream(ASK, SHORT):
            pieces.append(piece)
    assert pieces[0] == "a" and "\n" not in str(raised.value)


def test_a_plain_json_answer_is_accepted(stub) -> None:
    completion = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    stub.route("POST", "/v1/chat/completions", lambda h, body: h.send_json(200, completion))
    engine = remote(stub.url)
    assert list(engine.stream(ASK, SHORT)) == ["whole"]
    assert engine.last_stats.usage.prompt_tokens == 7


def test_a_silent_server_times_out(stub, monkeypatch) -> None:
    monkeypatch.setenv("CHATLLM_REMOTE_TIMEOUT", "0.5")

    def stall(handler, body):
        handler.start_stream()
        handler.send_lines(chunk("first"))
        stub.release.wait(30)  # until the test ends

    stub.route("POST", "/v1/chat/completions", stall)
    started = time.monotonic()
    pieces = remote(stub.url).stream(ASK, SHORT)
    assert next(pieces) == "first"
    with pytest.raises(EngineError, match=r"sent nothing for 0.5 s; set CHATLLM_REMOTE_TIMEOUT=SECONDS to wait longer"):
        next(pieces)
    assert time.monotonic() - started < 10


def test_closing_early_interrupts_and_hangs_up(stub) -> None:
    hung_up = threading.Event()

    def endless(handler, body):
        handler.start_stream()
        try:
            for _ in range(1_000_000):
                handler.send_lines(chunk("word "), "")
        except OSError:
            hung_up.set()

    stub.route("POST", "/v1/chat/completions", endless)
    engine = remote(stub.url)
    pieces = engine.stream(ASK, SHORT)
    assert [next(pieces), next(pieces)] == ["word ", "word "]
    pieces.close()
    assert engine.last_stats.finish_reason == "interrupted"
    assert engine.last_stats.usage.completion_tokens == 2
    assert hung_up.wait(20), "the server kept streaming: the response was not closed"


def test_connection_refused_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineError, match=r"cannot connect to .*: connection refused \(is the server running\?\)"):
        remote(url)


def test_cli_reports_a_refused_connection_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_chatllm("summarize", "-m", f"openai:x@{url}", input="Some text to summarize.", timeout=60)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == f"Error: cannot connect to {url}: connection refused (is the server running?)\n"


def test_cli_reports_an_http_error(stub) -> None:
    stub.route(
        "POST", "/v1/chat/completions", lambda h, body: h.send_json(503, {"error": {"message": "loading model"}})
    )
    result = run_chatllm("summarize", "-m", f"openai:stub@{stub.url}", input="Some text to summarize.", timeout=60)
    assert result.returncode == 1
    # strip(): the summarize progress bar leaves a newline on stderr even when never shown.
    assert (
        result.stderr.decode().strip()
        == f"Error: the server at {stub.url} answered HTTP 503 Service Unavailable: loading model"
    )


# ---- a real server: llama-cpp-python's llama_cpp.server on the embedded model -----
# (the llama_server fixture, in tests/support/server_fixtures.py)


@pytest.mark.slow
def test_real_server_streams_with_usage(llama_server) -> None:
    engine = remote(llama_server.url, model="smollm", n_ctx=2048)
    assert engine.context_size == 2048  # the server does not say; --ctx does
    assert engine.count_tokens("Hello world") == 2  # the server's tokenizer, not 11 chars / 4
    pieces = list(engine.stream(ASK, SHORT))
    stats = engine.last_stats
    assert len(pieces) >= 3 and "".join(pieces).strip()
    assert stats.usage.completion_tokens == len(pieces) <= 12
    assert stats.usage.prompt_tokens == engine.count_prompt_tokens(ASK)
    assert stats.finish_reason in ("stop", "length")
    assert 0 < stats.timings.ttft_s <= stats.timings.total_s
    assert stats.timings.decode_tokens_per_s > 0 and stats.timings.prefill_tokens_per_s > 0
    engine.close()


@pytest.mark.slow
def test_real_server_interrupt_then_continue(llama_server) -> None:
    engine = remote(llama_server.url, model="")
    assert engine.model_name.endswith(".gguf")  # the server's first (only) model
    pieces = engine.stream([Message("user", "Tell me a long story about a dragon.")], GenerationParams(max_tokens=200))
    next(pieces)
    pieces.close()
    assert engine.last_stats.finish_reason == "interrupted"
    assert "".join(engine.stream(ASK, SHORT)).strip()
    engine.close()


@pytest.mark.slow
def test_real_server_through_the_cli(llama_server) -> None:
    text = "The river flooded the valley in spring. Farmers moved their animals to the hills and waited for the water to fall."
    result = run_chatllm(
        # Temperature 0: a sampled summary is now and then written twice (a fragment, say), and both count.
        "summarize",
        "-m",
        f"openai:x@{llama_server.url}",
        "--json",
        "--max-tokens",
        "24",
        "--ctx",
        "2048",
        "--temperature",
        "0",
        input=text,
    )
    assert result.returncode == 0, result.stderr.decode()
    output = json.loads(result.stdout)
    assert output["text"].strip() and output["model"] == "x" and output["template"] == "summarize"
    assert 0 < output["usage"]["completion_tokens"] <= 24 and output["usage"]["prompt_tokens"] > 20
    chat = run_chatllm("chat", "-m", f"openai:x@{llama_server.url}", "--max-tokens", "12", input="Hello!\n")
    assert chat.returncode == 0, chat.stderr.decode()
    assert chat.stdout.decode().strip()
