"""How many chat completions `chatllm serve` takes on at once, and what the
rest are told.

`--parallel N` requests are generated together (engine/scheduler.py); up to
`--queue M` more wait for a slot. Past that a request is answered 503 with
`Retry-After` at once, as ollama answers past `OLLAMA_MAX_QUEUE`: a client
told to come back later can try another server or back off, one left in an
unbounded queue holds a connection and memory for as long as the queue is.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from chatllm.server.request_error import RequestError

# Measured on this project's 2-core CPU host (benchmarks/README.md, "Serving
# several clients"): llama.cpp decodes four sequences in one batch at 1.8x the
# tokens per second of one (Qwen2.5-Coder-1.5B), while each client still
# reads faster than it would wait its turn; LM Studio and llama-server's
# automatic setting also run 4.
DEFAULT_PARALLEL = 4
# Requests waiting beyond the busy slots: four rounds of four replies.
DEFAULT_QUEUE = 16
# What Retry-After says before any request has finished (seconds).
_FIRST_GUESS_S = 5.0


class ServerBusy(Exception):
    """Every slot is busy and the queue is full (the server answers 503)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def as_request_error(self) -> RequestError:
        headers = {"Retry-After": str(self.retry_after)}
        return RequestError(503, str(self), kind="server_error", code="server_busy", headers=headers)


class Capacity:
    """Counts the chat completions in flight (generating or waiting); thread-safe."""

    def __init__(self, parallel: int, queue: int) -> None:
        self.parallel = parallel
        self.queue = queue
        self.in_flight = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._mean_s = _FIRST_GUESS_S  # a moving average of how long a request takes

    @property
    def limit(self) -> int:
        return self.parallel + self.queue

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold a place while a request is handled; ServerBusy at once when
        every slot is busy and the queue is full."""
        with self._lock:
            if self.in_flight >= self.limit:
                self.refused += 1
                raise self._busy()
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    @property
    def full(self) -> bool:
        """Every slot is busy and the queue is full (a glance, without the lock)."""
        return self.in_flight >= self.limit

    def refuse(self) -> ServerBusy | None:
        """Count a refusal and say why, if the server is still full (None: a
        place came free, and the request is to be admitted as usual)."""
        with self._lock:
            if self.in_flight < self.limit:
                return None
            self.refused += 1
            return self._busy()

    def _busy(self) -> ServerBusy:
        return ServerBusy(
            f"the server is busy: {self.parallel} requests are being answered and {self.queue} are waiting; "
            "try again later",
            self._retry_after(),
        )

    def finished(self, seconds: float) -> None:
        """A request took `seconds`: what Retry-After estimates from."""
        with self._lock:
            self._mean_s = 0.8 * self._mean_s + 0.2 * seconds

    def _retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, served
        `parallel` at a time (at least 1, at most a minute)."""
        rounds = max(1, self.in_flight - self.parallel + 1) / self.parallel
        return min(60, max(1, math.ceil(rounds * self._mean_s)))
