"""Inference backends behind one small protocol (see base.py).

`open_engine` is the one place that picks a backend for a model reference, so
jobs and the CLI never import llama_cpp or httpx themselves.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
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
from chatllm.errors import UsageError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from chatllm.config.settings import Settings
    from chatllm.hub.models import ResolvedModel

__all__ = [
    "Engine",
    "EngineOptions",
    "GenerationParams",
    "GenerationStats",
    "Message",
    "Timings",
    "Usage",
    "chat_template_text",
    "engine_options",
    "loads_quietly",
    "open_engine",
    "open_engine_in_background",
    "warm_up",
]


def engine_options(
    config: Settings,
    *,
    ctx: int | None = None,
    gpu_layers: str | None = None,
    seed: int | None = None,
    verbose: bool = False,
) -> EngineOptions:
    """How a model is loaded, from the settings and the command's own options."""
    from chatllm.config.settings import cache_dir

    layers = gpu_layers or config.gpu_layers
    return EngineOptions(
        n_ctx=ctx or config.ctx,
        n_gpu_layers=None if layers in (None, "auto") else int(layers),
        n_threads=config.threads,
        flash_attn=config.flash_attn,
        weight_repack=config.weight_repack,
        seed=seed,
        verbose=verbose,
        state_cache_dir=cache_dir() / "prompt-states",
    )


def open_engine(
    model: ResolvedModel, options: EngineOptions, on_loaded: Callable[[Engine], None] | None = None
) -> Engine:
    """Load the backend that serves `model` (a local GGUF or a remote server).
    `on_loaded` receives the engine as soon as it can tokenize, which for a
    local model is before its context is made (see LlamaEngine)."""
    if model.remote_url is not None:
        from chatllm.engine.openai import OpenAIEngine

        engine = OpenAIEngine(model, options)
        if on_loaded is not None:
            on_loaded(engine)
        return engine
    if options.sequences is not None:
        from chatllm.engine.batched import BatchedLlamaEngine

        return BatchedLlamaEngine(model, options, on_model_loaded=on_loaded)
    from chatllm.engine.llama import LlamaEngine

    return LlamaEngine(model, options, on_model_loaded=on_loaded)


def open_engine_in_background(model: ResolvedModel, options: EngineOptions, thread_name: str) -> Future[Engine]:
    """Load `model` on a thread of its own (llama.cpp loads outside the GIL, so
    the caller goes on meanwhile). The future holds the engine as soon as it can
    tokenize (see `open_engine`), or the error that stopped the load; an error
    after that (making the context) is raised by the engine where it is needed."""
    from concurrent.futures import Future

    future: Future[Engine] = Future()

    def load() -> None:
        try:
            engine = open_engine(model, options, on_loaded=future.set_result)
        except BaseException as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(engine)

    threading.Thread(target=load, name=thread_name).start()
    return future


def chat_template_text(value: str) -> str:
    """The Jinja text `--chat-template VALUE` means: a built-in template's
    name, or a file (its syntax checked now, before any prompt is made)."""
    from chatllm.engine.chat_prompt import BUILTIN_TEMPLATES

    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    from chatllm.inputs import read_file

    text = read_file(Path(value).expanduser())
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise UsageError(f"'{value}' line {error.lineno}: {error.message}") from None
    return text


def loads_quietly() -> bool:
    """Whether a model can load on another thread without taking over stderr
    (llama.cpp's log callback can be silenced), which early loading needs."""
    from chatllm.engine.bindings import quiet_log_callback_available

    return quiet_log_callback_available()


def warm_up() -> None:
    """Import what an engine needs once llama.cpp has read the model file
    (Jinja2, hashlib: ~40 ms of Python), while the load runs outside the GIL."""
    importlib.import_module("chatllm.engine.chat_prompt")  # imports state_cache too
