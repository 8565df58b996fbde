"""Inference backends behind one small protocol (see base.py).

`open_engine` is the one place that picks a backend for a model reference, so
jobs and the CLI never import llama_cpp or httpx themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatllm.engine.base import (
    Engine,
    EngineOptions,
    GenerationParams,
    GenerationStats,
    Message,
    Timings,
    Usage,
)

if TYPE_CHECKING:
    from chatllm.models import ResolvedModel

__all__ = [
    "Engine",
    "EngineOptions",
    "GenerationParams",
    "GenerationStats",
    "Message",
    "Timings",
    "Usage",
    "open_engine",
]


def open_engine(model: "ResolvedModel", options: EngineOptions) -> Engine:
    """Load the backend that serves `model` (a local GGUF or a remote server)."""
    if model.remote_url is not None:
        from chatllm.engine.openai import OpenAIEngine

        return OpenAIEngine(model, options)
    from chatllm.engine.llama import LlamaEngine

    return LlamaEngine(model, options)

