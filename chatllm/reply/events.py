"""The events a reply is made of, in the order a renderer gets them.

A reply is a stream of events that ends with one `Finish`. Renderers (the
terminal, a pipe, --json, the REPL, `serve`'s JSON and SSE) read these and
nothing else: no `str` subclasses, no callbacks. A job of several replies
(one per classified line, one per chat turn) sends a `Finish` after each.

`Text` is final: it is never taken back. `Draft` is what the reply's stages
hold back right now (a sentence whose numbers are not checked yet, a span that
may be a repeat): a live view shows it after the text and replaces it with the
next `Draft`; a `Text` clears it (the held words either came out as text or
were dropped). A pipe and --json ignore drafts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from chatllm.engine.base import FinishReason, GenerationStats


@dataclass(frozen=True, slots=True)
class Text:
    """Answer text, final."""

    text: str


@dataclass(frozen=True, slots=True)
class Draft:
    """What the stages hold back right now, for a live view; replaces the
    previous draft ("" clears it)."""

    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of a reasoning model's thinking: never part of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the user beside the answer (stderr, or a dim line), such as
    "Cut at the length limit of 64 tokens"."""

    text: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool to be run (issue 23)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returned, as the model will read it (issue 23)."""

    id: str
    name: str
    content: str
    is_error: bool = False
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Finish:
    """The last event of a reply: why it ended and what it cost. `fields` go
    into the reply's --json object after the contract fields: what the job
    adds (classify's label and probabilities), or `text` as a script should
    read it (classify's several labels as a JSON list); never another
    contract field."""

    reason: FinishReason
    stats: GenerationStats
    fields: dict[str, Any] = field(default_factory=dict)


Event = Text | Draft | Reasoning | Notice | ToolCall | ToolResult | Finish


def text_of(events: Any) -> str:
    """The answer text of `events` (for callers that want the whole of it)."""
    return "".join(event.text for event in events if type(event) is Text)
