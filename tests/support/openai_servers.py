"""OpenAI-compatible servers for tests, all on 127.0.0.1.

* `ScriptedServer`: a tiny stand-in whose answers each test writes (status,
  SSE lines, stalls, dropped connections), for the faults a real server has.
* `start_process` / `stop_process`: a real server (llama-cpp-python's
  `llama_cpp.server`, or `chatllm serve`) as a subprocess, ready once its
  `/v1/models` answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

# ---- a scripted stand-in --------------------------------------------------------


@dataclass
class Exchange:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


Responder = Callable[["ScriptedHandler", Any], None]


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(None)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self._dispatch(json.loads(raw) if raw else None)

    def _dispatch(self, body: Any) -> None:
        path = self.path.split("?", 1)[0]
        self.server.exchanges.append(Exchange(self.command, path, dict(self.headers), body))
        responder = self.server.routes.get((self.command, path))
        if responder is None:
            self.send_json(404, {"detail": "Not Found"})
        else:
            responder(self, body)

    # What responders use -------------------------------------------------------

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def send_lines(self, *lines: str) -> None:
        self.wfile.write("".join(line + "\n" for line in lines).encode())
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.routes: dict[tuple[str, str], Responder] = {}
        self.exchanges: list[Exchange] = []
        self.release = threading.Event()  # ends every stall
        self.routes[("GET", "/v1/models")] = lambda h, body: h.send_json(
            200, {"object": "list", "data": [{"id": "stub", "object": "model"}]}
        )
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def route(self, method: str, path: str, responder: Responder) -> None:
        self.routes[(method, path)] = responder

    def requests_to(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.path == path]

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    """One `data:` line of an OpenAI chat.completion.chunk."""
    delta = {"content": content} if content is not None else {}
    event = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(event)}\n"


def streaming(*lines: str) -> Responder:
    """A responder that streams `lines` (each already `data: ...\\n` or raw)."""

    def respond(handler: ScriptedHandler, body: Any) -> None:
        handler.start_stream()
        handler.send_lines(*lines)

    return respond


# ---- real servers in subprocesses ----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str  # the /v1 base URL
    log_path: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""
        except OSError:
            return ""


def start_process(
    command: list[str],
    port: int,
    log_path,
    env: dict[str, str] | None = None,
    ready_within_s: float = 180,
    ready_path: str = "/v1/models",
) -> ServerProcess:
    """Start `command` and return once GET `ready_path` answers 200 (polled, up
    to `ready_within_s`); fail with the server's log if it dies or never answers.
    A server with an API key is ready when /health answers."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env if env is not None else dict(os.environ),
            # A shell that started pytest in the background ignores SIGINT; the
            # server must not inherit that, or Ctrl-C tests could not stop it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}/v1", log_path)
    deadline = time.monotonic() + ready_within_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready:\n{server.log()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process(server)
            raise RuntimeError(f"server not ready within {ready_within_s} s:\n{server.log()}")
        time.sleep(0.1)  # polling interval, not a wait for something to happen


def stop_process(server: ServerProcess, sig: int = signal.SIGTERM, within_s: float = 30) -> int:
    """Signal the server and return its exit code (killing it if it hangs)."""
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(within_s)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode
