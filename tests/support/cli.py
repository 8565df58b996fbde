"""The real `chatllm` command in a subprocess, started one way everywhere.

Tests that check what a user sees (exit codes, stdout against stderr, Ctrl-C,
two processes at once) run the CLI as a separate process. They all build the
command and its environment here, so the environment a subprocess gets (the
test's isolated folders, unbuffered output, no inherited terminal width, this
venv's `chatllm` on PATH) is the same for every test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def chatllm_command(*args: str) -> list[str]:
    """`chatllm ARGS…` as this interpreter runs it (no reliance on PATH)."""
    return [sys.executable, "-m", "chatllm", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The current (monkeypatched) environment for a `chatllm` subprocess.

    Output is unbuffered, so a test reading a pipe sees each line when it is
    written; COLUMNS is dropped, so a developer's terminal width does not reach
    the output; the venv's bin folder comes first on PATH, so a plain `chatllm`
    (the installed entry point, as shells call it for completion) is this one.
    `extra` is applied last and wins.
    """
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def run_chatllm(
    *args: str,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """Run `chatllm ARGS…` to the end, as a user would in a pipe: `input` on
    stdin (empty if None), stdout and stderr captured as bytes. `env` holds
    variables to set on top of `cli_env()`."""
    data = input.encode() if isinstance(input, str) else input
    return subprocess.run(
        chatllm_command(*args),
        input=data if data is not None else b"",
        capture_output=True,
        env=cli_env(**(env or {})),
        timeout=timeout,
        cwd=cwd,
    )


def start_chatllm(
    *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, **popen_kwargs
) -> subprocess.Popen:
    """Start `chatllm ARGS…` and return the running process, for tests that
    act on it while it runs (Ctrl-C, a second process alongside). stdout and
    stderr are pipes unless `popen_kwargs` says otherwise; `env` holds
    variables to set on top of `cli_env()`. The caller waits for it or kills it."""
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(chatllm_command(*args), env=cli_env(**(env or {})), cwd=cwd, **popen_kwargs)
