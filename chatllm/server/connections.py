"""`chatllm serve`'s limits on connections, applied before a request is read
(so before authentication): how long a client may take, how many may be
connected at once, and whether one has hung up.

* A whole request (request line, headers and body) must arrive within
  `timeout_s` of the server starting to wait for it, as llama-server's
  `--timeout` (600 s) bounds a request; a client that sends a byte now and
  then cannot hold its connection for longer.
* No connection may stay silent for more than `conn_idle_s`: not before its
  request's next byte, not while its reply waits to be read (llama-server's
  `--conn-idle`, 60 s).
* At most `max_connections` are served at once; one more is answered 503 on
  the accepting thread and closed, so it costs no thread.

These see sockets, not requests: a different way of answering requests
(several at once, say) keeps them as they are. gate.py applies them.
"""

from __future__ import annotations

import io
import json
import select
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The connection limits; `chatllm serve --timeout/--conn-idle/--max-connections`."""

    timeout_s: float = 600.0
    conn_idle_s: float = 60.0
    # Each connection holds a thread; past this many a client gets 503 and the
    # OpenAI SDKs retry. 64 is well above the requests the engine takes at
    # once with those waiting (serve's --parallel + --queue, 20 by default),
    # and few enough threads to stay cheap.
    max_connections: int = 64


class RequestTimeout(TimeoutError):
    """A request that did not arrive in full within the limits. A TimeoutError,
    so http.server drops the connection when it happens before the body."""


class RequestReader(io.RawIOBase):
    """A connection's socket as the handler reads requests from it (wrapped in
    a BufferedReader as `rfile`): every read waits at most `conn_idle_s`, and
    none goes past the deadline `start_request` sets."""

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        super().__init__()
        self._sock = sock
        self._limits = limits
        self._deadline: float | None = None

    def readable(self) -> bool:
        return True

    def start_request(self) -> None:
        """The server starts waiting for a request: it has `timeout_s` from now."""
        self._deadline = time.monotonic() + self._limits.timeout_s

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        idle = self._limits.conn_idle_s
        left = self._deadline - time.monotonic() if self._deadline is not None else idle
        if left <= 0:
            raise RequestTimeout(f"the request did not arrive within {self._limits.timeout_s:g} s")
        self._sock.settimeout(min(idle, left))
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            if left < idle:
                raise RequestTimeout(f"the request did not arrive within {self._limits.timeout_s:g} s") from None
            raise RequestTimeout(f"the client sent nothing for {idle:g} s") from None
        finally:
            self._sock.settimeout(idle)  # what writes to the client may wait


def peer_closed(sock: socket.socket) -> bool:
    """Whether the client has hung up: its side of the connection reads as
    closed (end of file or reset). Data it sent ahead is not a hang-up."""
    try:
        if hasattr(select, "poll"):  # no limit on the descriptor's number, unlike select()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            readable = bool(poller.poll(0))
        else:
            readable = bool(select.select([sock], [], [], 0)[0])
        # A readable socket answers at once: b"" is its end of file.
        return readable and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


def error_response(status: str, payload: dict, headers: dict[str, str]) -> bytes:
    """A whole HTTP error response (`status` as "503 Service Unavailable"), small
    enough for a fresh socket's send buffer, after which the connection closes."""
    body = json.dumps(payload).encode()
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode() + body


def busy_response(limit: int) -> bytes:
    """What a connection past the cap gets before it is closed."""
    message = f"the server is busy: {limit} connections are open, its most (--max-connections); try again"
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": "too_many_connections"}}
    return error_response("503 Service Unavailable", payload, {"Retry-After": "1"})


# How a chat completion's request begins: what the accepting thread looks for
# to refuse one while the server is full, without a thread or a parse.
COMPLETION_REQUEST_LINE = b"POST /v1/chat/completions "


def asks_for_completion(sock: socket.socket) -> bool:
    """Whether what the client has sent so far begins a chat completion's
    request (peeked at, not read; False if nothing has arrived yet)."""
    # Non-blocking, not only MSG_DONTWAIT: with a socket timeout (a default
    # one, set by any library) CPython waits for data before it calls recv.
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        head = sock.recv(len(COMPLETION_REQUEST_LINE), socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing yet (BlockingIOError), or the client is gone
        return False
    finally:
        sock.settimeout(timeout)  # as the handler's thread expects it
    return head == COMPLETION_REQUEST_LINE


def answer_at_once(sock: socket.socket, response: bytes) -> None:
    """Send `response` without waiting on the client (it may not read), then
    read what it sent so far: closing a socket with unread data resets the
    connection, which can lose the answer on its way."""
    try:
        sock.setblocking(False)
        sock.send(response)
        for _ in range(16):  # a request's head and a small body; the rest may reset
            if not sock.recv(65536):
                break
    except OSError:
        pass  # nothing more to read now, or it is closed either way


def refuse_busy(sock: socket.socket, limit: int) -> None:
    """Answer 503 at once: `limit` connections are open."""
    answer_at_once(sock, busy_response(limit))
