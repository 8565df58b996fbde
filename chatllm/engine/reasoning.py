"""Telling a reasoning model's thinking from its answer, while it streams.

Reasoning models (Qwen3, DeepSeek-R1 distills) write their thinking between
`<think>` and `</think>` before the answer; some chat templates open the
`<think>` in the prompt, so only the closing tag appears in the reply. Servers
with a reasoning parser (llama-server, vLLM) send the thinking apart, as
`reasoning_content` (or `reasoning`) deltas.

Every backend yields its reply as `str` pieces of the answer and `Reasoning`
pieces of thinking, so everything downstream (the guards, the renderer,
--json, history) tells them apart by type. `ThinkSplitter` does the splitting
of inline tags for the llama.cpp and OpenAI-compatible backends alike; a tag
split across pieces ("</th" + "ink>") is held until it is whole.
"""

from __future__ import annotations

import re
from typing import Any

from chatllm.engine.base import Stream

OPEN, CLOSE = "<think>", "</think>"


class Reasoning(str):
    """A piece of a model's thinking, not of its answer."""


# How much text a reply of unknown state is held for before it counts as answer.
UNDECIDED_CHARS = 400


class ThinkSplitter:
    """Feed the reply's text; get back answer (`str`) and thinking (`Reasoning`)
    pieces. `thinking=True` when the prompt opened a `<think>` itself; None
    when that is not known (a remote reasoning model whose template is on the
    server): the start of the reply is then held until a tag decides, or
    UNDECIDED_CHARS of text without one."""

    def __init__(self, thinking: bool | None = False) -> None:
        self._undecided = thinking is None
        self.thinking = bool(thinking)
        self.answered = False  # any answer text so far
        self.reasoned = False  # any thinking so far
        self._held = ""
        self._after_close = False  # strip the blank lines models put after </think>

    def feed(self, text: str) -> list[str]:
        out: list[str] = []
        buffer = self._held + text
        self._held = ""
        if self._undecided:
            if CLOSE in buffer and OPEN not in buffer[: buffer.find(CLOSE)]:
                self.thinking = True  # the template opened it
            elif OPEN not in buffer and len(buffer) < UNDECIDED_CHARS:
                self._held = buffer
                return out
            self._undecided = False
        while buffer:
            tag = CLOSE if self.thinking else OPEN
            at = buffer.find(tag)
            if at < 0 and not self.thinking:  # a stray </think>: the template opened one we did not see
                stray = buffer.find(CLOSE)
                if stray >= 0:  # what came before was thinking, unless an answer was shown already
                    before = buffer[:stray]
                    self._emit(before if self.answered else Reasoning(before), out)
                    buffer = buffer[stray + len(CLOSE) :]
                    self._after_close = True
                    continue
            if at >= 0:
                self._emit(Reasoning(buffer[:at]) if self.thinking else buffer[:at], out)
                buffer = buffer[at + len(tag) :]
                self._after_close = self.thinking
                self.thinking = not self.thinking
                continue
            keep = _partial_tag(buffer, (tag, CLOSE) if not self.thinking else (tag,))
            self._emit(Reasoning(buffer[: len(buffer) - keep]) if self.thinking else buffer[: len(buffer) - keep], out)
            self._held = buffer[len(buffer) - keep :]
            break
        return out

    def finish(self) -> list[str]:
        """What is still held (a partial tag that never completed is text)."""
        if self._undecided:
            self._undecided = False
            return self.feed("") + self.finish()
        held, self._held = self._held, ""
        out: list[str] = []
        if held:
            self._emit(Reasoning(held) if self.thinking else held, out)
        return out

    @property
    def unclosed(self) -> bool:
        """The reply ended still thinking, with no answer at all."""
        return self.thinking and self.reasoned and not self.answered

    def _emit(self, piece: str, out: list[str]) -> None:
        if not isinstance(piece, Reasoning) and self._after_close:
            piece = piece.lstrip()
            if piece:
                self._after_close = False
        if not piece:
            return
        if isinstance(piece, Reasoning):
            self.reasoned = True
        elif piece.strip():
            self.answered = True
        out.append(piece)


def _partial_tag(text: str, tags: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could begin one of `tags`."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


def split_reasoning(pieces: Stream, thinking: bool | None = False, stats: Any = None) -> Stream:
    """`pieces` with inline thinking turned into `Reasoning` pieces. Pieces that
    already are `Reasoning` (a server's reasoning_content) pass as they are.
    `stats` (GenerationStats, or a function giving it once the reply is done)
    learns whether the thinking never closed."""
    splitter = ThinkSplitter(thinking)
    try:
        for piece in pieces:
            if isinstance(piece, Reasoning):
                yield piece
                continue
            yield from splitter.feed(piece)
        yield from splitter.finish()
        if stats is not None:
            target = stats() if callable(stats) else stats
            target.thinking_unclosed = splitter.unclosed
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def prompt_opens_thinking(prompt_text: str) -> bool:
    """Whether a rendered prompt ends inside an opened `<think>`."""
    tail = prompt_text.rstrip()
    return tail.endswith(OPEN)


def may_think(model_name: str) -> bool:
    """Whether a remote model's name says it reasons (its template may open a
    <think> we never see)."""
    return bool(
        re.search(r"(^|[^a-z])(r1|qwq|qwen3|think|thinking|reason\w*|magistral|deepseek-r)", model_name.lower())
    )


def template_has_thinking_switch(template_source: str) -> bool:
    """Whether a chat template reads `enable_thinking` (Qwen3's switch)."""
    return "enable_thinking" in template_source
