"""A deterministic engine for unit tests: no model, no threads, no randomness.

It "tokenizes" by characters (4 per token, like a typical BPE on English), and
replies with a fixed function of the last user message, so tests can assert on
exactly what a job sent and what it did with the reply. Where tools are
offered, a reply's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
is a call (ToolCall events after the text), as a local model's would be.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence

from chatllm.engine.base import (
    Capabilities,
    EngineStream,
    GenerationParams,
    GenerationStats,
    Message,
    Timings,
    Usage,
)
from chatllm.engine.reasoning import split_reasoning
from chatllm.errors import EngineError
from chatllm.reply.events import ToolCall

ReplyFunction = Callable[[Sequence[Message]], str]


_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def echo_reply(messages: Sequence[Message]) -> str:
    """`Echo: ` and the first words of the last user message."""
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    words = last_user.split()
    return "Echo: " + " ".join(words[:12])


class FakeEngine(Capabilities):
    model_name = "fake.gguf"
    can_stream = True
    supports_scoring = True
    supports_tools = True
    identity: str | None = None

    def __init__(self, context_size: int = 2048, reply: ReplyFunction = echo_reply, sequences: int = 1) -> None:
        self.context_size = context_size
        self.reply = reply
        self.load_s = 0.0
        # `sequences` > 1: callers on several threads at once, as a batched
        # engine takes them (engine/batched.py); each thread reads its own stats.
        self.max_sequences = sequences
        self._local = threading.local()
        self._shared_stats = GenerationStats()
        # Every prompt this engine was asked to answer, in order.
        self.calls: list[list[Message]] = []
        self._previous_prompt: list[Message] = []

    @property
    def last_stats(self) -> GenerationStats:
        """The stats of the last reply (or scoring): with several sequences,
        the last this thread asked for."""
        if self.max_sequences > 1:
            return getattr(self._local, "stats", self._shared_stats)
        return self._shared_stats

    @last_stats.setter
    def last_stats(self, stats: GenerationStats) -> None:
        if self.max_sequences > 1:
            self._local.stats = stats
        else:
            self._shared_stats = stats

    def count_tokens(self, text: str) -> int:
        return (len(text) + 3) // 4

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        # 4 tokens of chat-template scaffolding per message, 3 to open the reply.
        return sum(self.count_tokens(m.content) + 4 for m in messages) + 3

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream:
        """The reply in word pieces; inline <think> tags become Reasoning pieces,
        as on the real backends (engine/reasoning.py)."""
        return split_reasoning(self._words(messages, params), thinking=False, stats=lambda: self.last_stats)

    def _calls(self, text: str, params: GenerationParams) -> tuple[str, list[ToolCall]]:
        """The reply's text without its tool calls, and the calls (where tools are offered)."""
        if not params.tools or params.tool_choice == "none":
            return text, []
        found = [json.loads(body) for body in _CALL.findall(text)]
        calls = [
            ToolCall(f"call_{len(self.calls)}_{i}", c["name"], c.get("arguments", {})) for i, c in enumerate(found)
        ]
        return _CALL.sub("", text).strip(), calls

    def _words(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream:
        messages = list(messages)
        prompt_tokens = self.count_prompt_tokens(messages)
        if prompt_tokens >= self.context_size:
            raise EngineError(f"the prompt takes {prompt_tokens} tokens but the context holds {self.context_size}")
        self.calls.append(messages)
        reused = self._common_prefix_tokens(messages)
        self._previous_prompt = messages
        text, calls = self._calls(self.reply(messages), params)
        # Stop strings end the reply before them, as on the real backends.
        text = text[: min((i for i in (text.find(stop) for stop in params.stop if stop) if i >= 0), default=len(text))]
        pieces = [word + " " for word in text.split(" ")]
        pieces[-1] = pieces[-1].rstrip(" ")
        limit = params.max_tokens
        stats = GenerationStats(
            usage=Usage(prompt_tokens=prompt_tokens, cached_prompt_tokens=reused),
            timings=Timings(load_s=self.load_s),
            finish_reason="stop",
        )
        self.last_stats = stats
        started = time.perf_counter()
        try:
            for index, piece in enumerate(pieces):
                if limit is not None and index >= limit:
                    stats.finish_reason = "length"
                    break
                stats.usage.completion_tokens += 1
                if index == 0:
                    stats.timings.ttft_s = time.perf_counter() - started
                yield piece
            if calls and stats.finish_reason == "stop":
                stats.finish_reason = "tool_calls"
                yield from calls  # split_reasoning passes them on
        except GeneratorExit:
            stats.finish_reason = "interrupted"
            raise
        finally:
            stats.timings.total_s = time.perf_counter() - started

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]:
        """0 for a continuation the last user message contains, less the longer
        it is otherwise: deterministic, so classification can be tested."""
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "").casefold()
        self.calls.append(list(messages))
        self.last_stats = GenerationStats(usage=Usage(prompt_tokens=self.count_prompt_tokens(messages)))
        return [0.0 if c.casefold() in last_user else -1.0 - len(c) / 100 for c in continuations]

    def _common_prefix_tokens(self, messages: list[Message]) -> int:
        shared = 0
        for old, new in zip(self._previous_prompt, messages):
            if old != new:
                break
            shared += self.count_tokens(new.content) + 4
        return shared

    def close(self) -> None:
        pass
