"""The items a job of many replies works on: each line of the input, or each
file whole (classify, extract)."""

from __future__ import annotations

from pathlib import Path

from chatllm import inputs
from chatllm.errors import InputError


def input_items(files: list[Path], whole: bool) -> list[str]:
    """Each non-empty line of the input, or each file whole (stdin as one)."""
    if whole:
        texts = inputs.read_files(files) if files else [inputs.read_input([]).text]
        items = [text.strip() for text in texts if text.strip()]
    else:
        items = [line.strip() for line in inputs.read_input(files).text.splitlines() if line.strip()]
    if not items:
        raise InputError("the input has no text to work on")
    return items
