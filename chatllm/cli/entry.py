"""The `chatllm` script: starts an early model load (early_load.py) before
anything heavy is imported, then runs the typer app."""

from __future__ import annotations

import sys

# Commands that load a model; for any other, nothing extra is even imported.
GENERATING_COMMANDS = frozenset({"summarize", "translate", "run", "chat", "classify", "extract"})


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in GENERATING_COMMANDS:
        from chatllm.cli import early_load

        early_load.start(sys.argv[1:])
    from chatllm.cli.app import main as run_app

    run_app()
