"""The `chatllm` script: starts an early model load (early_load.py) before
anything heavy is imported, then runs the typer app."""

from __future__ import annotations

import sys

from chatllm import __version__
from chatllm.cli import early_load  # light: threading and pathlib; the model load itself is lazy


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # answered before typer and the commands are imported
        print(f"chatllm {__version__}")
        return
    if len(sys.argv) > 1 and sys.argv[1] in early_load.GENERATING_COMMANDS:
        early_load.start(sys.argv[1:])
    from chatllm.cli.app import main as run_app

    run_app()
