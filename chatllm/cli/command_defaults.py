"""Per-command option defaults from config.yaml, as click's `default_map`.

    commands:
      translate: {to: fr}
      summarize: {length: short, max-tokens: 300}
      templates: {show: {...}}        # a command group nests its commands

The app's root callback sets `ctx.default_map` from these, so every command's
options take them without code of their own; the command line still wins.
Options are named as on the command line without dashes (`to`, `from`,
`max-tokens`; `max_tokens` works too). Unknown commands, unknown options and
values an option would refuse are ConfigErrors naming the file and line, found
before the command runs.
"""

from __future__ import annotations

from typing import Any

from typer import _click as click

from chatllm.config.settings import load_settings, where_is
from chatllm.errors import ConfigError


def apply_command_defaults(ctx: Any) -> None:
    """Load the settings and set `ctx.default_map` (a click Context of the root
    command); defaults already in `ctx.default_map` (e.g. set by a test) win."""
    commands = load_settings().commands
    if not commands:
        return
    defaults = default_map(ctx.command, commands, ctx)
    ctx.default_map = _merge(defaults, ctx.default_map or {})


def default_map(group: Any, commands: dict[str, Any], ctx: Any, prefix: str = "commands.") -> dict[str, Any]:
    """click's default_map for `group` from the `commands` setting."""
    result: dict[str, Any] = {}
    available = getattr(group, "commands", {})
    for name, values in commands.items():
        command = available.get(name)
        if command is None:
            known = ", ".join(sorted(available))
            raise ConfigError(f"{_where(prefix + name)}unknown command '{name}' (commands: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{_where(prefix + name)}'{prefix + name}' must be a mapping of option names to values")
        if hasattr(command, "commands"):
            result[name] = default_map(command, values, ctx, f"{prefix}{name}.")
        else:
            result[name] = _option_defaults(command, values, ctx, f"{prefix}{name}.")
    return result


def option_parameter(command: Any, name: str, key_path: str, in_file: bool = True) -> Any:
    """The click parameter of `command` an option name in the settings means.
    Errors name the file and line of `key_path` when `in_file`."""
    options = option_names(command)
    if name not in options:
        known = ", ".join(sorted({display_name(p) for p in options.values()}))
        choices = f"options: {known}" if known else "it takes no options"
        raise ConfigError(f"{_where(key_path, in_file)}'{command.name}' has no option '{name}' ({choices})")
    return options[name]


def option_names(command: Any) -> dict[str, Any]:
    """Every spelling a setting may use for each option of `command`."""
    names: dict[str, Any] = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or not param.expose_value or param.name is None:
            continue
        spellings = {param.name, param.name.replace("_", "-")}
        spellings |= {opt.lstrip("-") for opt in param.opts if opt.startswith("--")}
        for spelling in spellings:
            names[spelling] = param
    return names


def check_value(command: Any, param: Any, value: Any, key_path: str, ctx: Any = None, in_file: bool = True) -> Any:
    """`value` converted as the option converts it (e.g. "0.2" -> 0.2);
    ConfigError naming `key_path` (and its file:line when `in_file`) if the
    option refuses it."""
    try:
        # The option's own conversion and checks, as click will apply them.
        return param.process_value(click.Context(command, parent=ctx, info_name=command.name), _as_given(param, value))
    except click.exceptions.ClickException as error:
        message = getattr(error, "message", None) or error.format_message()
        message = message.removeprefix("Value error, ")  # pydantic's wording
        raise ConfigError(f"{_where(key_path, in_file)}{key_path}: {message}") from None


def _as_given(param: Any, value: Any) -> Any:
    # A repeatable option (--var, --kb) takes a list; `kb: notes.md` means one.
    return [value] if getattr(param, "multiple", False) and not isinstance(value, list) else value


def _option_defaults(command: Any, values: dict[str, Any], ctx: Any, prefix: str) -> dict[str, Any]:
    defaults = {}
    for name, value in values.items():
        param = option_parameter(command, str(name), prefix + str(name))
        check_value(command, param, value, prefix + str(name), ctx)
        # click converts default_map values itself, so they stay as written.
        defaults[param.name] = _as_given(param, value)
    return defaults


def display_name(param: Any) -> str:
    long = [opt[2:] for opt in param.opts if opt.startswith("--")]
    return long[0] if long else param.name


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def _where(key_path: str, in_file: bool = True) -> str:
    """'FILE:LINE: ' of `key_path` in the settings file, or '' when the value
    is not from the file (`chatllm config set` checks a value before writing)."""
    if not in_file:
        return ""

    return f"{where_is(key_path)}: "
