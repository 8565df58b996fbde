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
    "langcodes": "~40 ms; language names outside the built-in table",
    "pycld2": "language detection's native module",
    "sqlite3": "~5 ms; history only",
    "importlib.metadata": "~15 ms; version lookups of other packages",
    "http.server": "~15 ms; `chatllm serve` only",
    "asyncio": "~25 ms",
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
        env={**__import__("os").environ, **env},
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
