"""llama.cpp's ctypes bindings without running llama-cpp-python's package __init__.

`import llama_cpp` runs llama_cpp/__init__.py, which imports the high-level
`Llama` class and with it numpy and every chat format: about 100 ms of work that
holds the GIL before a model can even start loading. Loading needs only the
bindings module (llama_cpp/llama_cpp.py), so `llama_bindings()` imports that
module alone, under its real name, into a package object whose __init__ has not
run yet. The package finishes itself (runs its __init__) the first time it is
asked for a name the bindings do not have, such as `llama_cpp.Llama` or
`from llama_cpp import Llama`, so other code in the process sees the package it
expects.

chatllm renders chat templates itself (chat_template.py), so a command never
imports numpy or the high-level API at all.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import re
import sys
import threading
from pathlib import Path
from types import ModuleType

_PACKAGE = "llama_cpp"
_install_lock = threading.Lock()
_finish_lock = threading.RLock()


def prepare_package() -> None:
    """Put the unfinished package in place (idempotent)."""
    with _install_lock:
        if _PACKAGE not in sys.modules:
            _install_unfinished_package()


def llama_bindings() -> ModuleType:
    """The module `llama_cpp.llama_cpp`, with llama-cpp-python's own log callback
    module imported first (it installs a callback at import time; chatllm
    installs its own afterwards)."""
    prepare_package()
    bindings = importlib.import_module(f"{_PACKAGE}.llama_cpp")
    importlib.import_module(f"{_PACKAGE}._logger")
    return bindings


def llama_cpp_version() -> str:
    """llama-cpp-python's __version__, read without finishing the package."""
    package = sys.modules.get(_PACKAGE)
    if package is not None and "__version__" in package.__dict__:
        return package.__dict__["__version__"]
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is not None and spec.origin:
        found = re.search(
            r"""^__version__\s*=\s*["']([^"']+)["']""", Path(spec.origin).read_text(encoding="utf-8"), re.M
        )
        if found:
            return found.group(1)
    return importlib.import_module(_PACKAGE).__version__


def _install_unfinished_package() -> None:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        importlib.import_module(_PACKAGE)  # an unusual install: import it the ordinary way
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def finish_on_first_use(name: str):
        submodule = sys.modules.get(f"{_PACKAGE}.{name}")
        if submodule is not None:  # `import llama_cpp.llama as llama` while that module is still importing
            return submodule
        bindings = sys.modules.get(f"{_PACKAGE}.llama_cpp")
        if bindings is not None and not name.startswith("__") and hasattr(bindings, name):
            return getattr(bindings, name)  # what `from .llama_cpp import *` would have given
        with _finish_lock:
            if package.__dict__.get("__getattr__") is finish_on_first_use:
                del package.__dict__["__getattr__"]
                loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module '{_PACKAGE}' has no attribute '{name}'") from None

    setattr(package, "__getattr__", finish_on_first_use)  # noqa: B010 - a module's __getattr__ (PEP 562)
    sys.modules[_PACKAGE] = package


@functools.lru_cache(maxsize=1)
def _c_library_abs() -> int | None:
    try:
        return ctypes.cast(ctypes.CDLL(None).abs, ctypes.c_void_p).value
    except (OSError, TypeError, AttributeError):  # no C library handle here (Windows)
        return None


def quiet_log_callback_available() -> bool:
    return _c_library_abs() is not None


def quiet_log_callback():
    """A llama.cpp log callback that does nothing without ever entering Python,
    or None where none can be had. It is the C library's `abs`: called as
    callback(level, text, user_data) it reads `level` and returns, and every
    calling convention chatllm runs on passes these arguments in registers that
    the callee may ignore. A Python callback would take the GIL for each of the
    ~1,200 lines a model load logs, waiting on whatever the main thread does."""
    address = _c_library_abs()
    if address is None:
        return None
    return llama_bindings().llama_log_callback(address)
