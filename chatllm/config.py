"""Settings file, CHATLLM_* environment variables, and the platform folders.

Folders follow the platform's conventions through platformdirs (on Linux the
XDG_* variables), so tests and users can relocate everything with them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from chatllm.errors import ConfigError

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


def settings_path() -> Path:
    return config_dir() / "config.yaml"


def user_templates_dir() -> Path:
    return config_dir() / "prompts"


@dataclass(frozen=True)
class Settings:
    """Everything a user can set in config.yaml. `None` means "chatllm decides"."""

    default_model: str | None = None
    ctx: int | None = None
    gpu_layers: str | None = None
    threads: int | None = None
    log: bool = True
    theme: str = "monokai"
    # Per-command option defaults, e.g. {"translate": {"to": "fr"}}.
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)


# Environment variables that override the file: CHATLLM_MODEL=... and so on.
ENVIRONMENT_KEYS = {
    "CHATLLM_MODEL": "default_model",
    "CHATLLM_CTX": "ctx",
    "CHATLLM_GPU_LAYERS": "gpu_layers",
    "CHATLLM_THREADS": "threads",
    "CHATLLM_LOG": "log",
    "CHATLLM_THEME": "theme",
}


def _coerce(key: str, value: Any, where: str) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[key]
    if value is None:
        return None
    try:
        if key in ("ctx", "threads"):
            number = int(value)
            if number <= 0:
                raise ValueError
            return number
        if key == "log":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if key == "commands":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ValueError
            return value
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{key}' cannot be {value!r} (expected {kind})") from None


def parse_settings(text: str, source: str) -> Settings:
    """Parse config.yaml text; errors name `source` and the line."""
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}{line}: {problem}") from None
    if document is None:
        return Settings()
    if not isinstance(document, dict):
        raise ConfigError(f"{source}:1: expected 'key: value' settings")
    lines = _key_lines(text)
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{source}:{lines.get(str(key), 1)}"
        if key not in known:
            raise ConfigError(f"{where}: unknown setting '{key}' (known: {', '.join(sorted(known))})")
        values[key] = _coerce(key, value, where)
    return Settings(**values)


def _key_lines(text: str) -> dict[str, int]:
    import yaml

    node = yaml.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def load_settings() -> Settings:
    """The settings file overlaid with CHATLLM_* environment variables."""
    path = settings_path()
    settings = Settings()
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {path}: {error}") from None
        settings = parse_settings(text, str(path))
    overrides = {
        key: _coerce(key, os.environ[variable], variable)
        for variable, key in ENVIRONMENT_KEYS.items()
        if os.environ.get(variable)
    }
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    return settings
