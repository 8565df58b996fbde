"""Start loading the model before the command line is parsed.

Importing typer and parsing a command line costs about 100 ms of Python;
llama.cpp loads a model outside the GIL. So the entry point
looks at the raw words first: for a generating command whose model and load
options the words make plain (no option that changes them), the model starts
loading on a background thread at once, and the parsed command adopts that load
when its own model and options turn out the same (`take`). If they differ, or
the command never gets that far, the early engine is closed and nothing else
changes: every decision is made again, properly, by the parsed command.

Nothing here may print: errors are left for the parsed command to report.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from chatllm.engine import engine_options, loads_quietly, open_engine_in_background, warm_up
from chatllm.jobs.options import SHARED, load_flags
from chatllm.jobs.table import generating_commands

if TYPE_CHECKING:
    from concurrent.futures import Future

    from chatllm.engine.base import EngineOptions
    from chatllm.hub.models import ResolvedModel

# Commands that load a model (every job of the table); for any other, nothing
# extra is even imported.
GENERATING_COMMANDS = generating_commands()
# Options that change what is loaded or how, or mean nothing is loaded at all.
_UNSURE_OPTIONS = load_flags()
# The same as config.yaml's `commands:` defaults name them (dashes or underscores), and -m.
_UNSURE_DEFAULTS = frozenset(
    {"model"} | {name for option in SHARED if option.loads for name in (option.name, option.name.replace("_", "-"))}
)

_pending: tuple[ResolvedModel, EngineOptions, Future] | None = None
_lock = threading.Lock()


def start(argv: list[str]) -> None:
    """Begin loading the model `argv` will most likely ask for, if that is plain."""
    global _pending
    try:
        guess = _guess(argv)
    except BaseException:  # any doubt (Ctrl-C included): the parsed command decides
        return
    if guess is None:
        return

    model, options = guess
    # Its error, if any, is reported by the parsed command if it adopts this load.
    future = open_engine_in_background(model, options, "chatllm-early-load")
    _pending = (model, options, future)
    atexit.register(settle)
    warm_up()  # while the load runs outside the GIL


def take(model: ResolvedModel, options: EngineOptions) -> Future | None:
    """The early load of exactly this model with these options, or None (after
    closing an early load of anything else)."""
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is None:
        return None
    early_model, early_options, future = pending
    if early_model == model and early_options == options:
        return future
    _close_when_done(future)
    return None


def settle() -> None:
    """Wait for an early load nobody adopted and close its engine."""
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is not None:
        _close_when_done(pending[2])


def _close_when_done(future: Future) -> None:
    if future.exception() is None:
        future.result().close()


def _guess(argv: list[str]) -> tuple[ResolvedModel, EngineOptions] | None:
    if not argv or argv[0] not in GENERATING_COMMANDS:
        return None
    if not loads_quietly():
        return None  # loading would have to redirect stderr, which the main thread may need
    reference = None
    words = iter(argv[1:])
    for word in words:
        if word == "--":
            break
        if word.startswith(_UNSURE_OPTIONS):
            return None
        if word in ("-m", "--model"):
            reference = next(words, None)
        elif word.startswith("--model="):
            reference = word.split("=", 1)[1]
        elif word.startswith("-m") and not word.startswith("--"):
            reference = word[2:]
    from chatllm.config.settings import load_settings
    from chatllm.hub.models import resolve_model

    config = load_settings()
    if _UNSURE_DEFAULTS & set(config.commands.get(argv[0], {})):
        return None
    wanted = reference or config.default_model
    if wanted not in (None, "embedded") and not (wanted.endswith(".gguf") and Path(wanted).is_file()):
        return None  # aliases and Hub references may ask, download or verify: only the parsed command does that
    model = resolve_model(reference, default=config.default_model, allow_download=False)
    if model.path is None or model.remote_url is not None:
        return None

    return model, engine_options(config)
