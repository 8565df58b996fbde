"""The Engine protocol and the plain data that crosses it.

Jobs talk to every backend (llama.cpp, an OpenAI-compatible server, the fake
engine used by unit tests) through this protocol only.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from chatllm.reply.events import Reasoning, ToolCall

Role = Literal["system", "user", "assistant", "tool"]
# Text as it streams, in pieces; closing it early stops what makes it.
Stream = Generator[str, None, None]
# A reply as an engine streams it: the answer's text in `str` pieces, a
# reasoning model's thinking as `Reasoning` events, the tool calls it makes as
# `ToolCall` events (issue 23); closing it early stops the generation.
EngineStream = Generator["str | Reasoning | ToolCall", None, None]
# "tool_calls": the reply ended asking for tools (serve's replies; a chat turn
# goes on once their results are in).
FinishReason = Literal["stop", "length", "repetition", "interrupted", "tool_calls"]


@dataclass(frozen=True)
class MessageToolCall:
    """A tool call an assistant message made; `arguments` is JSON text, as
    OpenAI's API carries it (and so a Message stays hashable)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # An assistant message that called tools, and a "tool" message's answer to one.
    tool_calls: tuple[MessageToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""

    def openai_json(self) -> dict[str, Any]:
        """The message in OpenAI's shape: its role and content, an assistant's
        calls, and the call a tool's message answers."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.role == "tool":
            data["tool_call_id"] = self.tool_call_id
        return data


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a model is told of it: OpenAI's function description."""

    name: str
    description: str
    parameters: str  # a JSON Schema of type object, as JSON text

    def function(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": json.loads(self.parameters)}


def _sampling(default: Any, low: float | None = None, high: float | None = None, *, whole: bool = False) -> Any:
    """A sampling setting and the range a request or template may give it."""
    return field(default=default, metadata={"low": low, "high": high, "whole": whole})


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one reply; llama.cpp's names and defaults. This
    class is the one list of them: templates, `chatllm serve` and the remote
    backend read their names and ranges from its fields (`sampling_settings`)."""

    temperature: float = _sampling(0.7, 0.0, 2.0)
    max_tokens: int | None = _sampling(None, 1, None, whole=True)
    seed: int | None = _sampling(None, whole=True)
    top_p: float = _sampling(0.95, 0.0, 1.0)
    top_k: int = _sampling(40, 0, None, whole=True)
    min_p: float = _sampling(0.05, 0.0, 1.0)
    # Penalties on tokens seen in the last `repeat_last_n` (-1: the whole context).
    repeat_penalty: float = _sampling(1.0, 0.0, None)
    repeat_last_n: int = _sampling(64, -1, None, whole=True)
    frequency_penalty: float = _sampling(0.0, -2.0, 2.0)
    presence_penalty: float = _sampling(0.0, -2.0, 2.0)
    # DRY ("don't repeat yourself"): penalizes extending a sequence that already
    # occurred; 0 turns it off. llama-server's names.
    dry_multiplier: float = _sampling(0.0, 0.0, None)
    dry_base: float = _sampling(1.75, 1.0, None)
    dry_allowed_length: int = _sampling(2, 1, None, whole=True)
    dry_penalty_last_n: int = _sampling(-1, -1, None, whole=True)
    stop: tuple[str, ...] = ()
    # Output constrained by construction: a JSON Schema (as JSON text), or a raw
    # GBNF grammar (llama.cpp only). See engine/grammar.py.
    json_schema: str | None = None
    grammar: str | None = None
    # Reasoning models: think or not (None: the template's default), and at most
    # this many thinking tokens before the end of the thinking is forced (llama.cpp).
    think: bool | None = None
    reasoning_budget: int | None = None
    # Tools the model may call (issue 23), OpenAI's `tool_choice` ("auto",
    # "none", "required" or a tool's name) and whether one reply may call
    # several. Calls come out of `stream` as ToolCall events.
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True


@dataclass(frozen=True)
class SamplingSetting:
    name: str
    low: float | None
    high: float | None
    whole: bool


def sampling_settings() -> list[SamplingSetting]:
    """The numeric settings of GenerationParams (every field but `stop`)."""
    return [
        SamplingSetting(f.name, f.metadata["low"], f.metadata["high"], f.metadata["whole"])
        for f in fields(GenerationParams)
        if f.metadata
    ]


def generation_params(settings: dict[str, Any]) -> GenerationParams:
    """GenerationParams from a mapping that may hold other keys too (ignored) and
    None for "not given"; `stop` may be one string or a list."""
    known = {f.name for f in fields(GenerationParams)}
    values = {k: v for k, v in settings.items() if k in known and v is not None}
    if "stop" in values:
        stop = values["stop"]
        values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return GenerationParams(**values)


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
    weight_repack: bool | None = None  # None: off on CPUs with AMX (see llama.weight_repacking_enabled)
    # Folder for saved llama.cpp prefix states (None disables the disk cache).
    state_cache_dir: Path | None = None
    state_cache_max_bytes: int = 2 * 1024**3
    # Requests decoded together by a scheduler thread (`serve --parallel`); None:
    # the single-caller engine, whose decode loop runs on the caller's thread.
    sequences: int | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0  # every generated token, thinking included (as OpenAI counts)
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, those of a reasoning model's thinking


def usage_json(usage: Usage) -> dict[str, int]:
    """Usage as --json, history and serve report it: OpenAI's names, and
    reasoning_tokens only for a model that thought."""
    data = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_prompt_tokens": usage.cached_prompt_tokens,
    }
    if usage.reasoning_tokens:
        data["reasoning_tokens"] = usage.reasoning_tokens
    return data


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
    # A reasoning model's reply ended still thinking, with no answer.
    thinking_unclosed: bool = False
    # Tools a job ran for its replies (issue 23; the Meter counts them), and their seconds.
    tool_calls: int = 0
    tool_seconds: float = 0.0


class Capabilities:
    """What an engine can do beyond streaming a reply's text, declared by every
    engine as class attributes (the defaults here: the least). Jobs and the CLI
    read these instead of probing an engine's methods.

    can_stream             the reply arrives piece by piece as it is generated
    supports_grammar       a GBNF grammar (or a JSON Schema turned into one) constrains sampling locally
    supports_scoring       `score`: the log-probability of given continuations
    supports_state_saving  evaluated prompt prefixes are saved and restored across runs
    supports_tools         the model can ask for tools (issue 23)
    max_sequences          replies it can generate at once (issue 24)
    supports_chat_template `use_chat_template`: prompts rendered with a given chat template
    """

    can_stream: bool = False
    supports_grammar: bool = False
    supports_scoring: bool = False
    supports_state_saving: bool = False
    supports_tools: bool = False
    max_sequences: int = 1
    supports_chat_template: bool = False
    # time.perf_counter() when the engine could first generate (None: from
    # its creation): a job's own time counts from then (see Meter.stats).
    ready_at: float | None = None
    # Where the model is served, for messages about its replies (None: here).
    base_url: str | None = None
    # The model file's size, to guess its speed from before it has run
    # (jobs/pacing.py); None where there is no file here.
    model_bytes: int | None = None

    @property
    def has_chat_template(self) -> bool:
        """Whether the model carries a chat template of its own (False: a base
        model, prompted in ChatML); a server applies its own."""
        return True

    @property
    def thinking_switch(self) -> bool:
        """Whether the chat template can switch a reasoning model's thinking
        on and off (a server is told and decides)."""
        return True

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]:
        """The log-probability of each continuation as the whole reply (only
        where `supports_scoring`)."""
        raise TypeError(f"{type(self).__name__} cannot score continuations")

    def use_chat_template(self, template: str) -> None:
        """Render prompts with `template` (Jinja text) instead of the model's
        own (only where `supports_chat_template`)."""
        raise TypeError(f"{type(self).__name__} takes no chat template")


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
    # What it can do (see Capabilities, which every engine derives from).
    can_stream: bool
    supports_grammar: bool
    supports_scoring: bool
    supports_state_saving: bool
    supports_tools: bool
    max_sequences: int
    supports_chat_template: bool
    ready_at: float | None
    model_bytes: int | None

    @property
    def base_url(self) -> str | None: ...

    @property
    def identity(self) -> str | None:
        """A fingerprint of the model's weights, for what is kept on disk per
        model (a persona judge's calibration); None where the weights are not here."""
        ...

    @property
    def has_chat_template(self) -> bool: ...

    @property
    def thinking_switch(self) -> bool: ...

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no chat-template wrapping)."""
        ...

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the prompt for `messages` takes after the chat template is applied,
        including the opening of the assistant's turn."""
        ...

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]: ...

    def use_chat_template(self, template: str) -> None: ...

    def close(self) -> None: ...


class Scorer(Protocol):
    """What can tell how likely a continuation is: an engine that
    `supports_scoring`, or a Meter over one (classify's label probabilities, a
    persona's coverage judge)."""

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]: ...
