"""Reading the text a job works on, from files or standard input.

Input is read in pieces and decoded as it comes (reading.py), so an
endless or binary input is refused at the piece that shows it, before memory
grows, and Ctrl-C is felt between pieces. What a command reads in all is
bounded: --max-input-size, else the max_input_size setting.

Every way input can be unusable (missing, a directory, too large, binary, not
text, empty) is an InputError naming the file, raised before any model works.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chatllm.config.settings import load_settings
from chatllm.errors import InputError
from chatllm.reading import PIECE_BYTES, TextDecoder
from chatllm.sizes import format_size

# The limit a command was given (--max-input-size); None: the setting's.
_given_limit: ContextVar[int | None] = ContextVar("chatllm_input_limit", default=None)


@contextmanager
def reading_limit(size: int | None) -> Iterator[None]:
    """Reads inside this block are bounded by `size` bytes (None: the setting)."""
    token = _given_limit.set(size)
    try:
        yield
    finally:
        _given_limit.reset(token)


def input_limit() -> int:
    """Bytes a command may read in all: --max-input-size, else the setting."""
    given = _given_limit.get()
    if given is not None:
        return given
    return load_settings().max_input_size


@dataclass(frozen=True)
class InputText:
    text: str
    source: str  # file name(s) or "stdin"


class _Budget:
    """Bytes left to read for one command's input, over all its files."""

    def __init__(self) -> None:
        self.limit = input_limit()
        self.used = 0
        self.earlier = 0  # bytes of the sources read before this one

    def next_source(self) -> None:
        self.earlier = self.used

    def check(self, count: int, source: str, whole: bool = False) -> None:
        """Raise when `count` more bytes of `source` (all of it, if `whole`) would not fit."""
        if self.used + count <= self.limit:
            return
        limit = f"over the {format_size(self.limit)} input limit"
        if self.earlier:
            raise _over_limit(f"the input is {limit} at {source}")
        size = format_size(count) if format_size(count) != format_size(self.limit) else f"{count:,} bytes"
        raise _over_limit(f"{source} is {size + ', ' if whole else ''}{limit}")

    def take(self, count: int, source: str) -> None:
        self.check(count, source)
        self.used += count


def _over_limit(what: str) -> InputError:
    return InputError(f"{what}; raise it with --max-input-size SIZE (e.g. 64M) or the max_input_size setting")


def read_file(path: Path, budget: _Budget | None = None) -> str:
    if str(path) == "-":
        return read_stream(sys.stdin.buffer, "standard input", budget)
    if not path.exists():
        raise InputError(f"file '{path}' does not exist")
    if path.is_dir():
        raise InputError(f"'{path}' is a directory; pass the files inside it")
    budget = budget or _Budget()
    try:
        with path.open("rb") as stream:
            budget.next_source()
            if path.is_file():  # a regular file says its size: refused before any read
                budget.check(path.stat().st_size, f"'{path}'", whole=True)
            return read_stream(stream, f"'{path}'", budget)
    except OSError as error:
        raise InputError(f"cannot read '{path}': {error.strerror}") from None


def read_stream(stream: BinaryIO, source: str, budget: _Budget | None = None) -> str:
    """The whole of `stream` as text, read piece by piece within `budget`."""
    budget = budget or _Budget()
    budget.next_source()
    decoder = TextDecoder(source)
    read = getattr(stream, "read1", stream.read)
    texts = []
    while True:
        data = read(min(PIECE_BYTES, budget.limit - budget.used + 1))
        budget.take(len(data), source)
        texts.append(decoder.decode(data, final=not data))
        if not data:
            return "".join(texts).replace("\r\n", "\n")


def read_lines(stream: BinaryIO, source: str) -> Iterator[str]:
    """Each line of `stream` as it comes (without its line break), for a chat
    in a pipe: a line is bounded by the input limit, the stream is not."""
    limit = input_limit()
    decoder = TextDecoder(source)
    read = getattr(stream, "read1", stream.read)
    pending: list[str] = []
    pending_size = 0
    while True:
        data = read(PIECE_BYTES)
        text = decoder.decode(data, final=not data)
        *lines, rest = text.split("\n")
        for line in lines:
            yield ("".join(pending) + line).removesuffix("\r")
            pending, pending_size = [], 0
        pending.append(rest)
        pending_size += len(rest)
        if pending_size > limit:
            raise _over_limit(f"a line of {source} is over the {format_size(limit)} input limit")
        if not data:
            if pending_size:
                yield "".join(pending).removesuffix("\r")
            return


def read_files(paths: list[Path]) -> list[str]:
    """Each file's text, all of them within one input limit."""
    budget = _Budget()
    return [read_file(path, budget) for path in paths]


def read_input(files: list[Path], *, required: bool = True) -> InputText:
    """Files joined by blank lines, or stdin when no files are given and stdin is
    not a terminal. Empty input is an error when `required`."""
    if files:
        text = "\n\n".join(t.strip("\n") for t in read_files(files))
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
