"""The package's shape: imports go one way (no cycles), and modules stay small
enough to read in one sitting."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chatllm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """chatllm modules `path` imports anywhere (functions included), except
    under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def test_no_import_cycles() -> None:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {name: imports_of(path, modules) - {name} for name, path in paths.items()}
    # A package's __init__ is imported on the way to any of its modules: an edge
    # from a module to its own package's __init__ is not a cycle of the code's making.
    for name in graph:
        graph[name] = {target for target in graph[name] if not name.startswith(target + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_modules_stay_readable() -> None:
    """docs/ARCHITECTURE.md: no module over ~450 lines, as `ruff format` lays them out (a
    few reviewed exceptions, each a single responsibility that reads top to
    bottom: the decode loop and its bookkeeping, the repetition guard's rules)."""
    allowed = {"engine/llama.py": 760, "jobs/repetition.py": 520}
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > allowed.get(name, 450):
            too_long.append(f"{name}: {lines} lines")
    assert not too_long, too_long


def test_functions_stay_short() -> None:
    """docs/ARCHITECTURE.md: no function over ~60 lines (from its `def` to its
    last line, docstring included, as `ruff format` lays it out): a longer one
    does several things, and each deserves a name."""
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 60:
                    too_long.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long


def test_the_wheel_lists_every_package() -> None:
    """pyproject.toml names the packages the wheel holds; one left out installs
    a chatllm that fails on import (chatllm.reply was, and `pip install .`
    then `chatllm summarize` ended in ModuleNotFoundError)."""
    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert packages <= listed, sorted(packages - listed)
