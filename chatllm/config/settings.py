"""Settings file, CHATLLM_* environment variables, and the platform folders.

Folders follow the platform's conventions through platformdirs (on Linux the
XDG_* variables), so tests and users can relocate everything with them.

The settings file is YAML (`config.yaml` in the config folder). Loading and
`chatllm config set` apply the same rules (`convert`), so a value that `set`
accepts always loads, and a malformed file is an error naming its line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chatllm.errors import ConfigError
from chatllm.reading import DEFAULT_MAX_INPUT_SIZE
from chatllm.sizes import parse_size

APP_NAME = "chatllm"


def config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def persona_judges_dir() -> Path:
    """Where a persona's coverage judge keeps its calibration (jobs/coverage.py)."""
    return cache_dir() / "persona-judges"


def settings_path() -> Path:
    return config_dir() / "config.yaml"


def user_templates_dir() -> Path:
    return config_dir() / "prompts"


def _setting(default: Any, description: str, variable: str | None, kind: str = "text") -> Any:
    """A setting: its default, what it means (for `chatllm config show` and
    errors), the CHATLLM_* variable that overrides the file, and its kind (how
    a value from YAML or the environment is converted, see `convert`). A
    mapping default is made fresh for each Settings."""
    metadata = {"description": description, "variable": variable, "kind": kind}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything a user can set in config.yaml: the one table of settings.
    `None` means "chatllm decides"."""

    default_model: str | None = _setting(None, "model used when -m is not given", "CHATLLM_MODEL")
    ctx: int | None = _setting(None, "context window in tokens", "CHATLLM_CTX", "count")
    gpu_layers: str | None = _setting(
        None, "layers to offload to the GPU: a number, -1 for all, or auto", "CHATLLM_GPU_LAYERS", "gpu_layers"
    )
    threads: int | None = _setting(None, "CPU threads for generation", "CHATLLM_THREADS", "count")
    flash_attn: bool | None = _setting(
        None, "llama.cpp flash attention: on, off, or auto (llama.cpp decides)", "CHATLLM_FLASH_ATTN", "on_off_auto"
    )
    weight_repack: bool | None = _setting(
        None,
        "llama.cpp's CPU weight repacking: on, off, or auto (off on CPUs with AMX, where some VMs crash)",
        "CHATLLM_WEIGHT_REPACK",
        "on_off_auto",
    )
    log: bool = _setting(True, "save runs and chats to the history database", "CHATLLM_LOG", "bool")
    hints: bool = _setting(
        True, "say (on stderr) when a job needs a bigger model than the one in use", "CHATLLM_HINTS", "bool"
    )
    theme: str = _setting("monokai", "code highlighting theme for Markdown output", "CHATLLM_THEME")
    max_input_size: int = _setting(
        DEFAULT_MAX_INPUT_SIZE,
        "most bytes of input a command reads (files and stdin together), e.g. 64M",
        "CHATLLM_MAX_INPUT_SIZE",
        "size",
    )
    # Per-command option defaults, e.g. {"translate": {"to": "fr"}}; the CLI
    # turns them into click's default_map (see chatllm/cli/command_defaults.py).
    commands: dict[str, dict[str, Any]] = _setting(
        {}, "per-command option defaults, e.g. commands.translate.to", None, "commands"
    )


# What each setting means, for `chatllm config show` and error messages.
DESCRIPTIONS = {f.name: f.metadata["description"] for f in fields(Settings)}

# Environment variables that override the file: CHATLLM_MODEL=... and so on.
ENVIRONMENT_KEYS = {f.metadata["variable"]: f.name for f in fields(Settings) if f.metadata["variable"]}

_KINDS = {f.name: f.metadata["kind"] for f in fields(Settings)}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Invalid(ValueError):
    """A value a setting cannot take; `expected` says what it can take."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings)]


def parse_bool(value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case); raises ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid("true or false")


def convert(key: str, value: Any) -> Any:
    """`value` (from YAML or an environment variable) as setting `key` holds it."""
    if value is None:  # `ctx:` with nothing after it means "not set"
        return getattr(Settings(), key)
    kind = _KINDS[key]
    if kind == "count":
        # bool is an int in Python; `ctx: yes` is a mistake, not 1.
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise Invalid("a positive whole number")
        try:
            number = int(str(value).strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise Invalid("a positive whole number") from None
        if number <= 0:
            raise Invalid("a positive whole number")
        return number
    if kind == "bool":
        return parse_bool(value)
    if kind == "size":
        if isinstance(value, bool):
            raise Invalid("a size such as 64M, 512K or 2G")
        try:
            return parse_size(str(value))
        except ValueError:
            raise Invalid("a size such as 64M, 512K or 2G") from None
    if kind == "on_off_auto":
        if str(value).strip().lower() == "auto":
            return None
        try:
            return parse_bool(value)
        except Invalid:
            raise Invalid("on, off or auto") from None
    if kind == "gpu_layers":
        text = str(value).strip().lower()
        if text == "auto" or not isinstance(value, bool) and text.removeprefix("-").isdigit() and int(text) >= -1:
            return text
        raise Invalid("a number of layers (0 = CPU only, -1 = all) or auto")
    if kind == "commands":
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
            raise Invalid("a mapping of command names to option defaults, e.g. {translate: {to: fr}}")
        return value
    if isinstance(value, (dict, list)):
        raise Invalid("a single value")
    return str(value)


def _coerce(key: str, value: Any, where: str) -> Any:
    try:
        return convert(key, value)
    except Invalid as error:
        raise ConfigError(f"{where}: '{key}' must be {error.expected}, not {value!r}") from None


def parse_settings(text: str, source: str) -> Settings:
    """Parse config.yaml text; errors name `source` and the line."""
    document = load_document(text, source)
    lines = key_lines(text)
    known = setting_names()
    values: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{source}:{lines.get(str(key), 1)}"
        if key not in known:
            raise ConfigError(f"{where}: unknown setting '{key}' (known: {', '.join(sorted(known))})")
        values[key] = _coerce(key, value, where)
    return Settings(**values)


def load_document(text: str, source: str) -> dict:
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}{line}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}:1: expected 'key: value' settings")
    return document


def key_lines(text: str) -> dict[str, int]:
    """Line (1-based) of every key in `text`, nested ones as dotted paths:
    {"ctx": 3, "commands": 4, "commands.translate": 5, "commands.translate.to": 6}."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    found: dict[str, int] = {}

    def walk(mapping: Any, prefix: str) -> None:
        if not isinstance(mapping, yaml.MappingNode):
            return
        for key, value in mapping.value:
            path = f"{prefix}{key.value}"
            found.setdefault(path, key.start_mark.line + 1)
            walk(value, path + ".")

    walk(node, "")
    return found


def settings_text() -> str:
    """The settings file's text ('' when there is none)."""
    path = settings_path()
    if not path.exists():
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None


def where_is(key_path: str) -> str:
    """`file:line` of a (dotted) key in the settings file, for error messages."""
    path = settings_path()
    line = key_lines(settings_text()).get(key_path)
    return f"{path}:{line}" if line else str(path)


def environment_overrides() -> dict[str, tuple[str, Any]]:
    """Settings given by CHATLLM_* variables: key -> (variable, value)."""
    return {
        key: (variable, _coerce(key, os.environ[variable], variable))
        for variable, key in ENVIRONMENT_KEYS.items()
        if os.environ.get(variable)
    }


def load_settings() -> Settings:
    """The settings file overlaid with CHATLLM_* environment variables."""
    path = settings_path()
    settings = parse_settings(settings_text(), str(path)) if path.exists() else Settings()
    overrides = {key: value for key, (_, value) in environment_overrides().items()}
    return replace(settings, **overrides) if overrides else settings


def setting_sources() -> dict[str, str]:
    """Where each setting's effective value comes from: 'CHATLLM_CTX' (an
    environment variable), 'config file', or 'default'."""
    in_file = load_document(settings_text(), str(settings_path()))
    overrides = environment_overrides()
    return {
        name: overrides[name][0] if name in overrides else "config file" if name in in_file else "default"
        for name in setting_names()
    }


# The last word of a setting name that holds a secret (commands.serve.api_key,
# a token, a password): `config show` never prints such a value whole.
_SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
_SHOWN_SECRET_END = 4
_SHORTEST_SECRET_SHOWN = 12  # a shorter secret shows no character at all


def is_secret_name(name: str) -> bool:
    """`api_key`, `api-key`, `hf_token`, `secret`, but not `max-tokens`."""
    return re.split(r"[-_.]", name.lower())[-1] in _SECRET_WORDS


def mask_secrets(value: Any, name: str = "") -> Any:
    """`value` (a setting named `name`, or a mapping of them, nested) with every
    secret's value masked: `****` and its last 4 characters, enough to tell
    which key is set and not enough to use it."""
    if isinstance(value, dict):
        return {key: mask_secrets(item, str(key)) for key, item in value.items()}
    if not is_secret_name(name) or value is None or value == "":
        return value
    text = str(value)
    return "****" + (text[-_SHOWN_SECRET_END:] if len(text) >= _SHORTEST_SECRET_SHOWN else "")


def get_setting(settings: Settings, key_path: str) -> Any:
    """The value at a dotted key (`ctx`, `commands.translate.to`); ConfigError
    for a key that does not exist."""
    name, *rest = key_path.split(".")
    if name not in setting_names():
        raise ConfigError(f"unknown setting '{name}' (known: {', '.join(setting_names())})")
    value: Any = getattr(settings, name)
    for depth, part in enumerate(rest):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"'{'.'.join([name, *rest[: depth + 1]])}' is not set")
        value = value[part]
    return value
