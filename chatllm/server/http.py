"""`chatllm serve` over HTTP: the standard library's threading HTTP server,
listening on IPv4 or IPv6, with a cap on connections (connections.py), handing
each connection to the request handler (handler.py).

Each request has a thread; a batched engine (engine/batched.py) takes them all
at once, one that serves one reply at a time takes them in turn, and the
capacity (capacity.py) bounds how many wait. An async framework would buy
nothing: the engine's scheduler thread does the work.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from chatllm.errors import ChatLLMError
from chatllm.server.admission import Access, is_loopback
from chatllm.server.capacity import ServerBusy
from chatllm.server.connections import Limits, answer_at_once, asks_for_completion, error_response, refuse_busy
from chatllm.server.handler import Handler
from chatllm.server.service import ChatService

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h

__all__ = ["Access", "ChatHTTPServer", "ChatService", "Limits", "base_url", "bind", "is_loopback", "run"]


class ServeError(ChatLLMError):
    """The server cannot start (e.g. the port is taken)."""


class ChatHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that never hangs up does not keep chatllm alive
    # The listen backlog. socketserver's default, 5, dropped most of a burst of
    # 200 connections, whose clients then retried after the kernel's 1 s SYN
    # timeout; the kernel caps it at net.core.somaxconn (4096 by default).
    request_queue_size = socket.SOMAXCONN
    service: ChatService

    def __init__(self, host: str, port: int, access: Access, limits: Limits) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.access = access
        self.limits = limits
        self._free = threading.BoundedSemaphore(limits.max_connections)
        self._refusing = False
        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            # `--host ::` takes IPv4 clients too, as 0.0.0.0 with IPv6 (the kernel may default to v6 only).
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer's own server_bind looks the host's name up in DNS, which
        # can stall the start; the name is not used.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, unless `max_connections` are open: then
        a 503 at once, from this (the accepting) thread, and the connection closes."""
        if not self._free.acquire(blocking=False):
            if not self._refusing:  # one line per busy spell, not one per connection
                sys.stderr.write(f"Busy: {self.limits.max_connections} connections open; refusing more (503)\n")
            self._refusing = True
            refuse_busy(request, self.limits.max_connections)
            self.service.metrics.answered(503)
            self.shutdown_request(request)
            return
        self._refusing = False
        # Refused before the handler's checks, as past --max-connections: a
        # busy server says so to whoever reaches it. Not where browser pages are
        # allowed: the handler's 503 carries the CORS headers they need to read it.
        fast = not self.access.allowed_origins
        if fast and self.service.capacity.full and asks_for_completion(request):
            busy = self.service.capacity.refuse()  # None: a place came free meanwhile
            if busy is not None:
                self._refuse_completion(request, busy)
                self._free.release()
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._free.release()
            raise

    def _refuse_completion(self, request: Any, busy: ServerBusy) -> None:
        """Every slot is busy and the queue is full: a chat completion is
        answered 503 from this thread, without a thread of its own or a parse.
        Handled by a thread, each refusal waited its turn behind the others'
        parsing and the model's threads: 200 at once took up to 0.4 s."""
        error = busy.as_request_error()
        answer_at_once(request, error_response("503 Service Unavailable", error.payload(), error.headers))
        self.service.metrics.answered(503)
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._free.release()


def bind(host: str, port: int, access: Access | None = None, limits: Limits | None = None) -> ChatHTTPServer:
    """A listening server (port 0 picks a free one); set `.service` before `run`.
    `host` may be an IPv6 address, with or without brackets."""
    host = host.strip("[]")
    try:
        return ChatHTTPServer(host, port, access or Access(listen_host=host.lower()), limits or Limits())
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def base_url(server: ChatHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def run(server: ChatHTTPServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly and return."""
    _return_large_blocks()
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
        # Free the engine once the running replies (if any) have stopped; one
        # stuck in a long prefill is left to the process exit rather than freed under it.
        server.service.stopping.set()
        if server.service.wait_idle(10):
            server.service.engine.close()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _return_large_blocks() -> None:
    """Have glibc give large freed blocks back to the system at once.

    glibc raises its mmap threshold each time a large block is freed (up to
    32 MB); later blocks below it come from heaps it keeps, one per thread
    arena. A server whose requests come and go on many threads then keeps the
    largest it has seen, per arena: 30 requests with a 0.5 MB persona variable
    (each tokenized, then refused as too long) grew the server by ~150 MB;
    with the threshold fixed at 1 MB, by ~50 MB, most of it the engine's copy
    of the last prompt. Other C libraries have no such heuristic to turn off.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError, TypeError):  # not glibc
        pass
