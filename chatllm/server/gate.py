"""The base of `chatllm serve`'s request handler: what every connection and
request passes before an endpoint sees it, and how every answer is sent.

* the connection limits (connections.py): a whole request within
  `--timeout`, no silence longer than `--conn-idle`;
* the admission checks (admission.py): framing, Host, Origin, the API key,
  Content-Type, and CORS preflights for allowed origins;
* answers: OpenAI-shaped JSON for every error, the standard library's own
  (a bad request line, an oversize URI, too many headers) included; CORS
  headers for an allowed origin; a log with control characters escaped.

The endpoints (handler.py) subclass `GatedHandler`; a different way of
answering requests (several at once, say) can subclass it the same way.
"""

from __future__ import annotations

import hmac
import io
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from chatllm.server import admission
from chatllm.server.connections import RequestReader, RequestTimeout, peer_closed
from chatllm.server.requests import RequestError

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
    """The client hung up before its answer was sent."""


def error_kind(status: int) -> str:
    """OpenAI's error type for an HTTP status."""
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
    return "server_error" if status >= 500 else kinds.get(status, "invalid_request_error")


class GatedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for plain replies; streams close the connection
    server_version = "chatllm"
    server: ChatHTTPServer
    _cors_origin: str | None = None
    status_sent = 0  # the status of the last answer begun on this connection

    # ---- the connection ----------------------------------------------------------

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

    def client_gone(self) -> bool:
        """Whether the client has hung up (to stop making its answer)."""
        return peer_closed(self.connection)

    # ---- admission -----------------------------------------------------------------

    def admit(self, path: str) -> int | None:
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
            self.send_request_error(error)
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

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server's naming): a browser's CORS preflight
        if self.admit(self.path.split("?", 1)[0]) is None:
            return
        self.send_response(204)
        self.send_header("Allow", "GET, POST, OPTIONS")
        if self._cors_origin:
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def read_body(self, length: int) -> bytes:
        """The body `admit` measured; 408 when it does not arrive in time."""
        try:
            raw = self.rfile.read(length)
        except RequestTimeout as error:
            self.close_connection = True
            raise RequestError(408, f"{error}; the connection is closed", code="request_timeout") from None
        if len(raw) < length:
            raise ClientGone("the client hung up before its request's end")
        return raw

    # ---- answers and the log -------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (a bad request line, an oversize
        URI, too many headers, an unknown method), in OpenAI's JSON shape."""
        if self.request_version in ("HTTP/0.9", ""):
            self.request_version = "HTTP/1.0"  # so the status line and headers are sent
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self.send_request_error(RequestError(code, f"{text}: {explain}" if explain else text, kind=error_kind(code)))

    def end_headers(self) -> None:
        if self._cors_origin:  # an allowed page may read the answer
            self.send_header("Access-Control-Allow-Origin", self._cors_origin)
            self.send_header("Vary", "Origin")
        super().end_headers()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status_sent = code  # for the server's metrics
        super().send_response(code, message)

    def send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_request_error(self, error: RequestError) -> None:
        self.send_json(error.status, error.payload(), error.headers)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {(format % args).translate(_ESCAPES)}\n")
