"""serve's bounded queue, /health and /metrics on the fake engine, in this
process over real HTTP: past --parallel + --queue requests a client hears 503
with Retry-After at once, and the server says what it is doing."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx

from chatllm.engine.fake import FakeEngine
from chatllm.server import http as server
from chatllm.server.capacity import Capacity
from chatllm.server.connections import asks_for_completion


class SlowEngine(FakeEngine):
    """Each reply waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def stream(self, messages, params):
        self.started.release()
        self.release.wait(30)
        return super().stream(messages, params)


def serving(engine: FakeEngine, capacity: Capacity):
    http = server.bind("127.0.0.1", 0)
    http.service = server.ChatService(engine, "fake.gguf", concurrent=True, capacity=capacity)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return http, server.base_url(http).removesuffix("/v1")


def ask(base: str) -> httpx.Response:
    body = {"model": "fake.gguf", "messages": [{"role": "user", "content": "hello there"}]}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)


def test_past_parallel_and_queue_a_request_gets_503_with_retry_after_at_once() -> None:
    engine = SlowEngine()
    http, base = serving(engine, Capacity(parallel=1, queue=1))
    try:
        held = [threading.Thread(target=ask, args=(base,)) for _ in range(2)]
        for thread in held:
            thread.start()
        assert engine.started.acquire(timeout=10) and engine.started.acquire(timeout=10)
        assert httpx.get(f"{base}/health").json()["requests"] == {"in_flight": 2, "waiting": 1}
        began = time.monotonic()
        refused = ask(base)
        assert time.monotonic() - began < 1.0
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "server_busy" and refused.json()["error"]["type"] == "server_error"
        assert int(refused.headers["Retry-After"]) >= 1
        engine.release.set()
        for thread in held:
            thread.join(10)
        assert ask(base).status_code == 200  # a place is free again
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.headers["Content-Type"].startswith("text/plain")
        assert 'chatllm_requests_total{status="503"} 1.0' in metrics.text
        assert 'chatllm_requests_total{status="200"} 3.0' in metrics.text
        assert "chatllm_requests_in_flight 0.0" in metrics.text
    finally:
        engine.release.set()
        http.shutdown()
        http.server_close()


def test_a_completion_past_the_queue_is_refused_by_the_accepting_thread() -> None:
    """While every place is taken, a chat completion whose request line has
    arrived is answered by the thread that accepted it: the answer is there
    when the accept returns, no handler thread involved. /health still answers."""
    engine = SlowEngine()
    http, base = serving(engine, Capacity(parallel=1, queue=0))
    client, accepted = socket.socketpair()
    try:
        held = threading.Thread(target=ask, args=(base,))
        held.start()
        assert engine.started.acquire(timeout=10)
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        http.process_request(accepted, ("127.0.0.1", 9))  # what serve_forever does with a new connection
        client.setblocking(False)
        head, body = client.recv(65536).split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: " in head
        assert json.loads(body)["error"]["code"] == "server_busy"
        assert httpx.get(f"{base}/health").json()["requests"] == {"in_flight": 1, "waiting": 0}
        assert 'chatllm_requests_total{status="503"} 1.0' in httpx.get(f"{base}/metrics").text
    finally:
        engine.release.set()
        client.close()
        http.shutdown()
        http.server_close()


def test_health_reports_slots() -> None:
    http, base = serving(FakeEngine(), Capacity(parallel=2, queue=0))
    try:
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "ok"
        assert health["slots"]["busy"] == 0 and health["requests"] == {"in_flight": 0, "waiting": 0}
    finally:
        http.shutdown()
        http.server_close()


def test_peeking_at_a_silent_connection_never_waits() -> None:
    # The accepting thread peeks at a request's first line; a socket with a
    # timeout (a library may set a default one) made CPython wait for data first.
    ours, client = socket.socketpair()
    with ours, client:
        ours.settimeout(2.0)
        started = time.monotonic()
        assert not asks_for_completion(ours)
        assert time.monotonic() - started < 0.5
        assert ours.gettimeout() == 2.0  # left as the handler's thread expects it
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert asks_for_completion(ours)
        assert ours.recv(4) == b"POST"  # peeked, not read
