"""Reading a reply's events in tests (chatllm/reply/events.py)."""

from __future__ import annotations

from collections.abc import Iterable

from chatllm.reply.events import Event, Notice, Reasoning, Text


def reply_and_notes(events: Iterable[Event]) -> tuple[str, str]:
    """The reply's text and its notices (one line each), as a user reads them."""
    events = list(events)
    text = "".join(event.text for event in events if isinstance(event, Text))
    return text, "\n".join(event.text for event in events if isinstance(event, Notice))


def thinking_of(events: Iterable[Event]) -> str:
    """The thinking a reply's events carried."""
    return "".join(event.text for event in events if isinstance(event, Reasoning))
