"""`chatllm serve` against hostile clients and web pages (issue 21): each case
runs against the real `chatllm serve` process on the embedded model, started
here on a free 127.0.0.1 port, over raw sockets where the framing matters and
with the official `openai` client where it fits.

* A web page cannot drive the server: Host (DNS rebinding), Origin and
  Content-Type are checked, with or without an API key.
* The server's state is bounded: the persona cache, the connections, the time
  a request may take to arrive; a client that hangs up stops its reply.
* Every error is OpenAI-shaped JSON; framing is strict; NaN, infinities and
  deep nesting are 400s; the log escapes control characters; --max-tokens caps
  a request; `--host ::` listens on IPv6.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import string
import time
from dataclasses import dataclass
from email.message import Message

import openai
import pytest

from tests.support.cli import chatllm_command, cli_env
from tests.support.openai_servers import ServerProcess, free_port, start_process, stop_process

pytestmark = pytest.mark.slow  # each module-scoped server loads the embedded model

HELLO = [{"role": "user", "content": "hello"}]
TIMEOUT_S, CONN_IDLE_S, MAX_CONNECTIONS, MAX_TOKENS = 3, 1.5, 6, 4
ALLOWED_ORIGIN = "http://app.example:3000"
KEY = "s3cret-key"


def start_serve(tmp_path_factory, *flags: str, host: str = "127.0.0.1", key: str | None = None) -> ServerProcess:
    home = tmp_path_factory.mktemp("serve")
    env = {name: value for name, value in cli_env().items() if not name.startswith("CHATLLM_")}
    env.update({f"XDG_{name.upper()}_HOME": str(home / name) for name in ("config", "data", "cache")})
    if key:
        env["CHATLLM_API_KEY"] = key
    port = free_port()
    command = chatllm_command("serve", "--host", host, "--port", str(port), "-m", "embedded", *flags)
    return start_process(command, port, home / "serve.log", env=env, ready_path="/health")


@pytest.fixture(scope="module")
def guarded(embedded_model, tmp_path_factory):
    """`chatllm serve` with short limits, a cap on tokens and one allowed origin."""
    process = start_serve(
        tmp_path_factory,
        *("--timeout", str(TIMEOUT_S), "--conn-idle", str(CONN_IDLE_S)),
        *("--max-connections", str(MAX_CONNECTIONS), "--max-tokens", str(MAX_TOKENS)),
        *("--allowed-origins", ALLOWED_ORIGIN),
    )
    process.extra["port"] = int(process.url.rsplit(":", 1)[1].split("/")[0])
    yield process
    stop_process(process)


# ---- raw HTTP ----------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def error(self) -> dict:
        """The OpenAI-shaped error this answer must be."""
        assert self.headers["Content-Type"] == "application/json", (self.status, self.body[:200])
        return json.loads(self.body)["error"]


def request_bytes(
    method: str, path: str, port: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> bytes:
    """An HTTP/1.1 request as bytes; `headers` may repeat a name. Host and
    Content-Length are added unless `headers` has them."""
    headers = list(headers or [])
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        headers.insert(0, ("Host", f"127.0.0.1:{port}"))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"{method} {path} HTTP/1.1\r\n{head}Connection: close\r\n\r\n".encode("latin-1") + body


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.headers, response.read())


def exchange(port: int, data: bytes, timeout: float = 30, host: str = "127.0.0.1") -> Answer:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock)


def chat(port: int, body: dict | bytes, headers: list[tuple[str, str]] | None = None, **kwargs) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = headers if headers is not None else [("Content-Type", "application/json")]
    return exchange(port, request_bytes("POST", "/v1/chat/completions", port, data, headers), **kwargs)


def quick(**fields) -> dict:
    return {"messages": HELLO, "max_tokens": 1, **fields}


# ---- a web page cannot drive the server ----------------------------------------------


def test_a_request_naming_another_host_is_refused(guarded) -> None:
    port = guarded.extra["port"]
    rebound = [("Host", f"attacker.example:{port}"), ("Content-Type", "application/json")]
    answer = chat(port, quick(), rebound)
    assert answer.status == 403 and answer.error()["code"] == "host_not_allowed"
    assert "--allowed-hosts attacker.example" in answer.error()["message"]
    models = exchange(port, request_bytes("GET", "/v1/models", port, headers=[("Host", "attacker.example")]))
    assert models.status == 403
    for host in (f"localhost:{port}", f"127.0.0.5:{port}", "localhost", f"[::1]:{port}"):
        assert exchange(port, request_bytes("GET", "/v1/models", port, headers=[("Host", host)])).status == 200, host


def test_a_web_page_is_refused_unless_its_origin_is_allowed(guarded) -> None:
    port = guarded.extra["port"]
    json_type = ("Content-Type", "application/json")
    refused = chat(port, quick(), [json_type, ("Origin", "http://attacker.example")])
    assert refused.status == 403 and refused.error()["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in refused.headers

    allowed = chat(port, quick(), [json_type, ("Origin", ALLOWED_ORIGIN)])
    assert allowed.status == 200 and allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    own = chat(port, quick(), [json_type, ("Origin", f"http://127.0.0.1:{port}")])
    assert own.status == 200

    # A browser asks first (CORS preflight) before it sends a JSON POST.
    def preflight(origin: str) -> Answer:
        asking = [("Origin", origin), ("Access-Control-Request-Method", "POST")]
        return exchange(port, request_bytes("OPTIONS", "/v1/chat/completions", port, headers=asking))

    assert preflight("http://attacker.example").status == 403
    answer = preflight(ALLOWED_ORIGIN)
    assert answer.status == 204 and answer.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Content-Type" in answer.headers["Access-Control-Allow-Headers"]


def test_a_post_must_be_json(guarded) -> None:
    port = guarded.extra["port"]
    for headers in ([("Content-Type", "text/plain")], [], [("Content-Type", "application/x-www-form-urlencoded")]):
        answer = chat(port, quick(), headers)
        assert answer.status == 415 and answer.error()["code"] == "unsupported_media_type", headers
    assert chat(port, quick(), [("Content-Type", "application/json; charset=utf-8")]).status == 200


@pytest.fixture(scope="module")
def keyed_ipv6(embedded_model, tmp_path_factory):
    """`chatllm serve --host ::` with an API key; skipped without IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    process = start_serve(tmp_path_factory, host="::", key=KEY)
    process.extra["port"] = int(process.url.rsplit(":", 1)[1].split("/")[0])
    yield process
    stop_process(process)


def test_host_origin_and_content_type_hold_with_an_api_key(keyed_ipv6) -> None:
    port = keyed_ipv6.extra["port"]
    key = ("Authorization", f"Bearer {KEY}")
    json_type = ("Content-Type", "application/json")
    assert chat(port, quick(), [key, json_type, ("Host", "attacker.example")]).status == 403
    assert chat(port, quick(), [key, json_type, ("Origin", "http://attacker.example")]).status == 403
    assert chat(port, quick(), [key, ("Content-Type", "text/plain")]).status == 415
    assert chat(port, quick(), [json_type]).status == 401
    assert chat(port, quick(), [key, json_type]).status == 200


def test_serve_listens_on_ipv6(keyed_ipv6) -> None:
    port = keyed_ipv6.extra["port"]
    client = openai.OpenAI(base_url=f"http://[::1]:{port}/v1", api_key=KEY, max_retries=0, timeout=60)
    assert client.models.list().data[0].id == "SmolLM2-135M-Instruct.Q4_1.gguf"
    client.close()
    # `::` takes IPv4 clients too
    assert exchange(port, request_bytes("GET", "/health", port)).status == 200
    log = keyed_ipv6.log()
    assert f"on http://[::]:{port}/v1" in log and "--allowed-hosts" in log


# ---- bounded state -------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_persona_variables_do_not_grow_the_server(guarded) -> None:
    port, pid = guarded.extra["port"], guarded.process.pid
    chat(port, {"model": "support", **quick()})  # the persona's first build, and its knowledge index
    before = rss_mb(pid)
    for n in range(30):
        handoff = (f"{n} " + string.ascii_letters * 20) * 480  # 0.5 MB, a new value each time
        answer = chat(port, {"model": "support", **quick(), "variables": {"handoff": handoff}})
        assert answer.status == 400 and answer.error()["code"] == "context_length_exceeded"
    grown = rss_mb(pid) - before
    assert grown < 100, f"the server grew by {grown:.0f} MB"


def test_a_stalled_body_is_dropped_within_the_timeout(guarded) -> None:
    port = guarded.extra["port"]
    head = request_bytes("POST", "/v1/chat/completions", port, headers=[("Content-Type", "application/json")])
    head = head.replace(b"\r\n\r\n", b"\r\nContent-Length: 100\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(head + b'{"messages"')  # 11 of 100 bytes, then nothing
        answer = read_answer(sock)
        waited = time.monotonic() - started
    assert answer.status == 408 and answer.error()["code"] == "request_timeout"
    assert CONN_IDLE_S - 0.5 < waited < CONN_IDLE_S + 2

    # A byte now and then is no better: the whole request has --timeout.
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(head)
        while not select.select([sock], [], [], 0.5)[0] and time.monotonic() - started < 15:
            sock.sendall(b" ")  # a byte every half second, well within --conn-idle
        answer = read_answer(sock)
        waited = time.monotonic() - started
    assert answer.status == 408 and "did not arrive within 3 s" in answer.error()["message"]
    assert TIMEOUT_S - 0.5 < waited < TIMEOUT_S + 2


def test_a_silent_connection_is_closed_after_conn_idle(guarded) -> None:
    port = guarded.extra["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed, without a word
        assert time.monotonic() - started < CONN_IDLE_S + 2


def test_connections_past_the_cap_get_a_fast_503(guarded) -> None:
    port = guarded.extra["port"]
    held = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(MAX_CONNECTIONS)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            started = time.monotonic()
            answer = read_answer(extra)
            assert time.monotonic() - started < 1
        assert answer.status == 503 and answer.error()["code"] == "too_many_connections"
        assert answer.headers["Retry-After"] == "1"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)  # the server's threads see the hang-ups
    assert exchange(port, request_bytes("GET", "/health", port)).status == 200
    assert "Busy: 6 connections open" in guarded.log()


@pytest.fixture
def uncapped(embedded_model, tmp_path_factory):
    process = start_serve(tmp_path_factory)
    process.extra["port"] = int(process.url.rsplit(":", 1)[1].split("/")[0])
    yield process
    stop_process(process)


def test_a_client_hanging_up_stops_a_non_streamed_reply(uncapped) -> None:
    port = uncapped.extra["port"]
    # Sampling that never settles: thousands of tokens (minutes) unless it is stopped.
    endless = {
        "messages": [{"role": "user", "content": "Write a very long story."}],
        **{"max_tokens": 3000, "temperature": 2.0, "min_p": 0, "top_k": 0, "top_p": 1, "repetition": "off"},
    }
    data = request_bytes(
        "POST", "/v1/chat/completions", port, json.dumps(endless).encode(), [("Content-Type", "application/json")]
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        time.sleep(2)  # the reply is being written
    started = time.monotonic()
    client = openai.OpenAI(base_url=uncapped.url, api_key="x", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model="embedded", messages=HELLO, max_tokens=1)
    client.close()
    assert reply.choices[0].message.content is not None
    assert time.monotonic() - started < 10, "the engine went on with the reply nobody waits for"
    assert "client gone, reply stopped" in uncapped.log()


# ---- requests a server must refuse cleanly --------------------------------------------


def test_the_log_escapes_control_characters(guarded) -> None:
    port = guarded.extra["port"]
    answer = exchange(port, request_bytes("GET", "/x\x1b[2J\x07", port))
    assert answer.status == 404
    log = guarded.log()
    assert "/x\\x1b[2J\\x07" in log and "\x1b" not in log and "\x07" not in log


def test_nan_and_infinities_are_refused(guarded) -> None:
    port = guarded.extra["port"]
    for name, value in (("temperature", "NaN"), ("min_p", "NaN"), ("top_p", "Infinity"), ("temperature", "1e999")):
        body = json.dumps(quick()).replace("{", f'{{"{name}": {value}, ', 1).encode()
        answer = chat(port, body)
        assert answer.status == 400, (name, value, answer.body)
        assert "not JSON" in answer.error()["message"] or "finite" in answer.error()["message"]


def test_deep_nesting_is_a_400(guarded) -> None:
    port = guarded.extra["port"]
    answer = chat(port, b"[" * 100_000 + b"]" * 100_000)
    assert answer.status == 400 and "nested too deeply" in answer.error()["message"]
    schema: dict = {"type": "string"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    answer = chat(port, quick(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert answer.status == 400 and "nested more than" in answer.error()["message"]


def test_framing_is_strict(guarded) -> None:
    port = guarded.extra["port"]
    body = json.dumps(quick()).encode()
    json_type = ("Content-Type", "application/json")
    twice = [json_type, ("Content-Length", str(len(body))), ("Content-Length", str(len(body)))]
    answer = chat(port, body, twice)
    assert answer.status == 400 and "more than one Content-Length" in answer.error()["message"]
    both = [json_type, ("Transfer-Encoding", "chunked"), ("Content-Length", str(len(body)))]
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = chat(port, chunked, both)
    assert answer.status == 400 and "both Transfer-Encoding and Content-Length" in answer.error()["message"]


def test_every_error_page_is_json(guarded) -> None:
    port = guarded.extra["port"]
    many_headers = [(f"X-Header-{n}", "x") for n in range(150)]
    cases = {
        400: b"NONSENSE\r\n\r\n",
        414: b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        431: request_bytes("GET", "/v1/models", port, headers=many_headers),
        501: request_bytes("PUT", "/v1/models", port),
        505: b"GET / HTTP/3.0\r\n\r\n",
    }
    for status, data in cases.items():
        answer = exchange(port, data)
        assert answer.status == status, (status, answer.body[:200])
        error = answer.error()
        assert error["message"] and error["type"] == ("server_error" if status >= 500 else "invalid_request_error")


def test_max_tokens_caps_a_requests_own(guarded) -> None:
    client = openai.OpenAI(base_url=guarded.url, api_key="x", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model="embedded",
        messages=[{"role": "user", "content": "Write a long story about the sea."}],
        max_tokens=60,
        temperature=0,
    )
    client.close()
    assert reply.usage.completion_tokens <= MAX_TOKENS and reply.choices[0].finish_reason == "length"
