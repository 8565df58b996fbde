"""The Engine protocol and the plain data that crosses it.

Jobs talk to every backend (llama.cpp, an OpenAI-compatible server, the fake
engine used by unit tests) through this protocol only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Protocol, Sequence, runtime_checkable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "interrupted"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one reply. `None` means the backend's default."""

    temperature: float = 0.7
    max_tokens: int | None = None
    seed: int | None = None
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineOptions:
    """How to load a model. `n_ctx=None` means the model's trained context, capped
    at 4096 for memory; `n_gpu_layers=None` means all layers when llama.cpp was
    built with GPU offload, none otherwise; `flash_attn=None` means llama.cpp's
    own choice ("auto")."""

    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    seed: int | None = None
    verbose: bool = False
    flash_attn: bool | None = None
    # Folder for saved llama.cpp prefix states (None disables the disk cache).
    state_cache_dir: Path | None = None
    state_cache_max_bytes: int = 2 * 1024**3


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass
class Timings:
    """Seconds and rates of one reply. Rates are measured around llama.cpp's own
    work (prefill = evaluating prompt tokens not served from cache; decode =
    generating tokens after the first), as llama-bench counts them."""

    load_s: float = 0.0
    ttft_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    total_s: float = 0.0


@dataclass
class GenerationStats:
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    finish_reason: FinishReason = "stop"


@runtime_checkable
class Engine(Protocol):
    """A loaded model that streams replies.

    `stream` yields text pieces as they are generated; once the iterator is
    exhausted (or closed early, e.g. on Ctrl-C) `last_stats` describes that reply.
    Closing the iterator early sets `finish_reason` to "interrupted".
    Backends keep whatever cache they can between calls (KV cache of the common
    prefix), so a chat turn only evaluates new tokens.
    """

    model_name: str
    context_size: int
    load_s: float
    last_stats: GenerationStats

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no chat-template wrapping)."""
        ...

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the prompt for `messages` takes after the chat template is applied,
        including the opening of the assistant's turn."""
        ...

    def close(self) -> None: ...
