"""OpenAI's JSON shapes for `chatllm serve`'s replies: completions, stream
chunks, usage, and llama-server's `timings` (which chatllm's remote engine
reads)."""

from __future__ import annotations

from typing import Any

from chatllm.engine.base import GenerationStats


def usage_json(stats: GenerationStats) -> dict[str, Any]:
    usage = stats.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def timings_json(stats: GenerationStats) -> dict[str, Any]:
    """llama-server's `timings` object, which chatllm's remote engine reads."""
    usage, timings = stats.usage, stats.timings
    return {
        "prompt_n": usage.prompt_tokens - usage.cached_prompt_tokens,
        "cache_n": usage.cached_prompt_tokens,
        "prompt_per_second": round(timings.prefill_tokens_per_s, 2),
        "predicted_n": usage.completion_tokens,
        "predicted_per_second": round(timings.decode_tokens_per_s, 2),
    }


def finish_reason(stats: GenerationStats) -> str:
    """OpenAI's finish_reason, or chatllm's "repetition" (docs/ARCHITECTURE.md:
    the same names in --json, history and here). A reply that called tools
    says "tool_calls" (completion_json, and the stream's last chunk)."""
    return stats.finish_reason if stats.finish_reason in ("length", "repetition") else "stop"


def job_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """What a job adds to its reply (Finish.fields: ask's `citations` and
    `answered`), as fields of the response beside OpenAI's, as Perplexity's
    API sends its `citations`; `text` is --json's, the message's content here."""
    return {name: value for name, value in fields.items() if name != "text"}


def completion_json(
    reply_id: str,
    created: int,
    model: str,
    text: str,
    stats: GenerationStats,
    reasoning: str = "",
    fields: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole reply; `tool_calls` as server/tool_json.py writes them (the
    content is null beside them when the model said nothing else, as OpenAI's)."""
    return {
        "id": reply_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None if tool_calls and not text else text,
                    **({"reasoning_content": reasoning} if reasoning else {}),
                    **({"tool_calls": tool_calls} if tool_calls else {}),
                },
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_calls else finish_reason(stats),
            }
        ],
        "usage": usage_json(stats),
        "timings": timings_json(stats),
        **job_fields(fields or {}),
    }


def chunk_json(
    reply_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": reply_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
