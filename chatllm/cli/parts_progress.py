"""Following a job of many parts on stderr (jobs/pacing.py): one line before
its first part says how many parts and how long, then a progress bar on a
terminal, or in a pipe a plain line every few seconds (no escape codes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from chatllm.jobs.pacing import Progress, ProgressCallback, duration

# In a pipe (a log file, `2>&1 | tee`), a line at most this often, and the last.
PIPE_LINE_INTERVAL_S = 10.0


@contextmanager
def parts_progress(output_is_live: bool = False) -> Iterator[ProgressCallback]:
    """A callback for a job's Progress. `output_is_live`: the job's own text
    streams to the same terminal meanwhile (a translation), which is progress
    enough: a bar would fight it for the screen, so only the first line is shown."""
    display = _PartsDisplay(sys.stderr, bar=sys.stderr.isatty() and not output_is_live)
    try:
        yield display.update
    finally:
        display.end_bar()


class _PartsDisplay:
    def __init__(self, stream: IO[str], bar: bool) -> None:
        self.stream = stream
        self.use_bar = bar
        self.lines = not stream.isatty()
        self.following = False
        self.bar: Any = None
        self.task: Any = None
        self.last_line_at = 0.0

    def update(self, progress: Progress) -> None:
        if progress.done == 0:
            self.end_bar()
            self.following = progress.worth_saying
            if self.following:
                self._say(progress.announcement())
        if not self.following:
            return
        if self.use_bar:
            self._draw(progress)
        elif self.lines and progress.done:
            now = time.monotonic()
            if progress.done == progress.total or now - self.last_line_at >= PIPE_LINE_INTERVAL_S:
                self.last_line_at = now
                self._say(progress.status())
        if progress.done == progress.total:
            self.end_bar()

    def _say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _draw(self, progress: Progress) -> None:
        left = f"about {duration(progress.seconds_left)} left" if progress.seconds_left is not None else ""
        if self.bar is None:  # rich.progress costs ~20 ms to import: only for long input
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[dim]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("[dim]{task.fields[left]}"),
                console=Console(file=self.stream),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(progress.doing, total=progress.total, left=left)
        self.bar.update(self.task, completed=progress.done, left=left)

    def end_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
