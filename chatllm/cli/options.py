"""Options shared by every generating command, declared once.

`@generation_options` adds --model, --temperature, --max-tokens, --ctx,
--gpu-layers, --seed, --json, --dry-run, --stats, --verbose, --pull and
--max-input-size to a command's signature and hands the command one
`RunOptions` instead. Every input the command reads (files, stdin, --kb,
--schema, --labels-file) is bounded by --max-input-size.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from chatllm.cli import completion
from chatllm.reading import DEFAULT_MAX_INPUT_SIZE
from chatllm.sizes import format_size, parse_size


@dataclass(frozen=True)
class RunOptions:
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    ctx: int | None = None
    gpu_layers: str | None = None
    seed: int | None = None
    json: bool = False
    dry_run: bool = False
    stats: bool = False
    verbose: bool = False
    pull: bool = False
    log: bool = True
    repetition: str | None = None
    repeat_penalty: float | None = None
    dry_multiplier: float | None = None
    think: bool | None = None
    reasoning_budget: int | None = None
    show_reasoning: bool = False
    chat_template: str | None = None
    max_input_size: int | None = None  # bytes; None: the max_input_size setting

    def sampling(self) -> dict[str, object]:
        """The sampling settings given on the command line (None: not given)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
            "dry_multiplier": self.dry_multiplier,
            "think": self.think,
            "reasoning_budget": self.reasoning_budget,
        }


class Repetition(str, Enum):
    strict = "strict"
    loops = "loops"
    off = "off"


def _chat_template(value: str | None) -> str | None:
    """A built-in template's name or a readable file (checked before any model loads)."""
    if value is None:
        return None
    from chatllm.engine.chat_templates import BUILTIN_NAMES

    if value in BUILTIN_NAMES:
        return value

    if not Path(value).expanduser().is_file():
        raise typer.BadParameter(f"'{value}' is neither a file nor a built-in template ({', '.join(BUILTIN_NAMES)})")
    return value


def _gpu_layers(value: str | None) -> str | None:
    if value is None or value == "auto" or (value.lstrip("-").isdigit() and int(value) >= -1):
        return value
    raise typer.BadParameter("use a number of layers (0 = CPU only, -1 = all) or 'auto'")


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


# Each shared option as a type alias (serve declares some of them itself), then
# the table of them with their defaults.
ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model: path to a .gguf, 'embedded', an alias, hf:org/repo[:QUANT], or openai:MODEL@URL.",
        autocompletion=completion.model_references,
        rich_help_panel="Model",
    ),
]
TemperatureOption = Annotated[
    Optional[float],
    typer.Option(
        "--temperature",
        min=0.0,
        max=2.0,
        help="Sampling temperature (0 = deterministic).",
        rich_help_panel="Generation",
    ),
]
MaxTokensOption = Annotated[
    Optional[int],
    typer.Option("--max-tokens", min=1, help="Most tokens to generate per reply.", rich_help_panel="Generation"),
]
ChatTemplateOption = Annotated[
    Optional[str],
    typer.Option(
        "--chat-template",
        callback=_chat_template,
        help="Chat template to use instead of the model's: a Jinja file, or chatml, llama3, gemma, plain (for a base model).",
        rich_help_panel="Model",
        show_default=False,
    ),
]
CtxOption = Annotated[
    Optional[int],
    typer.Option(
        "--ctx",
        min=128,
        help="Context window in tokens (default: the model's, at most 4096).",
        rich_help_panel="Model",
    ),
]
GpuLayersOption = Annotated[
    Optional[str],
    typer.Option(
        "--gpu-layers",
        callback=_gpu_layers,
        help="Layers to offload to the GPU: a number, -1 for all, or auto.",
        rich_help_panel="Model",
    ),
]
RepetitionOption = Annotated[
    Optional[Repetition],
    typer.Option(
        "--repetition",
        help="Stop a reply that repeats itself: strict (any repeated sentence or 8-word span), loops (only loops: a refrain may come back), off. Default: the template's.",
        rich_help_panel="Generation",
        show_default=False,
    ),
]
RepeatPenaltyOption = Annotated[
    Optional[float],
    typer.Option(
        "--repeat-penalty",
        min=0.0,
        help="Penalty for tokens of the last 64 (1 = off), as llama.cpp's.",
        rich_help_panel="Generation",
        show_default=False,
    ),
]
DryMultiplierOption = Annotated[
    Optional[float],
    typer.Option(
        "--dry-multiplier",
        min=0.0,
        help="Strength of llama.cpp's DRY sampler against repeated sequences (0 = off).",
        rich_help_panel="Generation",
        show_default=False,
    ),
]
ThinkOption = Annotated[
    Optional[bool],
    typer.Option(
        "--think/--no-think",
        help="Let a reasoning model think first, or not (templates with a thinking switch, such as Qwen3's; servers get chat_template_kwargs). Default: the model's.",
        rich_help_panel="Reasoning",
        show_default=False,
    ),
]
ReasoningBudgetOption = Annotated[
    Optional[int],
    typer.Option(
        "--reasoning-budget",
        min=0,
        help="Most tokens a reasoning model may think before its thinking is ended (local models).",
        rich_help_panel="Reasoning",
        show_default=False,
    ),
]
ShowReasoningOption = Annotated[
    bool,
    typer.Option(
        "--show-reasoning",
        help="Print a reasoning model's thinking (dim on a terminal; on stderr, so stdout stays the answer).",
        rich_help_panel="Reasoning",
    ),
]
SeedOption = Annotated[
    Optional[int],
    typer.Option("--seed", help="Random seed for reproducible sampling.", rich_help_panel="Generation"),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object with text, model, usage and timings.", rich_help_panel="Output"),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the rendered messages as JSON and exit without loading a model.",
        rich_help_panel="Output",
    ),
]
StatsOption = Annotated[
    bool,
    typer.Option("--stats", help="Print load time, token counts and speeds to stderr.", rich_help_panel="Output"),
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", help="Show llama.cpp's own log lines.", rich_help_panel="Output")
]
PullOption = Annotated[
    bool,
    typer.Option("--pull", help="Download the model if it is not cached yet, without asking.", rich_help_panel="Model"),
]
LogOption = Annotated[
    bool,
    typer.Option("--log/--no-log", help="Save this run to the history database.", rich_help_panel="Output"),
]
MaxInputSizeOption = Annotated[
    Optional[str],
    typer.Option(
        "--max-input-size",
        callback=_size,
        metavar="SIZE",
        help="Most input to read, files and stdin together (e.g. 64M, 1G); more is refused. "
        f"Default: the max_input_size setting ({format_size(DEFAULT_MAX_INPUT_SIZE)}).",
        rich_help_panel="Input",
        show_default=False,
    ),
]

_SHARED: dict[str, tuple[Any, Any]] = {
    "model": (ModelOption, None),
    "temperature": (TemperatureOption, None),
    "max_tokens": (MaxTokensOption, None),
    "chat_template": (ChatTemplateOption, None),
    "ctx": (CtxOption, None),
    "gpu_layers": (GpuLayersOption, None),
    "repetition": (RepetitionOption, None),
    "repeat_penalty": (RepeatPenaltyOption, None),
    "dry_multiplier": (DryMultiplierOption, None),
    "think": (ThinkOption, None),
    "reasoning_budget": (ReasoningBudgetOption, None),
    "show_reasoning": (ShowReasoningOption, False),
    "seed": (SeedOption, None),
    "json": (JsonOption, False),
    "dry_run": (DryRunOption, False),
    "stats": (StatsOption, False),
    "verbose": (VerboseOption, False),
    "pull": (PullOption, False),
    "log": (LogOption, True),
    "max_input_size": (MaxInputSizeOption, None),
}


def generation_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command taking `options: RunOptions` so typer sees the shared
    options as ordinary parameters."""
    signature = inspect.signature(command)
    # Resolve the command's own (string) annotations here, with their Annotated
    # metadata, because typer would look them up in this module's globals.
    hints = typing.get_type_hints(command, include_extras=True)
    own = [
        p.replace(annotation=hints.get(name, p.annotation))
        for name, p in signature.parameters.items()
        if name != "options"
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in _SHARED.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _SHARED}
        if isinstance(given["repetition"], Enum):
            given["repetition"] = given["repetition"].value
        options = RunOptions(**given)
        from chatllm.inputs import reading_limit

        with reading_limit(options.max_input_size):
            return command(options=options, **kwargs)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
