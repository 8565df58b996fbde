"""The options of jobs, declared as plain data: a job's own (jobs/table.py)
and the ones every generating command shares (`SHARED`). cli/options.py
makes typer's parameters of them; early loading reads them before typer is
imported at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatllm.reading import DEFAULT_MAX_INPUT_SIZE
from chatllm.sizes import format_size
from chatllm.tools.limits import DEFAULT_TIMEOUT_S, DEFAULT_TOOL_LIMIT, MAX_RESULT_BYTES


@dataclass(frozen=True)
class Option:
    """A command-line option (or, without flags, an argument), as plain data.

    `complete` names a source of values for <TAB> (cli/completion.py);
    `loads` marks a shared option that changes what model is loaded, or how,
    or that nothing is (early loading waits for the parsed command then)."""

    name: str
    flags: tuple[str, ...] = ()
    help: str = ""
    kind: type = str
    default: Any = None
    choices: tuple[str, ...] = ()
    many: bool = False
    required: bool = False
    complete: str | None = None
    panel: str | None = None
    show_default: bool = True
    low: float | None = None
    high: float | None = None
    loads: bool = False
    metavar: str | None = None


# --------------------------------------------------------------------------- shared options

MODEL_PANEL, GENERATION_PANEL, REASONING_PANEL, OUTPUT_PANEL = "Model", "Generation", "Reasoning", "Output"

# The options every generating command takes (cli/options.py hands them to a
# command as one RunOptions); `serve` takes some of them too.
SHARED: tuple[Option, ...] = (
    Option(
        "model",
        ("--model", "-m"),
        "Model: path to a .gguf, 'embedded', an alias, hf:org/repo[:QUANT], or openai:MODEL@URL.",
        complete="models",
        panel=MODEL_PANEL,
    ),
    Option(
        "temperature",
        ("--temperature",),
        "Sampling temperature (0 = deterministic).",
        float,
        low=0.0,
        high=2.0,
        panel=GENERATION_PANEL,
    ),
    Option("max_tokens", ("--max-tokens",), "Most tokens to generate per reply.", int, low=1, panel=GENERATION_PANEL),
    Option(
        "chat_template",
        ("--chat-template",),
        "Chat template to use instead of the model's: a Jinja file, or chatml, llama3, gemma, plain (for a base model).",
        panel=MODEL_PANEL,
        show_default=False,
    ),
    Option(
        "ctx",
        ("--ctx",),
        "Context window in tokens (default: the model's, at most 4096).",
        int,
        low=128,
        panel=MODEL_PANEL,
        loads=True,
    ),
    Option(
        "gpu_layers",
        ("--gpu-layers",),
        "Layers to offload to the GPU: a number, -1 for all, or auto.",
        panel=MODEL_PANEL,
        loads=True,
    ),
    Option(
        "repetition",
        ("--repetition",),
        "Stop a reply that repeats itself: strict (any repeated sentence or 8-word span), loops (only loops: a "
        "refrain may come back), off. Default: the template's.",
        choices=("strict", "loops", "off"),
        panel=GENERATION_PANEL,
        show_default=False,
    ),
    Option(
        "repeat_penalty",
        ("--repeat-penalty",),
        "Penalty for tokens of the last 64 (1 = off), as llama.cpp's.",
        float,
        low=0.0,
        panel=GENERATION_PANEL,
        show_default=False,
    ),
    Option(
        "dry_multiplier",
        ("--dry-multiplier",),
        "Strength of llama.cpp's DRY sampler against repeated sequences (0 = off).",
        float,
        low=0.0,
        panel=GENERATION_PANEL,
        show_default=False,
    ),
    Option(
        "think",
        ("--think/--no-think",),
        "Let a reasoning model think first, or not (templates with a thinking switch, such as Qwen3's; servers get "
        "chat_template_kwargs). Default: the model's.",
        bool,
        panel=REASONING_PANEL,
        show_default=False,
    ),
    Option(
        "reasoning_budget",
        ("--reasoning-budget",),
        "Most tokens a reasoning model may think before its thinking is ended (local models).",
        int,
        low=0,
        panel=REASONING_PANEL,
        show_default=False,
    ),
    Option(
        "show_reasoning",
        ("--show-reasoning",),
        "Print a reasoning model's thinking (dim on a terminal; on stderr, so stdout stays the answer).",
        bool,
        False,
        panel=REASONING_PANEL,
    ),
    Option("seed", ("--seed",), "Random seed for reproducible sampling.", int, panel=GENERATION_PANEL, loads=True),
    Option(
        "json",
        ("--json",),
        "Print one JSON object with text, model, usage and timings.",
        bool,
        False,
        panel=OUTPUT_PANEL,
    ),
    Option(
        "dry_run",
        ("--dry-run",),
        "Print the rendered messages as JSON and exit without loading a model.",
        bool,
        False,
        panel=OUTPUT_PANEL,
        loads=True,
    ),
    Option(
        "stats", ("--stats",), "Print load time, token counts and speeds to stderr.", bool, False, panel=OUTPUT_PANEL
    ),
    Option("verbose", ("--verbose",), "Show llama.cpp's own log lines.", bool, False, panel=OUTPUT_PANEL, loads=True),
    Option(
        "pull",
        ("--pull",),
        "Download the model if it is not cached yet, without asking.",
        bool,
        False,
        panel=MODEL_PANEL,
        loads=True,
    ),
    Option("log", ("--log/--no-log",), "Save this run to the history database.", bool, True, panel=OUTPUT_PANEL),
    # Every input a command reads (files, stdin, --kb, --schema, --labels-file) is bounded by it.
    Option(
        "max_input_size",
        ("--max-input-size",),
        "Most input to read, files and stdin together (e.g. 64M, 1G); more is refused. "
        f"Default: the max_input_size setting ({format_size(DEFAULT_MAX_INPUT_SIZE)}).",
        panel="Input",
        show_default=False,
        metavar="SIZE",
    ),
)


# --------------------------------------------------------------------------- items at once

# Items a job of many replies generates together in one llama.cpp batch
# (extract --jsonl's lines, summarize's map steps; jobs/concurrent_items.py).
# 1 keeps the single-reply engine. The figures behind the default are in
# benchmarks/README.md, "Many items at once".
DEFAULT_PARALLEL_ITEMS = 1
PARALLEL_ITEMS = Option(
    "parallel",
    ("--parallel",),
    "Inputs (extract) or parts of a long text (summarize) worked on at once, in one batch on a local model; "
    "each gets --ctx tokens of context.",
    int,
    DEFAULT_PARALLEL_ITEMS,
    low=1,
    high=64,
    panel=MODEL_PANEL,
    loads=True,
)


def sequences_for(values: dict[str, Any]) -> int | None:
    """The sequences a job's engine decodes together (EngineOptions.sequences):
    its --parallel, or None for the single-reply engine."""
    wanted = values.get(PARALLEL_ITEMS.name) or 1
    return wanted if wanted > 1 else None


# --------------------------------------------------------------------------- tools (issue 23)

TOOLS_PANEL = "Tools"
# The options of the jobs whose replies may call tools (chat and run, jobs/table.py).
TOOL_OPTIONS: tuple[Option, ...] = (
    Option(
        "tools",
        ("--tools",),
        "A YAML file of tools the model may call: local commands (argv lists, never a shell) and MCP servers "
        "(repeatable).",
        Path,
        many=True,
        panel=TOOLS_PANEL,
        show_default=False,
        metavar="FILE",
    ),
    Option(
        "mcp",
        ("--mcp",),
        "An MCP server whose tools the model may call: a command line started over stdio, or an http(s):// URL "
        "(repeatable).",
        many=True,
        panel=TOOLS_PANEL,
        show_default=False,
        metavar="SERVER",
    ),
    Option(
        "yes",
        ("--yes", "-y"),
        "Run every tool call without asking (else a terminal asks y/N for a tool not declared safe, and a pipe "
        "refuses it).",
        bool,
        False,
        panel=TOOLS_PANEL,
    ),
    Option(
        "tool_limit",
        ("--tool-limit",),
        f"Most tool calls per reply (each may take {DEFAULT_TIMEOUT_S:g} s and return "
        f"{format_size(MAX_RESULT_BYTES)}).",
        int,
        DEFAULT_TOOL_LIMIT,
        low=0,
        panel=TOOLS_PANEL,
    ),
    Option(
        "tool_choice",
        ("--tool-choice",),
        "auto (the model decides), required (each reply calls a tool first), none (no tools), or a tool's name "
        "(each reply calls it first).",
        default="auto",
        panel=TOOLS_PANEL,
        metavar="CHOICE",
    ),
)


def shared(name: str) -> Option:
    return next(option for option in SHARED if option.name == name)


def load_flags() -> tuple[str, ...]:
    """Words that change what a command loads, or mean it loads nothing."""
    flags = [flag.split("/")[0] for option in (*SHARED, PARALLEL_ITEMS) if option.loads for flag in option.flags]
    return (*flags, "--help", "-h")
