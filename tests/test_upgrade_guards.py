"""The assumptions an upgrade would break first, each checked so that the
day it stops holding a test says so, and what to do."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path


def test_typer_is_below_the_version_that_converts_every_parameter_through_pydantic() -> None:
    version = tuple(int(part) for part in importlib.metadata.version("typer").split(".")[:2])
    assert (0, 26) <= version < (0, 29), (
        f"typer {version} is installed but pyproject.toml pins typer>=0.26,<0.29. typer 0.29 converts every "
        "parameter through pydantic (~50 ms on every command, measured by benchmarks/run.py's startup rows). Before "
        "lifting the pin: rerun `python benchmarks/run.py --only startup` and check chatllm/cli/completion.py's "
        "_skip_value_conversion still finds typer.core._TyperParameter."
    )
    from typer import _click  # noqa: F401 - chatllm imports click through typer (vendored since 0.26)


def test_llama_cpp_python_still_has_the_layout_the_bindings_loader_expects() -> None:
    """chatllm/engine/bindings.py imports `llama_cpp.llama_cpp` (the ctypes
    bindings) without running the package's __init__. That needs the package to
    keep its bindings in that module and `__version__` in its __init__."""
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations, "llama-cpp-python is not installed"
    folder = Path(list(spec.submodule_search_locations)[0])
    message = (
        "llama-cpp-python's layout changed: chatllm/engine/bindings.py loads llama_cpp/llama_cpp.py and "
        "llama_cpp/_logger.py alone and reads __version__ from llama_cpp/__init__.py; update it (or pin "
        "llama-cpp-python) before upgrading."
    )
    assert (folder / "llama_cpp.py").is_file() and (folder / "_logger.py").is_file(), message
    assert "__version__" in (folder / "__init__.py").read_text(encoding="utf-8"), message
    # And in a fresh process: the bindings load without numpy or the high-level API,
    # and the package still finishes itself when something asks for Llama.
    probe = (
        "import sys\n"
        "from chatllm.engine.bindings import llama_bindings\n"
        "bindings = llama_bindings()\n"
        "assert hasattr(bindings, 'llama_decode') and hasattr(bindings, 'llama_sampler_init_grammar')\n"
        "assert 'numpy' not in sys.modules and 'llama_cpp.llama' not in sys.modules\n"
        "import llama_cpp\n"
        "assert llama_cpp.Llama is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, message + "\n" + done.stderr


def test_huggingface_hub_still_has_the_checks_chatllm_applies_to_what_a_hub_sends() -> None:
    """chatllm/hub/untrusted.py reuses huggingface_hub's commit and sha256
    patterns and its repo file name check (a private function), and
    chatllm/hub/cache.py restates the sha256 pattern for code that must not
    import huggingface_hub."""
    message = (
        "huggingface_hub moved or changed REGEX_COMMIT_HASH, REGEX_SHA256 (file_download.py) or "
        "_validate_relative_filename (_local_folder.py); update chatllm/hub/untrusted.py (and "
        "SHA256_PATTERN in chatllm/hub/cache.py) to what it has now before upgrading"
    )
    from huggingface_hub import _local_folder, file_download

    from chatllm.hub.cache import SHA256_PATTERN

    assert file_download.REGEX_COMMIT_HASH.pattern == "[0-9a-f]{40}", message
    assert file_download.REGEX_SHA256.pattern == SHA256_PATTERN.pattern, message
    check = getattr(_local_folder, "_validate_relative_filename", None)
    assert callable(check), message
    check("sub/model.gguf")
    for unsafe in ("../x.gguf", "a/../../x.gguf", "/etc/x.gguf", "C:/x.gguf", "\\\\host\\share\\x.gguf"):
        try:
            check(unsafe)
        except ValueError:
            continue
        raise AssertionError(f"{message} (it accepted {unsafe!r})")
