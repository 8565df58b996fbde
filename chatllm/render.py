"""Showing generated text: live Markdown on a terminal, plain text in a pipe,
one JSON object on request. Chosen once, at the edge; jobs only yield text.

Only the answer goes to stdout. Stats, progress and notices go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Iterable, Protocol

from chatllm.engine.base import GenerationStats


class Sink(Protocol):
    def write(self, piece: str) -> None: ...

    def close(self) -> None: ...


class PlainSink:
    """Writes each piece as it arrives and flushes, so pipes see text stream."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.ended_with_newline = True

    def write(self, piece: str) -> None:
        if piece:
            self.stream.write(piece)
            self.stream.flush()
            self.ended_with_newline = piece.endswith("\n")

    def close(self) -> None:
        if not self.ended_with_newline:
            self.stream.write("\n")
        self.stream.flush()


class MarkdownSink:
    """Re-renders the reply as Markdown while it streams (rich Live)."""

    def __init__(self, stream: IO[str], theme: str = "monokai") -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.theme = theme
        self.text = ""
        self.live = Live(console=self.console, refresh_per_second=12, vertical_overflow="visible", transient=False)
        self.live.start()

    def write(self, piece: str) -> None:
        from rich.markdown import Markdown

        self.text += piece
        self.live.update(Markdown(self.text, code_theme=self.theme))

    def close(self) -> None:
        self.live.stop()


class CollectingSink:
    """Keeps the text for --json."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, piece: str) -> None:
        self.text += piece

    def close(self) -> None:
        pass


def wants_markdown(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def open_sink(stream: IO[str] | None = None, markdown: bool | None = None, theme: str = "monokai") -> Sink:
    stream = stream or sys.stdout
    if markdown is None:
        markdown = wants_markdown(stream)
    return MarkdownSink(stream, theme) if markdown else PlainSink(stream)


def write_all(pieces: Iterable[str], sink: Sink) -> str:
    """Stream `pieces` into `sink`; the sink is closed even on Ctrl-C."""
    text = []
    try:
        for piece in pieces:
            text.append(piece)
            sink.write(piece)
    finally:
        sink.close()
    return "".join(text)


def result_json(text: str, model: str, template: str, stats: GenerationStats) -> str:
    """The --json object; field names follow OpenAI's API and DESIGN.md."""
    usage = stats.usage
    timings = stats.timings
    return json.dumps(
        {
            "text": text,
            "model": model,
            "template": template,
            "finish_reason": stats.finish_reason,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_prompt_tokens": usage.cached_prompt_tokens,
            },
            "timings": {
                "load_s": round(timings.load_s, 3),
                "ttft_s": round(timings.ttft_s, 3),
                "prefill_tokens_per_s": round(timings.prefill_tokens_per_s, 1),
                "decode_tokens_per_s": round(timings.decode_tokens_per_s, 1),
                "total_s": round(timings.total_s, 3),
            },
        },
        ensure_ascii=False,
    )


def stats_lines(stats: GenerationStats) -> list[str]:
    """--stats for a person, one figure per line."""
    usage, timings = stats.usage, stats.timings
    return [
        f"load: {timings.load_s:.2f} s",
        f"prompt tokens: {usage.prompt_tokens}",
        f"prompt tokens reused from cache: {usage.cached_prompt_tokens} of {usage.prompt_tokens}",
        f"prefill: {timings.prefill_tokens_per_s:.1f} tok/s",
        f"completion tokens: {usage.completion_tokens}",
        f"decode: {timings.decode_tokens_per_s:.1f} tok/s",
        f"time to first token: {timings.ttft_s:.2f} s",
        f"total: {timings.total_s:.2f} s",
    ]


def print_stats(stats: GenerationStats, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stderr
    stream.write("\n".join(stats_lines(stats)) + "\n")
    stream.flush()


def notice(message: str) -> None:
    """A one-line note to the user on stderr (dim on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[2m{message}\x1b[0m\n")
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()
