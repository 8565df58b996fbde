"""Showing a reply's events (chatllm/reply/events.py): live Markdown on a
terminal, plain text in a pipe, one JSON object per reply on request. Chosen
once, at the edge; jobs only yield events.

Only the answer goes to stdout. Stats, progress, thinking and notices go to stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from chatllm.engine.base import GenerationStats, usage_json
from chatllm.render_tools import ToolDisplay, message_json, params_json
from chatllm.reply.events import Draft, Event, Finish, Notice, Reasoning, Text, ToolCall, ToolResult
from chatllm.reply.tool_loop import ToolStep, calls_json

if TYPE_CHECKING:
    from chatllm.jobs.job import Plan


class Sink(Protocol):
    def write(self, piece: str) -> None: ...

    def draft(self, text: str) -> None:
        """Text that may follow but may yet be taken back (a sentence whose
        numbers are not checked yet); the next `write` or `draft` replaces it."""

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

    def draft(self, text: str) -> None:
        """Nothing: what a pipe was given cannot be taken back."""

    def close(self) -> None:
        if not self.ended_with_newline:
            self.stream.write("\n")
        self.stream.flush()


class MarkdownSink:
    """Re-renders the reply as Markdown while it streams (rich Live).

    Finished blocks (up to the last blank line outside a code fence or list) are
    printed once and leave the live view, and the live view shows at most a
    screenful (its last lines), so a reply taller than the terminal scrolls like
    plain text instead of being printed again and again."""

    def __init__(self, stream: IO[str], theme: str = "monokai") -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.theme = theme
        self.text = ""  # not yet printed for good
        self._draft = ""  # shown after the text until replaced (see Sink.draft)
        self._shown_anything = False
        self.live = Live(console=self.console, refresh_per_second=12, transient=False)
        self.live.start()
        # The Markdown parser takes ~40 ms to import: done now, while llama.cpp
        # makes the model's context, not on the way to the first word (nor
        # during the prefill, where it would take a core from llama.cpp).
        import rich.markdown  # noqa: F401

    def _markdown(self, text: str) -> _Markdown:
        return _Markdown(text, self.theme)

    def write(self, piece: str) -> None:
        self.text += piece
        self._draft = ""
        done = finished_length(self.text)
        finished, self.text = self.text[:done], self.text[done:]
        # Drawn now when a block is printed for good: rich draws the live view
        # again under it as last drawn, which would show the block twice.
        self._update(refresh=bool(finished))
        if finished:
            self.console.print(_Lines(self._markdown(finished)))  # above the live view
            self.console.line()

    def draft(self, text: str) -> None:
        self._draft = text
        self._update()

    def live_text(self) -> str:
        """The text the live view shows: what was written, then the draft. A job
        may hold back a space between them (translate strips a part's trailing
        white space until more text follows), so two words that would touch
        are shown apart."""
        joiner = ""
        if _WORD_END.search(self.text) and _WORD_START.match(self._draft):
            joiner = " "
        return self.text + joiner + self._draft

    def _update(self, refresh: bool = False) -> None:
        """Show the live text; the first words at once, the rest at the next refresh."""
        text = self.live_text()
        first = bool(text.strip()) and not self._shown_anything
        self._shown_anything = self._shown_anything or first
        self.live.update(_Lines(self._markdown(text), max(self.console.size.height - 1, 1)), refresh=first or refresh)

    def close(self) -> None:
        self.live.update(_Lines(self._markdown(self.text)))
        self.live.stop()


# Letters or digits of a script that puts spaces between words (not CJK).
_WORD_END = re.compile(r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]$")
_WORD_START = re.compile(r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_LIST_ITEM = re.compile(r"([-*+]|\d+[.)])(\s|$)")


def finished_length(text: str) -> int:
    """How much of `text` is finished Markdown blocks: up to the last blank line
    outside a code fence that is followed by an unindented line, not a list item
    (a blank line between items does not end a list)."""
    end = offset = 0
    in_fence = previous_blank = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if not in_fence and previous_blank and stripped and not line[0].isspace() and not _LIST_ITEM.match(line):
            end = offset
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        previous_blank = not stripped
        offset += len(line)
    return end


class _Markdown:
    """Markdown parsed only when drawn: the live view is given new text with
    every token but draws it at most 12 times a second."""

    def __init__(self, text: str, theme: str) -> None:
        self.text = text
        self.theme = theme

    def __rich_console__(self, console, options):
        from rich.markdown import Markdown

        yield Markdown(self.text, code_theme=self.theme)


class _Lines:
    """A renderable's lines without the blank lines rich puts before some blocks
    (so blocks printed one by one are spaced as in one document); with `height`,
    only the last that many."""

    def __init__(self, renderable, height: int | None = None) -> None:
        self.renderable = renderable
        self.height = height

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        lines = console.render_lines(self.renderable, options, pad=False)
        while lines and all(not s.text.strip() and not (s.style and s.style.bgcolor) for s in lines[0]):
            lines.pop(0)
        if self.height is not None:
            lines = lines[-self.height :]
        for line in lines:
            yield from line
            yield Segment.line()


class CollectingSink:
    """Keeps the text for --json."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, piece: str) -> None:
        self.text += piece

    def draft(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def styling_allowed(stream: IO[str]) -> bool:
    """Colours, live lines and Markdown rendering only on a terminal, and not
    when NO_COLOR is set (no-color.org) or the terminal is dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def open_sink(stream: IO[str] | None = None, markdown: bool | None = None, theme: str = "monokai") -> Sink:
    stream = stream or sys.stdout
    if markdown is None:
        markdown = styling_allowed(stream)
    return MarkdownSink(stream, theme) if markdown else PlainSink(stream)


def result_json(
    text: str,
    model: str,
    template: str,
    stats: GenerationStats,
    reasoning: str = "",
    fields: dict[str, Any] | None = None,
) -> str:
    """The --json object; field names follow OpenAI's API and docs/ARCHITECTURE.md. A
    reasoning model's thinking is in `reasoning`, never in `text`. `fields`: what
    the job adds (Finish.fields)."""
    timings = stats.timings
    extra = {"reasoning": reasoning} if reasoning else {}
    payload = {
        "text": text,
        **extra,
        "model": model,
        "template": template,
        "finish_reason": stats.finish_reason,
        "usage": usage_json(stats.usage),
        "timings": {
            "load_s": round(timings.load_s, 3),
            "ttft_s": round(timings.ttft_s, 3),
            "prefill_tokens_per_s": round(timings.prefill_tokens_per_s, 1),
            "decode_tokens_per_s": round(timings.decode_tokens_per_s, 1),
            "total_s": round(timings.total_s, 3),
        },
    }
    return json.dumps({**payload, **(fields or {})}, ensure_ascii=False)


def dry_run_json(plan: Plan, template: str, model: str | None) -> str:
    """--dry-run: the messages and settings a job's first call would send; with
    a schema, the schema and the GBNF grammar llama.cpp would be constrained by."""
    payload: dict[str, Any] = {
        "model": model,
        "template": template,
        "messages": [message_json(m) for m in plan.messages],
        "params": params_json(plan.params),
    }
    if plan.schema is not None:
        payload["schema"] = plan.schema
    if plan.grammar is not None:
        payload["grammar"] = plan.grammar
    return json.dumps(payload, ensure_ascii=False, indent=2)


def stats_lines(stats: GenerationStats) -> list[str]:
    """--stats for a person, one figure per line."""
    usage, timings = stats.usage, stats.timings
    return [
        f"load: {timings.load_s:.2f} s",
        f"prompt tokens: {usage.prompt_tokens}",
        f"prompt tokens reused from cache: {usage.cached_prompt_tokens} of {usage.prompt_tokens}",
        f"prefill: {timings.prefill_tokens_per_s:.1f} tok/s",
        f"completion tokens: {usage.completion_tokens}",
        *(
            [f"reasoning tokens: {usage.reasoning_tokens} of {usage.completion_tokens}"]
            if usage.reasoning_tokens
            else []
        ),
        f"decode: {timings.decode_tokens_per_s:.1f} tok/s",
        f"time to first token: {timings.ttft_s:.2f} s",
        *([f"tool calls: {stats.tool_calls} ({stats.tool_seconds:.2f} s)"] if stats.tool_calls else []),
        f"total: {timings.total_s:.2f} s",
    ]


def print_stats(stats: GenerationStats, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stderr
    stream.write("\n".join(stats_lines(stats)) + "\n")
    stream.flush()


class ReasoningDisplay:
    """A reasoning model's thinking on stderr: the thinking itself with
    --show-reasoning (dim on a terminal), else on a terminal one dim live line
    counting it ("thinking… 120 tokens"), and in a pipe nothing at all. Stdout
    only ever carries the answer."""

    def __init__(self, show: bool, stream: IO[str] | None = None) -> None:
        self.show = show
        self.stream = stream or sys.stderr
        self.terminal = styling_allowed(self.stream)
        self.pieces = 0
        self._open = False

    def piece(self, text: str) -> None:
        self.pieces += 1
        if self.show:
            self.stream.write(f"\x1b[2m{text}\x1b[0m" if self.terminal else text)
            self._open = True
        elif self.terminal:
            self.stream.write(f"\r\x1b[2mthinking… {self.pieces} tokens\x1b[0m\x1b[K")
            self._open = True
        else:
            return
        self.stream.flush()

    def done(self) -> None:
        """The answer begins (or the reply ended): close what the thinking left open."""
        if not self._open:
            return
        self.stream.write("\n" if self.show else "\r\x1b[K")
        self.stream.flush()
        self._open = False


def notice(message: str) -> None:
    """A one-line note to the user on stderr (dim on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[2m{message}\x1b[0m\n")
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()


@dataclass
class ShownReply:
    """What one reply showed: its text and thinking, how it finished, and
    the tools it called on its way."""

    text: str
    reasoning: str
    finish: Finish
    tools: list[ToolStep] = field(default_factory=list)


@dataclass
class Printer:
    """Shows a run's events: each reply's text on stdout as it streams (live
    Markdown on a terminal when `markdown`, plain text otherwise), or with
    `json` one object per reply; thinking, notices and `stats` on stderr.
    `between` is written between two replies (a blank line between chat
    turns). A notice that comes once a reply's text has begun waits for its
    end, so it follows the reply instead of cutting into it."""

    model: str
    template: str
    json: bool = False
    stats: bool = False
    show_reasoning: bool = False
    markdown: bool | None = None  # None: on a terminal
    theme: str = "monokai"
    between: str = ""
    out: IO[str] | None = None
    replies: list[ShownReply] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._out = self.out or sys.stdout
        self._sink: Sink | None = None
        self._thinking = ReasoningDisplay(self.show_reasoning)
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._later: list[str] = []  # notices waiting for the reply's end
        self._tools = ToolDisplay(notice if not self.json and styling_allowed(sys.stderr) else None)
        self._began = False  # the reply's first sink was opened

    @property
    def live(self) -> bool:
        """Whether drafts are shown (a live view on a terminal)."""
        return not self.json and (styling_allowed(self._out) if self.markdown is None else self.markdown)

    def open(self) -> None:
        """Make the next reply's sink now: a live view's set-up then overlaps
        the model's work instead of delaying its first word."""
        if self._sink is None:
            if self.replies and self.between and not self.json and not self._began:
                self._out.write(self.between)
            self._began = True
            self._sink = CollectingSink() if self.json else open_sink(self._out, self.markdown, self.theme)

    def show(self, events: Iterable[Event]) -> list[ShownReply]:
        """Show `events` as they come; the replies they made."""
        try:
            for event in events:
                self.event(event)
        finally:
            self._close()
        return self.replies

    def event(self, event: Event) -> None:
        kind = type(event)
        if kind is Text or kind is Draft:
            self._thinking.done()
            self.open()
            assert self._sink is not None
            if isinstance(event, Text):
                self._text.append(event.text)
                self._sink.write(event.text)
            else:
                self._sink.draft(event.text)  # type: ignore[union-attr]
        elif isinstance(event, Reasoning):
            self._reasoning.append(event.text)
            self._thinking.piece(event.text)
        elif isinstance(event, Notice):
            if self._text:
                self._later.append(event.text)
            else:
                self._thinking.done()
                notice(event.text)
        elif isinstance(event, ToolCall):
            if self.live:  # the line goes under the text so far; the rest of the reply follows it
                self._close()
            self._tools.call(event, "".join(self._text))
        elif isinstance(event, ToolResult):
            self._tools.result(event)
        elif isinstance(event, Finish):
            self._finish(event)

    def _finish(self, finish: Finish) -> None:
        self._close()
        self._thinking = ReasoningDisplay(self.show_reasoning)
        text, reasoning = "".join(self._text), "".join(self._reasoning)
        tools = self._tools.take().steps
        self.replies.append(ShownReply(text, reasoning, finish, tools))
        self._text, self._reasoning, self._began = [], [], False
        if self.json:
            fields = {"tool_calls": calls_json([c for step in tools for c in step.calls])} if tools else {}
            fields.update(finish.fields)
            self._out.write(result_json(text, self.model, self.template, finish.stats, reasoning, fields) + "\n")
            self._out.flush()
        if self.stats:
            print_stats(finish.stats)

    def _close(self) -> None:
        """End the reply on screen: its thinking's line, its sink, then its notices."""
        self._thinking.done()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        for waiting in self._later:
            notice(waiting)
        self._later = []
