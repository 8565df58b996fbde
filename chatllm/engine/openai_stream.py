"""Reading OpenAI's streaming chat format: SSE lines into JSON chunks, chunks
into text, usage and timings. No HTTP here: openai.py feeds it lines.

Every problem with what the server sent is a one-line `EngineError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from chatllm.engine.base import GenerationStats
from chatllm.errors import EngineError

_MESSAGE_LIMIT = 300
_SSE_FIELDS = (":", "event:", "id:", "retry:")


def one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """`text` with its whitespace collapsed, cut at `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sse_events(lines: Iterable[str], where: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of an SSE stream's `data:` fields, up to `data: [DONE]`.
    Raises EngineError for a line that is not SSE, data that is not a JSON
    object, an `{"error": ...}` event, or a stream that ends without [DONE]."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line and not line.startswith(_SSE_FIELDS):
            raise EngineError(
                f"the server at {where} sent a malformed stream: {one_line(line, 80)!r} is not an SSE line"
            )
        if line or not data:
            continue  # comments (": ping"), other SSE fields, blank lines between events
        payload, data = "\n".join(data), []
        if payload.strip() == "[DONE]":
            return
        yield parse_event(payload, where)
    if data:
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            return
        yield parse_event(payload, where)
    raise EngineError(f"the server at {where} ended the stream before it finished (no 'data: [DONE]')")


def parse_event(payload: str, where: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError:
        raise EngineError(
            f"the server at {where} sent a malformed stream: {one_line(payload, 80)!r} is not JSON"
        ) from None
    if not isinstance(event, dict):
        raise EngineError(f"the server at {where} sent a malformed stream: {one_line(payload, 80)!r} is not an object")
    error = event.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise EngineError(f"the server at {where} failed mid-reply: {one_line(str(message))}")
    return event


def error_message(body: str) -> str:
    """The server's own words in an error body: OpenAI's `{"error": {"message"}}`,
    FastAPI's `{"detail"}`, or the text itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return one_line(body) or "(no message)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return one_line(error["message"])
        for value in (error, data.get("detail"), data.get("message")):
            if value:
                return one_line(value if isinstance(value, str) else json.dumps(value))
    return one_line(json.dumps(data))


class ReplyReader:
    """Turns one reply's chunks into text, filling `stats` as they arrive.
    Chunks may carry usage (OpenAI's include_usage) and llama-server's `timings`."""

    def __init__(self, stats: GenerationStats) -> None:
        self.stats = stats
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.chunks = 0  # content chunks: one token each on llama.cpp-based servers
        self.usage_seen = False
        self.server_timings: dict[str, Any] = {}
        self.reasoning = ""  # thinking the server sent apart, not yet passed on
        self.reasoning_chunks = 0
        # Tool calls as the server streams them, by index: id, name, arguments so far.
        self.tool_calls: dict[int, dict[str, str]] = {}

    def text_of(self, event: dict[str, Any]) -> str:
        """The content `event` adds to the reply ("" for none); thinking a server
        sends apart (`reasoning_content`, or vLLM's `reasoning`) comes back as a
        `Reasoning` piece before it."""
        if isinstance(event.get("usage"), dict):
            self.usage_seen = self._read_usage(event["usage"]) or self.usage_seen
        if isinstance(event.get("timings"), dict):
            self.server_timings = event["timings"]
        text = ""
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            reason = choice.get("finish_reason")
            if reason:
                self.stats.finish_reason = reason if reason in ("length", "tool_calls") else "stop"
            # `delta` in a stream; `message` when a server answers with one completion.
            delta = choice.get("delta") or choice.get("message") or {}
            if not isinstance(delta, dict):
                continue
            for field in ("reasoning_content", "reasoning"):
                thought = delta.get(field)
                if isinstance(thought, str) and thought:
                    self.reasoning += thought
                    self.reasoning_chunks += 1
            content = delta.get("content")
            if isinstance(content, str):
                text += content
            self._read_tool_calls(delta.get("tool_calls"))
        if text:
            self.last_at = time.perf_counter()
            self.first_at = self.first_at or self.last_at
            self.chunks += 1
        return text

    def _read_tool_calls(self, deltas: Any) -> None:
        """Add a chunk's tool-call deltas (OpenAI streams a call's id and name
        first, then its arguments in pieces; a whole reply has them whole)."""
        for position, delta in enumerate(deltas if isinstance(deltas, list) else []):
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", position)
            call = self.tool_calls.setdefault(
                index if isinstance(index, int) else position, {"id": "", "name": "", "arguments": ""}
            )
            function: dict[str, Any] = delta["function"] if isinstance(delta.get("function"), dict) else {}
            if isinstance(delta.get("id"), str) and delta["id"]:
                call["id"] = delta["id"]
            if isinstance(function.get("name"), str) and function["name"]:
                call["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["arguments"] += function["arguments"]
            elif isinstance(function.get("arguments"), dict):
                call["arguments"] = json.dumps(function["arguments"])

    def calls(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The reply's tool calls: (id, name, arguments); arguments that are
        not a JSON object come as {} (the toolbox says they do not fit)."""
        found = []
        for index in sorted(self.tool_calls):
            call = self.tool_calls[index]
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = {}
            found.append(
                (call["id"] or f"call_{index}", call["name"], arguments if isinstance(arguments, dict) else {})
            )
        if found:
            self.stats.finish_reason = "tool_calls"
        return found

    def _read_usage(self, usage: dict[str, Any]) -> bool:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return False
        self.stats.usage.prompt_tokens = prompt
        self.stats.usage.completion_tokens = completion
        completion_details = usage.get("completion_tokens_details")
        thinking = completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None
        if isinstance(thinking, int):
            self.stats.usage.reasoning_tokens = thinking
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if isinstance(cached, int):
            self.stats.usage.cached_prompt_tokens = cached
        return True

    def finish(self, estimated_prompt_tokens: int) -> None:
        """Complete `stats`: times, the usage estimate when the server sent none,
        and the rates (llama-server's own, else measured here, network included)."""
        timings, usage = self.stats.timings, self.stats.usage
        timings.total_s = time.perf_counter() - self.started
        timings.ttft_s = (self.first_at - self.started) if self.first_at else timings.total_s
        if not self.usage_seen:
            usage.prompt_tokens = estimated_prompt_tokens
            usage.completion_tokens = self.chunks + self.reasoning_chunks
        if not usage.reasoning_tokens and self.reasoning_chunks:
            usage.reasoning_tokens = self.reasoning_chunks
        server = self.server_timings
        if isinstance(server.get("cache_n"), int) and not usage.cached_prompt_tokens:
            usage.cached_prompt_tokens = server["cache_n"]
        prefill, decode = server.get("prompt_per_second"), server.get("predicted_per_second")
        evaluated = usage.prompt_tokens - usage.cached_prompt_tokens
        if isinstance(prefill, (int, float)) and prefill > 0:
            timings.prefill_tokens_per_s = float(prefill)
        elif evaluated > 0 and self.first_at is not None and timings.ttft_s > 0:
            timings.prefill_tokens_per_s = evaluated / timings.ttft_s
        if isinstance(decode, (int, float)) and decode > 0:
            timings.decode_tokens_per_s = float(decode)
        elif (
            self.first_at is not None
            and self.last_at is not None
            and self.last_at > self.first_at
            and usage.completion_tokens > 1
        ):
            timings.decode_tokens_per_s = (usage.completion_tokens - 1) / (self.last_at - self.first_at)
