"""Shell-completion callbacks. They run on every <TAB>, so they import nothing
heavy and never load a model or touch the network.

The shell scripts in completions/ (typer's own, see scripts/generate_completions.py)
call `chatllm` back with `_CHATLLM_COMPLETE=complete_bash` (or _zsh, _fish);
typer then parses the words typed so far and asks these callbacks for values.
"""

from __future__ import annotations

import os
from typing import Any

import typer.core
from typer._completion_classes import BashComplete

from chatllm.jobs.table import option_of

COMPLETE_VARIABLE = "_CHATLLM_COMPLETE"


def model_references(incomplete: str) -> list[str]:
    choices = ["embedded"]
    try:
        from chatllm.hub import catalog

        choices += catalog.alias_names()
    except Exception:  # completion must never fail loudly
        pass
    try:
        from chatllm.hub import resolve as hub

        choices += hub.cached_model_references()
    except Exception:
        pass
    return [c for c in choices if c.startswith(incomplete)]


def template_names(incomplete: str) -> list[str]:
    from chatllm.templates import template_files

    return [name for name in template_files() if name.startswith(incomplete)]


def persona_names(incomplete: str) -> list[str]:
    from chatllm.templates import template_files, template_kind

    return [name for name in template_files() if name.startswith(incomplete) and template_kind(name) == "persona"]


def language_codes(incomplete: str) -> list[str]:
    from chatllm.languages import COMMON_LANGUAGE_CODES

    return [code for code in COMMON_LANGUAGE_CODES if code.lower().startswith(incomplete.lower())]


def conversation_ids(incomplete: str) -> list[tuple[str, str]]:
    """IDs of saved conversations, newest first, each with its title as help."""
    try:
        from chatllm.history.store import history_path, recent_conversations

        if not history_path().exists():  # a <TAB> must not create the database
            return []
        rows = recent_conversations(limit=50)
    except Exception:
        return []
    return [(str(row.id), row.title) for row in rows if str(row.id).startswith(incomplete)]


def setting_keys(ctx: Any, incomplete: str) -> list[str]:
    """Setting names, and `commands.CMD.OPTION` keys from the app's own commands."""
    from chatllm.config.settings import setting_names

    keys = [name for name in setting_names() if name != "commands"]
    if incomplete.startswith("commands."):
        from chatllm.cli.command_defaults import display_name, option_names

        def walk(group: Any, prefix: str) -> None:
            for name, command in getattr(group, "commands", {}).items():
                if hasattr(command, "commands"):
                    walk(command, f"{prefix}{name}.")
                else:
                    keys.extend(
                        f"{prefix}{name}.{option}"
                        for option in sorted({display_name(p) for p in option_names(command).values()})
                    )

        walk(ctx.find_root().command, "commands.")
    else:
        keys.append("commands.")
    return [key for key in keys if key.startswith(incomplete)]


def setting_values(ctx: Any, incomplete: str) -> list[str]:
    """Values for `chatllm config set KEY <TAB>` where the key has a known set:
    a setting's, or a job option's (`commands.CMD.OPTION`, from the job table)."""
    key = str(ctx.params.get("key") or "")
    if key == "default_model":
        return model_references(incomplete)
    if key == "log":
        choices = ["true", "false"]
    elif key == "gpu_layers":
        choices = ["auto", "-1", "0"]
    elif key.startswith("commands.") and key.count(".") == 2:
        _, command, option = key.split(".")
        return _option_values(command, option, incomplete)
    else:
        return []
    return [choice for choice in choices if choice.startswith(incomplete)]


def _option_values(command: str, name: str, incomplete: str) -> list[str]:
    """What a job's option takes, for `commands.CMD.OPTION` keys."""
    option = option_of(command, name)
    if option is None:
        return []
    sources = {"languages": language_codes, "models": model_references, "personas": persona_names}
    if option.complete in sources:
        return sources[option.complete](incomplete)
    return [choice for choice in option.choices if choice.startswith(incomplete)]


def _skip_value_conversion_while_completing() -> None:
    """Make <TAB> fast: typer 0.29 converts every option value through a
    pydantic TypeAdapter, even while only parsing the words typed so far for
    completion (click's "resilient parsing"); importing pydantic and building
    adapters is most of the time a completion takes (~150 ms of ~220 ms).
    Completion only needs the words, so in that mode values are passed through
    as typed. pyproject.toml pins typer below 0.29 for the same cost on every
    command; this keeps completion fast if the pin is lifted."""
    parameter = getattr(typer.core, "_TyperParameter", None)
    if parameter is None:  # typer without pydantic conversion: nothing to skip
        return
    convert = parameter.process_value

    def process_value(self: Any, ctx: Any, value: Any) -> Any:
        if ctx.resilient_parsing:
            return value
        return convert(self, ctx, value)

    parameter.process_value = process_value


def _join_words_bash_split_at_colons() -> None:
    """bash splits words at ':' (it is in COMP_WORDBREAKS), so typer's bash
    script hands us `-m qwen3 : 0.6` for `-m qwen3:0.6`, and bash replaces
    only the text after the last ':'. Glue the pieces back for matching, and
    answer with what follows that colon (bash-completion's
    __ltrim_colon_completions does the same)."""
    get_args, format_item = BashComplete.get_completion_args, BashComplete.format_completion

    def get_completion_args(self: Any) -> tuple[list[str], str]:
        args, incomplete = get_args(self)
        words = join_colon_pieces([*args, incomplete])
        self.colon_prefix = words[-1].rpartition(":")[0] + ":" if ":" in words[-1] else ""
        return words[:-1], words[-1]

    def format_completion(self: Any, item: Any) -> str:
        text = format_item(self, item)
        prefix = getattr(self, "colon_prefix", "")
        return text[len(prefix) :] if prefix and text.startswith(prefix) else text

    BashComplete.get_completion_args = get_completion_args  # type: ignore[method-assign]
    BashComplete.format_completion = format_completion  # type: ignore[method-assign]


def join_colon_pieces(words: list[str]) -> list[str]:
    """["-m", "hf", ":", "org/repo", ":", "Q4"] -> ["-m", "hf:org/repo:Q4"]."""
    joined: list[str] = []
    for index, word in enumerate(words):
        if joined and (word == ":" or (joined[-1].endswith(":") and words[index - 1] == ":")):
            joined[-1] += word
        else:
            joined.append(word)
    return joined


if os.environ.get(COMPLETE_VARIABLE):
    # Only while the shell asks for completions: normal runs are untouched.
    _skip_value_conversion_while_completing()
    if os.environ[COMPLETE_VARIABLE].endswith("_bash"):
        _join_words_bash_split_at_colons()
