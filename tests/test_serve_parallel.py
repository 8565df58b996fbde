"""`chatllm serve --parallel` on the embedded model, through real HTTP: many
clients at once get their own replies, a persona's prompt is evaluated once
for all its customers, the queue is bounded (503 with Retry-After), a client
that hangs up frees its slot, and /health and /metrics say what happens.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.support.cli import chatllm_command, cli_env
from tests.support.openai_servers import free_port, start_process, stop_process

pytestmark = pytest.mark.slow


def start_serve(tmp_path_factory, *flags: str):
    home = tmp_path_factory.mktemp("serve-parallel")
    env = {key: value for key, value in cli_env().items() if not key.startswith("CHATLLM_")}
    env.update({f"XDG_{name.upper()}_HOME": str(home / name) for name in ("config", "data", "cache")})
    env["CHATLLM_THREADS"] = "1"  # see tests/test_engine_llama.py
    port = free_port()
    command = chatllm_command("serve", "--port", str(port), "-m", "embedded", "--ctx", "1024", *flags)
    process = start_process(command, port, home / "serve.log", env=env)
    process.extra["base"] = f"http://127.0.0.1:{port}"
    return process


@pytest.fixture(scope="module")
def server(embedded_model, tmp_path_factory):
    process = start_serve(tmp_path_factory, "--parallel", "4", "--queue", "4")
    yield process
    stop_process(process)


def code_question(code: str, **extra) -> dict:
    """A request whose answer is `code` (the embedded model gave it for 32 of 32 codes)."""
    return {
        "model": "embedded",
        "temperature": 0,
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": "My order code is QWE12. What is my order code?"},
            {"role": "assistant", "content": "Your order code is QWE12."},
            {"role": "user", "content": f"My order code is {code}. What is my order code?"},
        ],
        **extra,
    }


def post(base: str, body: dict, timeout: float = 240) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=timeout)


def all_at_once(calls):
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def generated_tokens(base: str) -> float:
    metrics = httpx.get(f"{base}/metrics").text
    return float(
        next(line for line in metrics.splitlines() if line.startswith("chatllm_generation_tokens_total")).split()[1]
    )


def idle_slots(base: str, within_s: float = 10.0) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        health = httpx.get(f"{base}/health").json()
        if health["slots"]["busy"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def test_clients_at_once_each_get_their_own_reply(server) -> None:
    base = server.extra["base"]
    codes = [f"{letters}{n}" for letters, n in zip(("AX", "BQ", "CZ", "DM", "EK", "FR", "GT", "HW"), range(11, 99, 11))]
    replies = all_at_once([lambda code=code: post(base, code_question(code)) for code in codes])
    for code, reply in zip(codes, replies):
        assert reply.status_code == 200, reply.text
        text = reply.json()["choices"][0]["message"]["content"]
        assert code in text and not any(other in text for other in codes if other != code), (code, text)
    assert idle_slots(base)["slots"] == {"total": 4, "busy": 0, "states": ["idle"] * 4}


def test_a_personas_prompt_is_evaluated_once_for_all_its_customers(server) -> None:
    base = server.extra["base"]
    questions = ["How long does shipping take?", "Can I return a product?", "Do you ship abroad?"]
    replies = all_at_once(
        [
            lambda q=q: post(base, {"model": "support", "max_tokens": 12, "messages": [{"role": "user", "content": q}]})
            for q in questions
        ]
    )
    usages = [reply.json()["usage"] for reply in replies]
    cached = sorted(usage["prompt_tokens_details"]["cached_tokens"] for usage in usages)
    # One customer's request evaluated the persona's system prompt; the others
    # copied it and evaluated their own question only.
    assert cached[-1] >= 200 and cached[-2] == cached[-1], usages
    assert all(usage["prompt_tokens"] - cached[-1] < 400 for usage in usages[1:]), usages


def test_a_client_that_hangs_up_frees_its_slot(server) -> None:
    base = server.extra["base"]
    body = {
        "model": "embedded",
        "stream": True,
        "max_tokens": 500,
        "temperature": 0,
        "min_p": 0,
        "repetition": "off",  # the guard would end a count as a loop
        "messages": [{"role": "user", "content": "Write the numbers from 1 to 300 separated by spaces."}],
    }
    generated_before = generated_tokens(base)
    clients = [httpx.Client(timeout=120) for _ in range(4)]
    streams = []
    for client in clients:
        stream = client.stream("POST", f"{base}/v1/chat/completions", json=body)
        response = stream.__enter__()
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data:") and '"content": "' in line and '""' not in line)
        streams.append((stream, lines))  # a dropped reader would close its connection now
    assert httpx.get(f"{base}/health").json()["slots"]["busy"] == 4
    for stream, _ in streams:
        stream.__exit__(None, None, None)
    for client in clients:
        client.close()
    assert idle_slots(base)["slots"]["busy"] == 0
    # The replies stopped when their clients left, far short of 4 x 500 tokens.
    assert generated_tokens(base) - generated_before < 1000
    reply = post(base, code_question("ZK77"))
    assert "ZK77" in reply.json()["choices"][0]["message"]["content"]


def test_a_client_that_hangs_up_while_it_waits_leaves_the_queue(embedded_model, tmp_path_factory) -> None:
    one = start_serve(tmp_path_factory, "--parallel", "1", "--queue", "2")
    base = one.extra["base"]
    long = {**code_question("AA11"), "max_tokens": 300, "min_p": 0, "repetition": "off"}
    long["messages"] = [{"role": "user", "content": "Write the numbers from 1 to 300 separated by spaces."}]
    try:
        with (
            httpx.Client(timeout=120) as client,
            client.stream("POST", f"{base}/v1/chat/completions", json={**long, "stream": True}),
        ):
            body = json.dumps(code_question("BB22")).encode()
            waiting = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
            waiting.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10
            while httpx.get(f"{base}/health").json()["requests"]["in_flight"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            waiting.close()
            deadline = time.monotonic() + 5
            while httpx.get(f"{base}/health").json()["requests"]["in_flight"] > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert httpx.get(f"{base}/health").json()["requests"] == {"in_flight": 1, "waiting": 0}
    finally:
        stop_process(one)


def test_past_the_queue_a_request_gets_503_at_once(embedded_model, tmp_path_factory) -> None:
    small = start_serve(tmp_path_factory, "--parallel", "1", "--queue", "1")
    base = small.extra["base"]
    long = {"max_tokens": 200, "min_p": 0}

    def timed(code: str):
        began = time.monotonic()
        reply = post(base, code_question(code, **long))
        return reply, time.monotonic() - began

    try:
        results = all_at_once([lambda code=code: timed(code) for code in ("AA11", "BB22", "CC33", "DD44", "EE55")])
        refused = [(reply, seconds) for reply, seconds in results if reply.status_code == 503]
        answered = [reply for reply, _ in results if reply.status_code == 200]
        assert len(answered) == 2 and len(refused) == 3, [r.status_code for r, _ in results]
        for reply, seconds in refused:
            assert reply.json()["error"]["code"] == "server_busy"
            assert int(reply.headers["Retry-After"]) >= 1
            assert seconds < 5  # at once, not after a turn (a busy 2-core machine is slow to answer anything)
        metrics = httpx.get(f"{base}/metrics").text
        assert 'chatllm_requests_total{status="503"} 3.0' in metrics
        assert 'chatllm_requests_total{status="200"} 2.0' in metrics
        assert "chatllm_time_to_first_token_seconds_count 2.0" in metrics
        assert "chatllm_slots 1.0" in metrics and "process_resident_memory_bytes" in metrics
        # Still serving afterwards.
        assert post(base, code_question("FF66")).status_code == 200
    finally:
        stop_process(small)
