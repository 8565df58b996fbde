"""The table of jobs (chatllm/jobs/table.py): a job is one entry and one
module, and the command line, early loading, completion and --dry-run all
follow the table; cli/ names no job."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chatllm.cli import commands, early_load
from chatllm.engine.fake import FakeEngine
from chatllm.jobs import table
from chatllm.jobs.options import Option

CLI = Path(__file__).resolve().parent.parent / "chatllm" / "cli"
ECHO = table.JobSpec(
    "echo", "Say the words back.", "tests.support.echo_job", (Option("words", (), "Words.", many=True, required=True),)
)


def test_a_job_added_to_the_table_is_a_command_with_dry_run_and_the_shared_options(
    monkeypatch: pytest.MonkeyPatch, fake_engine: FakeEngine
) -> None:
    monkeypatch.setattr(table, "JOBS", (*table.JOBS, ECHO))
    app = typer.Typer()
    commands.register(app)
    runner = CliRunner()
    planned = json.loads(runner.invoke(app, ["echo", "hello", "there", "--dry-run", "-m", "x.gguf"]).stdout)
    assert planned["template"] == "echo" and planned["messages"] == [{"role": "user", "content": "hello there"}]
    result = runner.invoke(app, ["echo", "hello", "--json", "--max-tokens", "8", "--no-log"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["text"] == "Echo: hello" and payload["template"] == "echo" and payload["finish_reason"] == "stop"
    assert "echo" in table.generating_commands()  # so early loading starts its model before typer is imported


def test_early_loading_and_completion_read_the_table() -> None:
    assert early_load.GENERATING_COMMANDS == {spec.name for spec in table.JOBS}
    assert set(early_load._UNSURE_OPTIONS) >= {"--ctx", "--gpu-layers", "--seed", "--dry-run", "--help"}
    assert table.option_of("translate", "to").complete == "languages"  # `config set commands.translate.to <TAB>`
    assert table.option_of("summarize", "max-tokens").name == "max_tokens"


def test_the_command_line_names_no_job() -> None:
    """cli/ parses, picks a job from the table and renders: a job's name in a
    comparison there would be job logic in the wrong place."""
    names = {spec.name for spec in table.JOBS}
    found = []
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                words = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                found += [f"{path.name}:{node.lineno}: {word}" for word in words & names]
    assert not found, found
