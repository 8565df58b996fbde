"""Asking the person at the terminal, once for all commands: whether anyone
can answer, a yes/no question, and what the model hub needs from the CLI
(questions, download progress, notes), so the core never prints or asks."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatllm.hub.resolve import Interaction


def can_ask() -> bool:
    """A person is there to answer: stdin and stderr are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm(question: str, default: bool) -> bool:
    """A yes/no question on stderr; Enter gives `default`."""
    from rich.console import Console
    from rich.prompt import Confirm

    return Confirm.ask(question, console=Console(stderr=True), default=default)


def hub_interaction() -> Interaction:
    """Downloading a model a command needs: asked first (yes by default, since
    the command cannot run without it), progress and notes on stderr."""
    from chatllm.cli.download_progress import stderr_progress
    from chatllm.hub.resolve import Interaction
    from chatllm.render import notice

    return Interaction(
        confirm=(lambda question: confirm(question, default=True)) if can_ask() else None,
        progress=stderr_progress(),
        notify=notice,
    )
