"""Reading the text a job works on, from files or standard input.

Every way input can be unusable (missing, a directory, binary, not UTF-8, empty)
is an InputError naming the file, raised before any model is loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chatllm.errors import InputError


@dataclass(frozen=True)
class InputText:
    text: str
    source: str  # file name(s) or "stdin"


def decode_text(data: bytes, source: str) -> str:
    if b"\x00" in data[:8192]:
        raise InputError(f"{source} looks like a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{source} is not UTF-8 text (invalid byte at position {error.start})") from None
    return text.replace("\r\n", "\n")


def read_file(path: Path) -> str:
    if str(path) == "-":
        return read_stream(sys.stdin.buffer, "standard input")
    if not path.exists():
        raise InputError(f"file '{path}' does not exist")
    if path.is_dir():
        raise InputError(f"'{path}' is a directory; pass the files inside it")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read '{path}': {error.strerror}") from None
    return decode_text(data, f"'{path}'")


def read_stream(stream: BinaryIO, source: str) -> str:
    return decode_text(stream.read(), source)


def read_input(files: list[Path], *, required: bool = True) -> InputText:
    """Files joined by blank lines, or stdin when no files are given and stdin is
    not a terminal. Empty input is an error when `required`."""
    if files:
        texts = [read_file(path) for path in files]
        text = "\n\n".join(t.strip("\n") for t in texts)
        source = ", ".join(str(p) for p in files)
    elif not sys.stdin.isatty():
        text = read_stream(sys.stdin.buffer, "standard input")
        source = "stdin"
    else:
        if required:
            raise InputError("no input: pass a file, or pipe text in (e.g. `cat notes.md | chatllm summarize`)")
        return InputText("", "none")
    if required and not text.strip():
        raise InputError(f"the input ({source}) is empty")
    return InputText(text, source)
