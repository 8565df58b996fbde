"""Running a local tool's command: never through a shell, within a time
limit, its output capped.

The arguments reach the program as JSON on its standard input, and an argv
item that is exactly `{name}` becomes that argument's value, as one item: a
value holding `; rm -rf ~` or `$(...)` is text the program receives, never
something a shell reads. The program runs in a process group of its own, so
a timeout kills what it started too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from chatllm.tools.declarations import Tool
from chatllm.tools.limits import MAX_RESULT_BYTES

_STDERR_TAIL = 2000  # of a failing tool's stderr, what the model and the user see


@dataclass(frozen=True)
class Outcome:
    """What a tool call returned, as the model reads it."""

    content: str
    is_error: bool = False
    seconds: float = 0.0
    # Where the tool itself is gone (an MCP server that died): said to the user too, once.
    gone: bool = False


def capped(text: str, limit: int = MAX_RESULT_BYTES, total: int | None = None) -> str:
    """`text` cut to `limit` bytes of UTF-8, with a note saying so."""
    data = text.encode("utf-8")
    total = len(data) if total is None else total
    if total <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[cut: the tool returned {total} bytes; only the first {limit} are shown]"


def argv_for(tool: Tool, arguments: dict[str, Any]) -> list[str]:
    """The command with `{name}` items replaced by the arguments' values."""
    argv = list(tool.command)
    for index, item in enumerate(argv[1:], start=1):
        if len(item) > 2 and item[0] == "{" and item[-1] == "}" and item[1:-1] in tool.argv_arguments:
            value = arguments.get(item[1:-1], "")
            argv[index] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return argv


class _Reader(threading.Thread):
    """Reads a pipe to its end, keeping at most `limit` bytes (and counting
    the rest), so a tool printing without end never fills memory or blocks."""

    def __init__(self, pipe: IO[bytes], limit: int, on_overflow: Any = None) -> None:
        super().__init__(daemon=True)
        self.pipe, self.limit, self.on_overflow = pipe, limit, on_overflow
        self.data = bytearray()
        self.total = 0

    def run(self) -> None:
        while chunk := self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536):
            self.total += len(chunk)
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            elif self.on_overflow is not None:
                self.on_overflow()  # nothing more will be kept: stop the tool now
                self.on_overflow = None

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


def run_command(tool: Tool, arguments: dict[str, Any]) -> Outcome:
    """Run a local tool once. Every failure (no such program, a timeout, a
    non-zero exit) is an Outcome with `is_error`, for the model to read."""
    started = time.perf_counter()
    argv = argv_for(tool, arguments)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tool.cwd,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except FileNotFoundError:
        return Outcome(f"cannot run tool '{tool.name}': there is no program '{argv[0]}'", True, 0.0)
    except OSError as error:
        return Outcome(f"cannot run tool '{tool.name}': {error.strerror or error}", True, 0.0)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stdout = _Reader(process.stdout, MAX_RESULT_BYTES + 1, lambda: _kill(process))
    stderr = _Reader(process.stderr, 64 * 1024)
    stdout.start()
    stderr.start()
    try:
        process.stdin.write(json.dumps(arguments, ensure_ascii=False).encode("utf-8"))
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # a tool that takes its arguments from argv may not read stdin at all
    timed_out = False
    try:
        process.wait(timeout=tool.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
        process.wait()
    stdout.join(5)
    stderr.join(5)
    seconds = time.perf_counter() - started
    return _outcome(tool, process.returncode, stdout, stderr, timed_out, seconds)


def _outcome(tool: Tool, status: int, stdout: _Reader, stderr: _Reader, timed_out: bool, seconds: float) -> Outcome:
    output = capped(stdout.text(), MAX_RESULT_BYTES, stdout.total)
    if timed_out:
        return Outcome(f"tool '{tool.name}' did not finish within {tool.timeout_s:g} s and was stopped", True, seconds)
    if stdout.total > MAX_RESULT_BYTES:
        return Outcome(output, False, seconds)  # stopped on purpose once the cap was reached
    if status != 0:
        detail = (stderr.text().strip() or output.strip())[-_STDERR_TAIL:]
        why = f"was stopped by signal {-status}" if status < 0 else f"exited with status {status}"
        return Outcome(f"tool '{tool.name}' {why}" + (f": {detail}" if detail else ""), True, seconds)
    return Outcome(output, False, seconds)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
