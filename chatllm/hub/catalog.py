"""The catalog: short aliases (`qwen2.5:1.5b`) for well-known GGUF models.

Entries come from `chatllm/data/catalog.yaml` in the package, overlaid by an
optional `catalog.yaml` in the user's config folder (same format; an entry with
the same alias replaces the packaged one), so a team can pin its own models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from chatllm.config.settings import config_dir
from chatllm.errors import ConfigError

PACKAGED_CATALOG = "catalog.yaml"
_REQUIRED = ("repo",)
_KNOWN = ("repo", "quant", "file", "size_gb", "description")


@dataclass(frozen=True)
class CatalogEntry:
    alias: str
    repo: str  # "org/name" on the Hugging Face Hub
    quant: str | None  # quantization the alias downloads, e.g. "Q4_K_M"
    file: str | None  # or an exact file in the repo (takes precedence over quant)
    size_gb: float | None  # approximate download size
    description: str

    @property
    def hub_reference(self) -> str:
        """The `org/repo[:QUANT|/file]` reference this alias stands for."""
        if self.file:
            return f"{self.repo}/{self.file}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


def user_catalog_path() -> Path:
    return config_dir() / "catalog.yaml"


def catalog_entries() -> dict[str, CatalogEntry]:
    """All aliases, packaged first, then the user's (which win). Raises
    ConfigError for a malformed user catalog."""
    entries = dict(_packaged_entries())
    user_path = user_catalog_path()
    if user_path.is_file():
        try:
            text = user_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {user_path}: {error}") from None
        entries.update(_parse(text, str(user_path)))
    return entries


def find_alias(name: str) -> CatalogEntry | None:
    """The entry for `name` (case-insensitive), or None."""
    return catalog_entries().get(name.strip().lower())


def alias_names() -> list[str]:
    """Alias names only, for shell completion: never raises."""
    try:
        return sorted(catalog_entries())
    except Exception:
        return sorted(_packaged_entries())


def alias_for(repo: str, quant: str | None) -> str | None:
    """The alias that downloads exactly `repo` at `quant`, if any (for `models list`)."""
    for entry in catalog_entries().values():
        if (
            entry.repo.lower() == repo.lower()
            and not entry.file
            and (entry.quant or "").upper() == (quant or "").upper()
        ):
            return entry.alias
    return None


@functools.lru_cache(maxsize=1)
def _packaged_entries() -> dict[str, CatalogEntry]:
    text = files("chatllm.data").joinpath(PACKAGED_CATALOG).read_text(encoding="utf-8")
    return _parse(text, f"chatllm/data/{PACKAGED_CATALOG}")


def _parse(text: str, source: str) -> dict[str, CatalogEntry]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is 10x faster on TAB
    try:
        document = yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: {getattr(error, 'problem', None) or error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected 'alias: {{repo: org/name, quant: Q4_K_M}}' entries")
    entries = {}
    for alias, body in document.items():
        where = f"{source}: '{alias}'"
        if not isinstance(body, dict) or any(key not in body for key in _REQUIRED):
            raise ConfigError(f"{where} needs at least 'repo: org/name'")
        unknown = sorted(set(body) - set(_KNOWN))
        if unknown:
            raise ConfigError(f"{where} has unknown keys {', '.join(unknown)} (known: {', '.join(_KNOWN)})")
        repo = str(body["repo"])
        if repo.count("/") != 1:
            raise ConfigError(f"{where}: repo must look like org/name, not '{repo}'")
        size = body.get("size_gb")
        entries[str(alias).lower()] = CatalogEntry(
            alias=str(alias).lower(),
            repo=repo,
            quant=str(body["quant"]).upper() if body.get("quant") else None,
            file=str(body["file"]) if body.get("file") else None,
            size_gb=float(size) if isinstance(size, (int, float)) else None,
            description=str(body.get("description") or ""),
        )
    return entries
