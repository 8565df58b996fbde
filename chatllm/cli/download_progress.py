"""Download progress on stderr: a rich bar (size, speed, time left) on a
terminal, one line per file otherwise, so logs of scripted pulls stay readable
and stdout stays free for results."""

from __future__ import annotations

import sys
import time
from typing import Any

from chatllm.hub.download import format_bytes


class TerminalProgress:
    """A rich progress bar per file; notes are printed above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._task: Any = None  # rich's TaskID

    def start(self, label: str, total: int | None, completed: int) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task(label, total=total, completed=completed)

    def advance(self, byte_count: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, byte_count)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None

    def note(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False)


class PlainProgress:
    """`Downloading NAME (SIZE)…` and `Downloaded NAME: SIZE in Ns (RATE)`."""

    def __init__(self) -> None:
        self._label = ""
        self._started = 0.0
        self._received = 0
        self._missing: int | None = None  # bytes still to come; None when unknown

    def start(self, label: str, total: int | None, completed: int) -> None:
        self._label, self._started, self._received = label, time.monotonic(), 0
        self._missing = None if total is None else total - completed
        size = format_bytes(total) if total is not None else "unknown size"
        resumed = f", resuming at {format_bytes(completed)}" if completed else ""
        self.note(f"Downloading {label} ({size}{resumed})…")

    def advance(self, byte_count: int) -> None:
        self._received += byte_count

    def finish(self) -> None:
        if self._missing is not None and self._received < self._missing:
            return  # interrupted: the error that follows says what happened
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self.note(
            f"Downloaded {self._label}: {format_bytes(self._received)} in {elapsed:.1f}s "
            f"({format_bytes(self._received / elapsed)}/s)"
        )

    def note(self, message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def stderr_progress() -> TerminalProgress | PlainProgress:
    """The progress display that suits stderr right now."""
    return TerminalProgress() if sys.stderr.isatty() else PlainProgress()
