"""Editing config.yaml as text, so a user's comments and layout survive
`chatllm config set`: a scalar is replaced where it stands; anything else
rewrites only its own top-level entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatllm.config.settings import (
    Invalid,
    convert,
    load_document,
    parse_settings,
    setting_names,
    settings_path,
    settings_text,
)
from chatllm.errors import ConfigError
from chatllm.private_files import write_private


def _scalar_text(value: Any) -> str | None:
    """`value` as a one-line YAML scalar, or None if it needs more than a line."""
    import yaml

    if isinstance(value, (dict, list)):
        return None
    dumped = yaml.safe_dump(value, allow_unicode=True, width=2**31).removesuffix("\n").removesuffix("\n...")
    return None if "\n" in dumped else dumped


def _entries(text: str) -> dict[str, tuple[Any, Any]]:
    """Top-level key -> (key node, value node), or {} for an empty document."""
    import yaml

    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return {}
    return {key.value: (key, value) for key, value in root.value}


def _find(text: str, parts: list[str]) -> Any:
    import yaml

    node = yaml.compose(text)
    for part in parts:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((value for key, value in node.value if key.value == part), None)
    return node


def with_value(text: str, parts: list[str], value: Any) -> str:
    """`text` with the key at path `parts` (["commands", "translate", "to"]) set
    to `value`, everything else kept."""
    import yaml

    node = _find(text, parts) if text.strip() else None
    scalar = _scalar_text(value)
    if isinstance(node, yaml.ScalarNode) and scalar is not None and node.style not in ("|", ">"):
        return text[: node.start_mark.index] + scalar + text[node.end_mark.index :]
    document = load_document(text, "settings")
    top = document.get(parts[0])
    if len(parts) > 1:
        top = dict(top) if isinstance(top, dict) else {}
        branch = top
        for part in parts[1:-1]:
            branch[part] = dict(branch[part]) if isinstance(branch.get(part), dict) else {}
            branch = branch[part]
        branch[parts[-1]] = value
    else:
        top = value
    return _replace_entry(
        text, parts[0], yaml.safe_dump({parts[0]: top}, sort_keys=False, allow_unicode=True, default_flow_style=False)
    )


def without_value(text: str, parts: list[str], source: str) -> str:
    """`text` without the key at path `parts`; ConfigError naming `source` if
    it is not there."""
    import yaml

    document = load_document(text, "settings")
    if not text.strip() or _find(text, parts) is None:
        raise ConfigError(f"'{'.'.join(parts)}' is not set in {source}")
    if len(parts) == 1:
        return _replace_entry(text, parts[0], "")
    top = document[parts[0]]
    branch = top
    for part in parts[1:-1]:
        branch = branch[part]
    del branch[parts[-1]]
    return _replace_entry(
        text, parts[0], yaml.safe_dump({parts[0]: top}, sort_keys=False, allow_unicode=True, default_flow_style=False)
    )


def _replace_entry(text: str, key: str, block: str) -> str:
    """`text` with top-level entry `key` replaced by `block` (appended if absent).
    Comment and blank lines after the entry stay: they usually introduce the
    next entry."""
    entry = _entries(text).get(key) if text.strip() else None
    if entry is None:
        separator = "" if not text or text.endswith("\n") else "\n"
        return text + separator + block
    key_node, value_node = entry
    start = text.rfind("\n", 0, key_node.start_mark.index) + 1
    end = value_node.end_mark.index
    if not (end > 0 and text[end - 1] == "\n"):  # extend to the end of that line
        newline = text.find("\n", end)
        end = len(text) if newline < 0 else newline + 1
    lines = text[start:end].splitlines(keepends=True)
    while len(lines) > 1 and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()
    end = start + sum(len(line) for line in lines)
    return text[:start] + block + text[end:]


def set_setting(key_path: str, value: Any) -> Path:
    """Write `value` at a dotted key into the settings file and return the file.

    A top-level value is checked and converted by the same rules as loading
    (strings are accepted: `set_setting("ctx", "4096")`); values under
    `commands.` are written as given (the CLI checks them against the command's
    options). The rest of the file, comments included, is kept; the file is
    replaced atomically, so a crash never leaves half a file.
    """
    parts = key_path.split(".")
    if parts[0] not in setting_names():
        raise ConfigError(f"unknown setting '{parts[0]}' (known: {', '.join(setting_names())})")
    if parts[0] == "commands" and len(parts) == 1:
        raise ConfigError("set one command option at a time, e.g. commands.translate.to")
    if parts[0] != "commands" and len(parts) > 1:
        raise ConfigError(f"'{parts[0]}' has no parts to set ('{key_path}')")
    if parts[0] != "commands":
        try:
            value = convert(parts[0], value)
        except Invalid as error:
            raise ConfigError(f"'{parts[0]}' must be {error.expected}, not {value!r}") from None
    return _rewrite(lambda text: with_value(text, parts, value))


def unset_setting(key_path: str) -> Path:
    """Remove a (dotted) key from the settings file, keeping the rest of it."""
    return _rewrite(lambda text: without_value(text, key_path.split("."), str(settings_path())))


def _rewrite(change: Any) -> Path:
    path = settings_path()
    text = settings_text()
    load_document(text, str(path))  # YAML we cannot parse is not ours to rewrite
    new_text = change(text)
    parse_settings(new_text, str(path))  # the same rules as loading, on what we would write
    try:
        # Private: it can hold commands.serve.api_key. A looser file is tightened here.
        write_private(path, new_text, durable=True)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    return path
