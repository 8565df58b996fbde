"""The import rule, and what each fast path may import.

The rule: every import sits at the top of its module, except

1. a heavy library (HEAVY_LIBRARIES below, with what it costs), or a chatllm
   module that imports one at its top, is imported inside the function that
   needs it, so `chatllm --help`, <TAB> completion and the start of a model load
   do not wait for it;
2. a module on a fast path imports what that path does not otherwise load
   inside the function that needs it. The paths: startup (`chatllm --help`
   builds every command, so every command module is on it, and each command
   needs only its own part of the core) and the model load (the thread that
   imports the llama engine before llama.cpp starts reading the file);
3. ORDERED below: imports made late so that something else starts first.

Anything else imported inside a function is a finding: move it to the top (if
that makes an import cycle, the layout is wrong, not the rule). The budgets of
each fast path (what `--help`, `--version`, completion and `--dry-run` may load)
are here too, in one file.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chatllm"

# Third-party and standard-library modules chatllm imports only where needed,
# with the import time that puts them here (python -X importtime, this VM).
HEAVY_LIBRARIES = {
    "llama_cpp": "the inference bindings: loads libllama (and numpy through the package init)",
    "numpy": "~60 ms",
    "gguf": "~120 ms, with numpy",
    "prompt_toolkit": "~100 ms; the REPL only",
    "rich": "~20 ms for the console, ~100 ms with markdown and syntax highlighting",
    "httpx": "~60 ms; the remote backend",
    "httpx2": "~100 ms; huggingface_hub's HTTP client, downloads only",
    "huggingface_hub": "~100 ms with httpx; downloads and Hub listings only",
    "filelock": "~10 ms; downloads only",
    "jinja2": "~30 ms; chat templates (engine start is timed)",
    "jsonschema": "~100 ms; structured output only",
    "yaml": "~15 ms; templates and config are read after the command is known",
    "platformdirs": "~10 ms; folders are looked up by the commands that use them",
    "bm25s": "~200 ms with numpy and scipy; knowledge search only",
    "pypdf": "~55 ms; PDF documents for `chatllm ask` only",
    "langcodes": "~40 ms; language names outside the built-in table",
    "pycld2": "language detection's native module",
    "cn2an": "~110 ms; a translation's numbers, for a text with Chinese in it",
    "sqlite3": "~5 ms; history only",
    "importlib.metadata": "~15 ms; version lookups of other packages",
    "http.server": "~15 ms; `chatllm serve` only",
    "prometheus_client": "~40 ms; `chatllm serve`'s /metrics only",
    "asyncio": "~25 ms",
    "mcp": "~600 ms with pydantic, starlette and anyio; MCP servers only",
    "urllib.request": "~15 ms",
}

# (importing module, imported module): why it waits.
ORDERED = {
    ("chatllm.cli.entry", "chatllm.cli.app"): "the early model load starts before typer and the commands are imported",
}

PROBE = """
import atexit, json, sys
def dump():
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
atexit.register(dump)
sys.argv = ["chatllm", *json.loads(sys.argv[1])]
from chatllm.cli.entry import main
main()
"""


def loaded_modules(args: list[str], **env: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Every module a `chatllm` process with `args` has imported when it exits."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    marker = result.stderr.rfind("MODULES ")
    assert marker >= 0, result.stderr[-2000:]
    return set(json.loads(result.stderr[marker + len("MODULES ") :].splitlines()[0])), result


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_names(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement loads (`from a import b` loads a.b when it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


@cache
def imports_of(module: str) -> tuple[frozenset[str], tuple[tuple[int, str], ...]]:
    """(modules imported at the top, (line, module) imported inside functions).
    Imports under `if TYPE_CHECKING:` are not imports at run time."""
    top: set[str] = set()
    inner: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in imported_names(child, module):
                    (inner.append((child.lineno, name)) if in_function else top.add(name))
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            else:
                visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(MODULES[module].read_text()), False)
    return frozenset(top), tuple(inner)


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def is_heavy(name: str) -> bool:
    if any(part in HEAVY_LIBRARIES for part in with_parents(name)):
        return True
    if name not in MODULES:
        return False
    top, _ = imports_of(name)
    return any(is_heavy(other) for imported in top for other in with_parents(imported) if other != name)


@pytest.fixture(scope="module")
def fast_paths() -> dict[str, set[str]]:
    startup, result = loaded_modules(["--help"])
    assert result.returncode == 0, result.stderr
    load = subprocess.run(
        [sys.executable, "-c", "import sys, chatllm.engine.llama; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {"startup": startup, "model load": set(load)}


def test_heavy_libraries_are_real_modules() -> None:
    import importlib.util

    for name in HEAVY_LIBRARIES:
        if name not in ("pycld2", "bm25s", "langcodes"):  # optional extras
            assert importlib.util.find_spec(name) is not None, f"{name} in HEAVY_LIBRARIES does not exist"


def test_imports_inside_functions_follow_the_rule(fast_paths: dict[str, set[str]]) -> None:
    findings = []
    for module in sorted(MODULES):
        _, inner = imports_of(module)
        for line, name in inner:
            if is_heavy(name):
                continue
            if (module, name) in ORDERED:
                continue
            if any(module in path and name not in path for path in fast_paths.values()):
                continue
            where = MODULES[module].relative_to(PACKAGE.parent)
            findings.append(f"{where}:{line}: import {name} belongs at the top")
    assert not findings, "\n".join(findings)


# ---- what each fast path may load -------------------------------------------------

# Heavy libraries a fast path may still load, and why.
MAY_LOAD = {
    "platformdirs": "the config file's command defaults apply to --help and completion too",
    "yaml": "completion reads the config file's aliases and the template names",
}


def heavy_loaded(modules: set[str]) -> set[str]:
    return {name for name in HEAVY_LIBRARIES if name in modules} - set(MAY_LOAD)


@pytest.mark.parametrize("args", [["--help"], ["chat", "--help"], ["summarize", "--help"], ["--version"]])
def test_help_and_version_load_nothing_heavy(args: list[str]) -> None:
    modules, result = loaded_modules(args)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert not heavy_loaded(modules), f"`chatllm {' '.join(args)}` imported {sorted(heavy_loaded(modules))}"
    if args == ["--version"]:  # answered before the command line parser is imported
        assert "typer" not in modules and "chatllm.cli.app" not in modules


@pytest.mark.parametrize(
    "words, index, expected",
    [
        ("chatllm tr", "1", "translate"),
        ("chatllm translate --to f", "3", "fr"),
        ("chatllm chat -m ''", "3", "embedded"),
        ("chatllm chat --persona ", "3", "support"),
    ],
)
def test_completion_loads_nothing_heavy(words: str, index: str, expected: str) -> None:
    """A <TAB> must answer in well under 150 ms: no pydantic (typer's value
    conversion is skipped while completing), no rich, no model or HTTP library."""
    modules, result = loaded_modules([], _CHATLLM_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=index)
    assert result.returncode == 0 and expected in result.stdout.split(), result.stderr[-2000:]
    assert not heavy_loaded(modules) and "pydantic" not in modules, (words, sorted(heavy_loaded(modules)))


def test_listing_cached_hub_models_loads_no_hub_client(hub_server) -> None:
    """Completing -m with models in the Hub cache reads folder names only."""
    from chatllm.hub import resolve
    from tests.support.hub_fixtures import TINY_REPO

    resolve.pull_model(TINY_REPO)
    modules, result = loaded_modules(
        [], _CHATLLM_COMPLETE="complete_bash", COMP_WORDS="chatllm chat -m ''", COMP_CWORD="3"
    )
    assert f"{TINY_REPO}:Q4_K_M" in result.stdout.split(), result.stderr[-2000:]
    assert not {"huggingface_hub", "httpx2", "httpx"} & modules


MODEL_LOAD_PROBE = """
import sys
import chatllm.engine.llama  # loads the ctypes bindings only
assert "numpy" not in sys.modules and "llama_cpp.llama" not in sys.modules, "the package init ran"
# Jinja2 comes after llama.cpp has started reading the model (see LlamaEngine._make_context and _prompt).
assert "jinja2" not in sys.modules, "the engine module imports Jinja2 before the load can start"
import chatllm.engine.chat_template
assert "numpy" not in sys.modules, "chat templates need no numpy"
import llama_cpp.llama_chat_format  # other code may still use the rest of the package
from chatllm.engine.bindings import llama_cpp_version
import llama_cpp
from llama_cpp import Llama, LlamaGrammar
assert llama_cpp.Llama is Llama and llama_cpp.llama_decode is not None
assert llama_cpp.__version__ == llama_cpp_version()
print("ok")
"""


def test_the_model_load_imports_the_bindings_without_the_package_init() -> None:
    """The load thread starts reading the model before numpy and llama-cpp-python's
    package init would have finished importing; the package still works afterwards."""
    result = subprocess.run([sys.executable, "-c", MODEL_LOAD_PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
