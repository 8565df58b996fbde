"""The README's promises that can be checked without running them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block_after(marker: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split(marker, 1)[1]
    block = after.split("```", 2)[1]
    return block.split("\n", 1)[1].strip()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = readme_block_after("<!-- test-command -->")
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci_lines[-1] == command


def test_every_built_in_template_ships_in_the_package() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["package-dir"]["chatllm.prompts"] == "prompts"
    assert "*.yaml" in project["tool"]["setuptools"]["package-data"]["chatllm.prompts"]
