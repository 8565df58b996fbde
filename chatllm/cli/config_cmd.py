"""`chatllm config show|get|set|unset|path`: the settings file from the command line."""

from __future__ import annotations

import json as json_module
from dataclasses import asdict
from enum import Enum
from pathlib import PurePath
from typing import Annotated, Any

import typer

from chatllm.cli import completion
from chatllm.errors import ConfigError

KeyArgument = Annotated[
    str,
    typer.Argument(
        help="Setting name, e.g. ctx, default_model, commands.translate.to.",
        autocompletion=completion.setting_keys,
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    config = typer.Typer(help="Show and change settings (config.yaml in your config folder).", no_args_is_help=True)
    app.add_typer(config, name="config")
    config.command("show")(config_show)
    config.command("get")(config_get)
    # ignore_unknown_options: `set gpu_layers -1` is a value, not an option.
    config.command("set", context_settings={"ignore_unknown_options": True})(config_set)
    config.command("unset")(config_unset)
    config.command("path")(config_path)


def config_show(
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object: file, settings, sources.")] = False,
) -> None:
    """Every setting's value and where it comes from (file, CHATLLM_* variable, default);
    secrets (an API key, a token) show only their last characters."""
    from chatllm.config.settings import load_settings, mask_secrets, setting_sources, settings_path

    settings, sources, path = load_settings(), setting_sources(), settings_path()
    if json:
        shown = mask_secrets(asdict(settings))
        typer.echo(
            json_module.dumps({"file": str(path), "settings": shown, "sources": sources}, ensure_ascii=False, indent=2)
        )
        return
    typer.echo(show_text(settings, sources, str(path), path.exists()), nl=False)


def config_get(key: KeyArgument) -> None:
    """Print one setting's effective value (empty when unset)."""
    from chatllm.config.settings import get_setting, load_settings

    typer.echo(_format_value(get_setting(load_settings(), key)))


def config_set(
    ctx: typer.Context,
    key: KeyArgument,
    value: Annotated[
        str,
        typer.Argument(
            help="New value (checked like the settings file).",
            autocompletion=completion.setting_values,
            show_default=False,
        ),
    ],
) -> None:
    """Change a setting in the settings file, keeping the rest of the file."""
    from chatllm.config.edit import set_setting

    typed: Any = value
    if key.startswith("commands."):
        typed = command_option_value(ctx.find_root().command, key, value)
    path = set_setting(key, typed)
    typer.echo(f"{key} set in {path}", err=True)


def config_unset(key: KeyArgument) -> None:
    """Remove a setting from the settings file (back to its default)."""
    from chatllm.config.edit import unset_setting

    path = unset_setting(key)
    typer.echo(f"{key} removed from {path}", err=True)


def config_path() -> None:
    """Print the settings file's path (it may not exist yet)."""
    from chatllm.config.settings import settings_path

    typer.echo(str(settings_path()))


def command_option_value(root: Any, key: str, text: str) -> Any:
    """`text` for setting `commands.CMD[.SUB].OPTION`, typed as that option
    takes it (0.2 for --temperature, true for --json, 'no' stays a string for
    --to); ConfigError for an unknown command or option or a refused value."""
    from chatllm.cli.command_defaults import check_value, option_parameter

    *names, option = key.split(".")[1:]
    if not names:
        raise ConfigError(f"name a command and an option, e.g. commands.translate.to (not '{key}')")
    command = root
    for depth, name in enumerate(names):
        command = getattr(command, "commands", {}).get(name)
        if command is None:
            raise ConfigError(f"unknown command '{' '.join(names[: depth + 1])}' in '{key}'")
    if hasattr(command, "commands"):
        raise ConfigError(
            f"'{' '.join(names)}' is a group of commands; name one of them: {', '.join(sorted(command.commands))}"
        )
    param = option_parameter(command, option, key, in_file=False)
    converted = check_value(command, param, text, key, in_file=False)

    def plain(item: Any) -> Any:
        if isinstance(item, Enum):
            return item.value
        if isinstance(item, PurePath):
            return str(item)
        return item

    return [plain(item) for item in converted] if isinstance(converted, (list, tuple)) else plain(converted)


def show_text(settings: Any, sources: dict[str, str], path: str, exists: bool) -> str:
    """The `config show` listing: valid YAML, each line commented with where its
    value comes from and what it means."""
    import yaml

    from chatllm.config.settings import DESCRIPTIONS, mask_secrets

    lines = [f"# settings file: {path}{'' if exists else ' (not created yet)'}"]
    for name, source in sources.items():
        value = mask_secrets(getattr(settings, name), name)
        note = f"# {source}: {DESCRIPTIONS.get(name, '')}"
        if isinstance(value, dict) and value:
            lines.append(f"{name}:".ljust(28) + note)
            dumped = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
            lines += ["  " + line for line in dumped.splitlines()]
        else:
            shown = (
                yaml.safe_dump(value, allow_unicode=True, default_flow_style=True)
                .removesuffix("\n")
                .removesuffix("\n...")
            )
            lines.append(f"{name}: {shown}".ljust(28) + note)
    return "\n".join(lines) + "\n"


def _format_value(value: Any, empty: str = "") -> str:
    import yaml

    if value is None:
        return empty
    if isinstance(value, str):
        return value
    dumped = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return dumped.removesuffix("\n").removesuffix("\n...")
