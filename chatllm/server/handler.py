"""`chatllm serve`'s request handler: the OpenAI-compatible endpoints on the
standard library's `http.server` (http.py listens and hands it connections).

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`
(with and without `stream`), `GET /health`; with an API key, every endpoint
but /health needs `Authorization: Bearer KEY`.

Before a request is handled it passes the connection limits (connections.py:
its time to arrive, the cap on connections) and the admission checks
(admission.py: framing, Host, Origin, the key, Content-Type); the endpoints
below see only requests that passed. Every answer, errors included, is JSON.
"""

from __future__ import annotations

import hmac
import io
import json
import sys
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from chatllm.engine.base import Stream
from chatllm.engine.reasoning import Reasoning
from chatllm.errors import ChatLLMError
from chatllm.server import admission
from chatllm.server.connections import RequestReader, RequestTimeout, peer_closed
from chatllm.server.openai_json import chunk_json, completion_json, finish_reason, timings_json, usage_json
from chatllm.server.requests import RequestError
from chatllm.server.service import ChatRequest

if TYPE_CHECKING:
    from chatllm.server.http import ChatHTTPServer

MAX_BODY_BYTES = 32 * 1024 * 1024
# A refused request's body up to this size is read and dropped, so the client
# reads the refusal instead of a reset connection; a larger one closes it.
DISCARD_BYTES = 1024 * 1024

# Control characters in logged text (a request line is the client's) are
# written as escapes, so a request cannot drive the terminal the log goes to.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


class ClientGone(ConnectionError):
    """The client hung up while its reply was being made."""


def _error_kind(status: int) -> str:
    """OpenAI's error type for an HTTP status."""
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
    return "server_error" if status >= 500 else kinds.get(status, "invalid_request_error")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for plain replies; streams close the connection
    server_version = "chatllm"
    server: ChatHTTPServer
    _cors_origin: str | None = None

    # ---- the connection: limits and framing ------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.conn_idle_s)  # what every read and write may wait
        self.rfile.close()  # the socket's own reader, replaced by one that keeps the time limits
        self._reader = RequestReader(self.connection, self.server.limits)
        self._input = io.BufferedReader(self._reader)
        self.rfile = self._input

    def handle_one_request(self) -> None:
        self._cors_origin = None
        self._reader.start_request()
        try:
            if not self._input.peek(1):  # the client closed its kept-alive connection
                self.close_connection = True
                return
        except (TimeoutError, OSError):  # silent for --conn-idle: close without a word
            self.close_connection = True
            return
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not accepted")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (a bad request line, an oversize
        URI, too many headers, an unknown method), in OpenAI's JSON shape."""
        if self.request_version in ("HTTP/0.9", ""):
            self.request_version = "HTTP/1.0"  # so the status line and headers are sent
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._send_error(RequestError(code, f"{text}: {explain}" if explain else text, kind=_error_kind(code)))

    def _admit(self, path: str) -> int | None:
        """Check a request before it is handled: its framing, who sent it (Host,
        Origin), its key and its Content-Type. The length of its body, or None
        once a refusal is sent."""
        length = None
        try:
            post = self.command == "POST"
            length = admission.body_length(self.headers, MAX_BODY_BYTES, required=post)
            admission.check_host(self.server.access, self.headers.get_all("Host"))
            self._cors_origin = admission.check_origin(
                self.server.access, self.headers.get("Origin"), self.server.server_address[1]
            )
            if self.command != "OPTIONS":  # a CORS preflight never carries the key
                self._check_key(path)
            if post:
                admission.check_content_type(self.headers.get("Content-Type"))
        except RequestError as error:
            self._skip_body(length)
            self._send_error(error)
            return None
        if length and not post:
            self.close_connection = True  # a body nobody reads would be taken for the next request
        return length

    def _skip_body(self, length: int | None) -> None:
        """Read and drop the body of a refused request, or close the connection."""
        if length is None or length > DISCARD_BYTES:
            self.close_connection = True
        elif length:
            try:
                self.rfile.read(length)
            except OSError:
                self.close_connection = True

    def _check_key(self, path: str) -> None:
        """Every endpoint but /health needs `Authorization: Bearer KEY` when the
        server has a key (compared in constant time; the key is never logged)."""
        key = self.server.service.api_key
        if key is None or path == "/health":
            return
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return
        raise RequestError(
            401,
            "a valid API key is needed: send 'Authorization: Bearer KEY'",
            kind="authentication_error",
            code="invalid_api_key",
        )

    # ---- the endpoints -------------------------------------------------------------

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server's naming): a browser's CORS preflight
        if self._admit(self._path()) is None:
            return
        self.send_response(204)
        self.send_header("Allow", "GET, POST, OPTIONS")
        if self._cors_origin:
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        service = self.server.service
        if self._admit(path) is None:
            return
        if path == "/v1/models":
            self._send_json(200, service.models())
        elif path.startswith("/v1/models/"):
            name = path.removeprefix("/v1/models/")
            entry = service.model_entry(name)
            if entry is None:
                self._send_error(RequestError(404, f"model '{name}' does not exist", code="model_not_found"))
            else:
                self._send_json(200, entry)
        elif path == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_error(RequestError(404, f"no such endpoint: GET {path or '/'}", kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        length = self._admit(path)
        if length is None:
            return
        try:
            body = self._read_json(length)
            if path != "/v1/chat/completions":
                raise RequestError(404, f"no such endpoint: POST {path or '/'}", kind="not_found_error")
            self._chat(body)
        except RequestError as error:
            self._send_error(error)
        except (ConnectionError, TimeoutError) as error:  # the client hung up, or stopped reading
            self.log_message("client gone, reply stopped: %s", str(error) or type(error).__name__)
            self.close_connection = True
        except ChatLLMError as error:  # the engine failed mid-reply
            self._send_error(RequestError(500, str(error), kind="server_error"))
        except Exception as error:  # a bug: answer 500 and keep serving
            self.log_error("internal error: %r", error)
            self._send_error(RequestError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error"))

    def _read_json(self, length: int) -> Any:
        try:
            raw = self.rfile.read(length)
        except RequestTimeout as error:
            self.close_connection = True
            raise RequestError(408, f"{error}; the connection is closed", code="request_timeout") from None
        if len(raw) < length:
            raise ClientGone("the client hung up before its request's end")
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except RecursionError:
            raise RequestError(400, "the request body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the request body is not valid JSON: {error}") from None

    def _chat(self, body: Any) -> None:
        service = self.server.service
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        with service.lock:
            if peer_closed(self.connection):  # it hung up while it waited its turn
                raise ClientGone("the client hung up before its turn")
            request = service.prepare(body)
            pieces = service.start(request)
            try:
                if request.stream:
                    self._stream(pieces, request, reply_id, created)
                    return
                parts = []
                for piece in pieces:
                    parts.append(piece)
                    if peer_closed(self.connection):  # as a stream notices when a write fails
                        raise ClientGone("the client hung up")
                text = "".join(p for p in parts if not isinstance(p, Reasoning))
                thinking = "".join(p for p in parts if isinstance(p, Reasoning))
                if service.stopping.is_set():
                    raise RequestError(
                        503, "the server is shutting down; this reply was cut short", kind="server_error"
                    )
                self._send_json(
                    200, completion_json(reply_id, created, request.model, text, service.last_stats, thinking)
                )
            finally:
                pieces.close()  # stops the engine, whether the reply ended or not

    def _stream(self, pieces: Stream, request: ChatRequest, reply_id: str, created: int) -> None:
        service = self.server.service
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
        try:
            for piece in pieces:
                field = "reasoning_content" if isinstance(piece, Reasoning) else "content"
                send({**chunk_json(reply_id, created, request.model, {field: str(piece)}), **extra})
        except ChatLLMError as error:  # headers are gone: report it the way llama-server does
            send({"error": {"message": str(error), "type": "server_error"}})
            return
        if service.stopping.is_set():
            return  # no [DONE]: the client learns the reply was cut short
        stats = service.last_stats
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

    # ---- answers and the log -------------------------------------------------------

    def end_headers(self) -> None:
        if self._cors_origin:  # an allowed page may read the answer
            self.send_header("Access-Control-Allow-Origin", self._cors_origin)
            self.send_header("Vary", "Origin")
        super().end_headers()

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        self._send_json(error.status, error.payload())

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {(format % args).translate(_ESCAPES)}\n")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
