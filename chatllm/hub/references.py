"""A model reference once resolved: what every layer passes around."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ResolvedModel:
    reference: str  # what the user asked for
    name: str  # what --json reports as "model"
    path: Path | None = None  # local GGUF file (first shard of a split model)
    remote_url: str | None = None  # base URL of an OpenAI-compatible server
    remote_model: str | None = None  # model name on that server
