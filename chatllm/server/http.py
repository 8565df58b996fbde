"""`chatllm serve` over HTTP: the OpenAI-compatible endpoints on the standard
library's `http.server`.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`
(with and without `stream`), `GET /health`; with an API key, every endpoint
but /health needs `Authorization: Bearer KEY`.

The engine serves one reply at a time anyway (a llama.cpp context is not
thread-safe), so requests take turns on one lock and an async framework would
buy nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chatllm.errors import ChatLLMError
from chatllm.reply.events import Finish, Reasoning, Text
from chatllm.reply.pipeline import Events
from chatllm.server.openai_json import chunk_json, completion_json, finish_reason, timings_json, usage_json
from chatllm.server.requests import RequestError
from chatllm.server.service import ChatRequest, ChatService

MAX_BODY_BYTES = 32 * 1024 * 1024


class ServeError(ChatLLMError):
    """The server cannot start (e.g. the port is taken)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for plain replies; streams close the connection
    server_version = "chatllm"
    server: ChatHTTPServer

    def _authorized(self, path: str) -> bool:
        """Every endpoint but /health needs `Authorization: Bearer KEY` when the
        server has a key (compared in constant time; the key is never logged).
        Answers 401 itself when it is missing or wrong."""
        key = self.server.service.api_key
        if key is None or path == "/health":
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return True
        self._send_error(
            RequestError(
                401,
                "a valid API key is needed: send 'Authorization: Bearer KEY'",
                kind="authentication_error",
                code="invalid_api_key",
            )
        )
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        service = self.server.service
        if not self._authorized(path):
            return
        if path == "/v1/models":
            self._send_json(200, service.models())
        elif path.startswith("/v1/models/"):
            entry = service.model_entry(path.removeprefix("/v1/models/"))
            if entry is None:
                self._send_error(
                    RequestError(
                        404, f"model '{path.removeprefix('/v1/models/')}' does not exist", code="model_not_found"
                    )
                )
            else:
                self._send_json(200, entry)
        elif path == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_error(RequestError(404, f"no such endpoint: GET {path or '/'}", kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized(path):
            self.close_connection = True  # the body was not read
            return
        try:
            body = self._read_json()
            if path != "/v1/chat/completions":
                raise RequestError(404, f"no such endpoint: POST {path or '/'}", kind="not_found_error")
            self._chat(body)
        except RequestError as error:
            self._send_error(error)
        except ConnectionError:  # the client hung up; the engine was already stopped
            self.close_connection = True
        except ChatLLMError as error:  # the engine failed mid-reply
            self._send_error(RequestError(500, str(error), kind="server_error"))
        except Exception as error:  # a bug: answer 500 and keep serving
            self.log_error("internal error: %r", error)
            self._send_error(RequestError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error"))

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(411, "the request needs a Content-Length header")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(413, f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the request body is not valid JSON: {error}") from None

    def _chat(self, body: Any) -> None:
        service = self.server.service
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        with service.lock:
            request = service.prepare(body)
            events = service.start(request)
            try:
                if not request.stream:
                    self._complete(events, request, reply_id, created)
                else:
                    self._stream(events, request, reply_id, created)
            finally:
                events.close()

    def _complete(self, events: Events, request: ChatRequest, reply_id: str, created: int) -> None:
        text, thinking, finish = [], [], None
        for event in events:
            if type(event) is Text:
                text.append(event.text)
            elif type(event) is Reasoning:
                thinking.append(event.text)
            elif type(event) is Finish:
                finish = event
        if finish is None:  # the server is shutting down (service.stopping)
            raise RequestError(503, "the server is shutting down; this reply was cut short", kind="server_error")
        reply = completion_json(reply_id, created, request.model, "".join(text), finish.stats, "".join(thinking))
        self._send_json(200, reply)

    def _stream(self, events: Events, request: ChatRequest, reply_id: str, created: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        extra = {"usage": None} if request.include_usage else {}

        def send(event: dict[str, Any] | str) -> None:
            data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        send({**chunk_json(reply_id, created, request.model, {"role": "assistant", "content": ""}), **extra})
        finish = None
        try:
            for event in events:
                if isinstance(event, Text | Reasoning):
                    field = "content" if type(event) is Text else "reasoning_content"
                    send({**chunk_json(reply_id, created, request.model, {field: event.text}), **extra})
                elif type(event) is Finish:
                    finish = event
        except ChatLLMError as error:  # headers are gone: report it the way llama-server does
            send({"error": {"message": str(error), "type": "server_error"}})
            return
        if finish is None:
            return  # the server is shutting down; no [DONE]: the client learns the reply was cut short
        stats = finish.stats
        send({**chunk_json(reply_id, created, request.model, {}, finish_reason(stats)), **extra})
        if request.include_usage:
            send(
                {
                    "id": reply_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": request.model,
                    "choices": [],
                    "usage": usage_json(stats),
                    "timings": timings_json(stats),
                }
            )
        send("[DONE]")

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        self._send_json(error.status, error.payload())

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class ChatHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that never hangs up does not keep chatllm alive
    service: ChatService


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> ChatHTTPServer:
    """A listening server (port 0 picks a free one); set `.service` before `run`."""
    try:
        return ChatHTTPServer((host, port), _Handler)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def base_url(server: ChatHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    return f"http://{host}:{port}/v1"


def run(server: ChatHTTPServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly and return."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.server_close()
        # Free the engine once the running reply (if any) has stopped; one stuck
        # in a long prefill is left to the process exit rather than freed under it.
        server.service.stopping.set()
        if server.service.lock.acquire(timeout=10):
            server.service.engine.close()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
