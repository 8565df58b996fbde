"""Typer's view of the options the job table declares (jobs/table.py).

Each plain `Option` becomes an annotated parameter typer reads: its flags,
help, panel, bounds, choices, <TAB> completion, and the checks typer runs as
it parses (`_CHECKS`). Every generating command takes the shared options
(--model, --temperature, --max-tokens, --ctx, --json, --dry-run, --stats, …)
and hands its job one `RunOptions` with them; `serve` takes some of them
(the aliases at the end).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from chatllm.cli import completion
from chatllm.jobs.options import SHARED, Option, shared
from chatllm.sizes import parse_size


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


# What typer checks (and turns into what the job takes) as it parses an option's value.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "chat_template": _chat_template,
    "gpu_layers": _gpu_layers,
    "max_input_size": _size,
}
# Where <TAB> finds an option's values (Option.complete).
_COMPLETIONS: dict[str, Callable[..., Any]] = {
    "models": completion.model_references,
    "templates": completion.template_names,
    "personas": completion.persona_names,
    "languages": completion.language_codes,
    "conversations": completion.conversation_ids,
}


@functools.cache
def _choices(option: Option) -> type[Enum]:
    """An Enum of the option's choices: typer shows and checks them."""
    return Enum(option.name.title().replace("_", ""), {choice: choice for choice in option.choices}, type=str)  # type: ignore[return-value]


def annotation(option: Option) -> Any:
    """The annotated type typer reads for `option`."""
    kind: Any = _choices(option) if option.choices else option.kind
    if option.many:
        kind = list[kind]
    if not option.required and (option.default is None):
        kind = Optional[kind]  # noqa: UP045 - typer needs the Optional form
    extra: dict[str, Any] = {"help": option.help, "show_default": option.show_default}
    if option.complete:
        extra["autocompletion"] = _COMPLETIONS[option.complete]
    if not option.flags:
        return Annotated[kind, typer.Argument(**extra)]
    if option.panel:
        extra["rich_help_panel"] = option.panel
    if option.name in _CHECKS:
        extra["callback"] = _CHECKS[option.name]
    if option.metavar is not None:
        extra["metavar"] = option.metavar
    if option.low is not None:
        extra["min"] = option.low
    if option.high is not None:
        extra["max"] = option.high
    return Annotated[kind, typer.Option(*option.flags, **extra)]


def parameter(option: Option) -> inspect.Parameter:
    """`option` as a keyword parameter of a typer command."""
    default = ... if option.required and option.flags else option.default
    if option.required and not option.flags:
        default = inspect.Parameter.empty
    return inspect.Parameter(
        option.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation(option), default=default
    )


def plain(value: Any) -> Any:
    """A parsed value as the job takes it (a choice's text, not its Enum)."""
    return value.value if isinstance(value, Enum) else value


def run_options(values: dict[str, Any]) -> RunOptions:
    """The shared options out of a command's parsed `values` (taken out of them)."""
    return RunOptions(**{option.name: plain(values.pop(option.name)) for option in SHARED})


SHARED_PARAMETERS = [parameter(option) for option in SHARED]

# The shared options `serve` takes (it leaves out the output ones: a server has no --json or --dry-run).
ModelOption = annotation(shared("model"))
TemperatureOption = annotation(shared("temperature"))
MaxTokensOption = annotation(shared("max_tokens"))
CtxOption = annotation(shared("ctx"))
GpuLayersOption = annotation(shared("gpu_layers"))
RepetitionOption = annotation(shared("repetition"))
ThinkOption = annotation(shared("think"))
ReasoningBudgetOption = annotation(shared("reasoning_budget"))
SeedOption = annotation(shared("seed"))
VerboseOption = annotation(shared("verbose"))
PullOption = annotation(shared("pull"))
