"""Noticing a client that hung up while its request waits.

A streamed reply notices a hang-up when a write fails, but a request still
waiting for a slot, or for its first token, or a reply collected whole before
it is sent, writes nothing for a long while. One watcher thread looks at
every such connection a few times a second and, when its client has gone,
has the engine abandon that request: its slot is free at the next step
(llama-server checks its waiting tasks' connections the same way).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from chatllm.server.connections import peer_closed

# How often the watcher looks: a slot held this long by a gone client at most.
_INTERVAL_S = 0.2


class HangupWatch:
    """Calls `abandon(thread)` for a watched request whose client has gone."""

    def __init__(self, abandon: Callable[[int], None]) -> None:
        self._abandon = abandon
        self._watched: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, connection: socket.socket) -> Iterator[None]:
        """Watch `connection` while the calling thread answers its request."""
        thread = threading.get_ident()
        with self._lock:
            self._watched[thread] = connection
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chatllm-hangups", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(thread, None)

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(_INTERVAL_S):
            with self._lock:
                watched = list(self._watched.items())
            for thread, connection in watched:
                if peer_closed(connection):
                    with self._lock:
                        self._watched.pop(thread, None)
                    self._abandon(thread)
