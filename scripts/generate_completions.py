#!/usr/bin/env python3
"""Regenerate completions/ (bash, zsh, fish) from chatllm's typer app.

    python scripts/generate_completions.py           # rewrite the scripts
    python scripts/generate_completions.py --check   # exit 1 if they are stale

tests/test_completion.py fails when the committed scripts are stale.
"""

import sys

from chatllm.cli.completion_scripts import main

if __name__ == "__main__":
    sys.exit(main())
