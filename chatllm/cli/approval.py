"""Asking the user, on the terminal, whether a tool call may run (issue 23):
the call is shown (the tool's name and its arguments) and the answer is y/N.
Used only where stdin and stderr are a terminal (cli/running.py); in a pipe
a call that needs approval is refused (tools/toolbox.py says how to allow it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chatllm.render import styling_allowed
from chatllm.reply.tool_loop import call_line

try:
    import termios
except ImportError:  # Windows
    termios = None  # type: ignore[assignment]


def ask_on_terminal(name: str, arguments: dict[str, Any]) -> bool:
    """Whether the user lets `name(arguments)` run: only "y" or "yes" does."""
    shown = call_line(name, arguments).removeprefix("→ ")
    question = f"Run {shown}? [y/N] "
    sys.stderr.write(f"\x1b[1m{question}\x1b[0m" if styling_allowed(sys.stderr) else question)
    sys.stderr.flush()
    with _line_input():
        answer = sys.stdin.readline()
    if not answer.endswith("\n"):  # Ctrl-D
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


@contextmanager
def _line_input() -> Iterator[None]:
    """The terminal echoing a line as it is typed, whatever the caller set
    (the chat REPL hides typing while a reply streams)."""
    if termios is None or not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    line = list(saved)
    line[3] |= termios.ECHO | termios.ICANON
    termios.tcsetattr(fd, termios.TCSANOW, line)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
