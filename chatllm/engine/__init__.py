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
    "prepare_loading",
    "import_while_loading",
]


def open_engine(model: "ResolvedModel", options: EngineOptions) -> Engine:
    """Load the backend that serves `model` (a local GGUF or a remote server)."""
    if model.remote_url is not None:
        from chatllm.engine.openai import OpenAIEngine

        return OpenAIEngine(model, options)
    from chatllm.engine.llama import LlamaEngine

    return LlamaEngine(model, options)


def prepare_loading(model: "ResolvedModel") -> None:
    """Call before loading `model` on another thread: lets that thread import
    llama.cpp's bindings without llama-cpp-python's package init (bindings.py)."""
    if model.remote_url is None:
        from chatllm.engine.bindings import prepare_package

        prepare_package()


def import_while_loading(model: "ResolvedModel") -> None:
    """Import on this thread the Python modules a local model needs once it has
    loaded (the chat-template formatter, numpy with it: ~100 ms), while the load
    itself runs outside the GIL on another thread."""
    if model.remote_url is None:
        import importlib

        importlib.import_module("llama_cpp.llama_chat_format")
