"""Telling a reasoning model's thinking from its answer, while it streams.

Reasoning models (Qwen3, DeepSeek-R1 distills) write their thinking between
`<think>` and `</think>` before the answer; some chat templates open the
`<think>` in the prompt, so only the closing tag appears in the reply. Servers
with a reasoning parser (llama-server, vLLM) send the thinking apart, as
`reasoning_content` (or `reasoning`) deltas.

Every backend yields its reply as `str` pieces of the answer and `Reasoning`
events (chatllm/reply/events.py) of thinking, so the reply pipeline tells
them apart by type and thinking never reaches the guards or the answer.
`ThinkSplitter` does the splitting of inline tags for the llama.cpp and
OpenAI-compatible backends alike; a tag split across pieces ("</th" + "ink>")
is held until it is whole.
"""

from __future__ import annotations

import re
from typing import Any

from chatllm.engine.base import EngineStream
from chatllm.reply.events import Reasoning

OPEN, CLOSE = "<think>", "</think>"
# A piece of a reply as a backend yields it: answer text, or thinking.
Piece = str | Reasoning


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

    def feed(self, text: str) -> list[Piece]:
        out: list[Piece] = []
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
                    self._emit(before, out, thought=not self.answered)
                    buffer = buffer[stray + len(CLOSE) :]
                    self._after_close = True
                    continue
            if at >= 0:
                self._emit(buffer[:at], out, thought=self.thinking)
                buffer = buffer[at + len(tag) :]
                self._after_close = self.thinking
                self.thinking = not self.thinking
                continue
            keep = _partial_tag(buffer, (tag, CLOSE) if not self.thinking else (tag,))
            self._emit(buffer[: len(buffer) - keep], out, thought=self.thinking)
            self._held = buffer[len(buffer) - keep :]
            break
        return out

    def finish(self) -> list[Piece]:
        """What is still held (a partial tag that never completed is text)."""
        if self._undecided:
            self._undecided = False
            return self.feed("") + self.finish()
        held, self._held = self._held, ""
        out: list[Piece] = []
        if held:
            self._emit(held, out, thought=self.thinking)
        return out

    @property
    def unclosed(self) -> bool:
        """The reply ended still thinking, with no answer at all."""
        return self.thinking and self.reasoned and not self.answered

    def _emit(self, text: str, out: list[Piece], thought: bool) -> None:
        if not thought and self._after_close:
            text = text.lstrip()
            if text:
                self._after_close = False
        if not text:
            return
        if thought:
            self.reasoned = True
            out.append(Reasoning(text))
            return
        if text.strip():
            self.answered = True
        out.append(text)


def _partial_tag(text: str, tags: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could begin one of `tags`."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


def split_reasoning(pieces: EngineStream, thinking: bool | None = False, stats: Any = None) -> EngineStream:
    """`pieces` with inline thinking turned into `Reasoning` pieces. Pieces that
    already are `Reasoning` (a server's reasoning_content) pass as they are.
    `stats` (GenerationStats, or a function giving it once the reply is done)
    learns whether the thinking never closed."""
    splitter = ThinkSplitter(thinking)
    try:
        for piece in pieces:
            if type(piece) is str:
                yield from splitter.feed(piece)
            else:
                yield piece
        yield from splitter.finish()
        if stats is not None:
            target = stats() if callable(stats) else stats
            target.thinking_unclosed = splitter.unclosed
    finally:
        pieces.close()


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
