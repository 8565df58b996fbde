"""Commands through the CLI on the fake engine, and every bad input's error line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatllm.cli.app import app
from chatllm.config.settings import user_templates_dir
from tests.support.cli import run_chatllm

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_version_and_help() -> None:
    assert run_chatllm("--version").stdout.decode().startswith("chatllm ")
    help_text = run_chatllm("--help").stdout.decode()
    for command in ("chat", "summarize", "translate", "run", "templates"):
        assert command in help_text


@pytest.mark.parametrize("name", ["summarize", "translate", "proofread", "explain"])
def test_dry_run_renders_every_task_template(name: str, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Some input text with {{ braces }} and <|im_end|> in it.")
    args = ["run", name, str(source), "--dry-run"]
    if name == "translate":
        args += ["-v", "to=French"]
    result = invoke(*args)
    payload = json.loads(result.stdout)
    assert payload["template"] == name
    assert payload["messages"][-1]["role"] == "user"
    assert "{{ braces }} and <|im_end|>" in payload["messages"][-1]["content"]


@pytest.mark.parametrize("persona", ["chat", "support"])
def test_dry_run_renders_every_persona(persona: str) -> None:
    payload = json.loads(invoke("chat", "--persona", persona, "--dry-run").stdout)
    assert payload["messages"][0]["role"] == "system"


def test_summarize_options_reach_the_prompt(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("这是一段中文文本，讲述了一家小店的故事。店主每天早上六点开门，卖新鲜的面包和咖啡。")
    payload = json.loads(
        invoke("summarize", str(source), "--length", "short", "--format", "bullets", "--dry-run").stdout
    )
    prompt = payload["messages"][-1]["content"]
    assert re.search(r"in about \d+ characters", prompt) and "bullet list" in prompt  # Chinese counts characters
    assert "Chinese" in prompt  # summary in the input's language
    payload = json.loads(invoke("summarize", str(source), "--lang", "fr", "--dry-run").stdout)
    assert "French" in payload["messages"][-1]["content"]


def test_translate_accepts_codes_and_names(tmp_path: Path) -> None:
    for language, expected in (
        ("fr", "French"),
        ("中文", "Chinese"),
        ("zh-Hant", "Traditional"),
        ("Deutsch", "German"),
    ):
        payload = json.loads(invoke("translate", "--to", language, "--dry-run", input="hello").stdout)
        assert expected in payload["messages"][0]["content"]


def test_summarize_json_and_stats_on_fake_engine(fake_engine, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Cats sleep a lot.")
    result = invoke("summarize", str(source), "--json", "--stats")
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["text"].startswith("Echo:")
    assert payload["model"] == "fake.gguf" and payload["template"] == "summarize"
    assert set(payload["usage"]) == {"prompt_tokens", "completion_tokens", "cached_prompt_tokens"}
    assert set(payload["timings"]) == {"load_s", "ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s", "total_s"}
    assert "decode:" in result.stderr and "prompt tokens reused from cache:" in result.stderr


def test_chat_in_a_pipe_answers_each_line(fake_engine) -> None:
    result = invoke("chat", input="hi\n\nthanks\n")
    assert result.stdout.splitlines() == ["Echo: hi", "", "Echo: thanks"]
    assert len(fake_engine.calls) == 2
    assert [m.role for m in fake_engine.calls[1]] == ["system", "user", "assistant", "user"]


def test_run_user_template_with_variables(fake_engine) -> None:
    folder = user_templates_dir()
    folder.mkdir(parents=True)
    (folder / "haiku.yaml").write_text(
        "variables:\n  season: {required: true}\nprompt: 'A {{ season }} haiku about {{ input }}'\n"
    )
    result = invoke("run", "haiku", "-v", "season=winter", input="snow")
    assert result.stdout.strip() == "Echo: A winter haiku about snow"


def test_templates_list_show_path() -> None:
    listing = invoke("templates", "list").stdout
    assert "support" in listing and "persona" in listing and "built-in" in listing
    shown = invoke("templates", "show", "summarize").stdout
    assert "length" in shown and "short, medium, long" in shown
    assert "built-in:" in invoke("templates", "path").stdout


# ---------------------------------------------------------------- bad input


def error_line(result) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    return lines[0]


def write_bad_template() -> None:
    folder = user_templates_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.yaml").write_text("name: broken\nprompt: |\n  {{ input }\n")


@pytest.mark.parametrize(
    "args, stdin, code, message",
    [
        (["summarize"], "   \n", 1, "is empty"),
        (["summarize"], b"\x00\x01binary\x00", 1, "binary"),
        (["summarize"], b"caf\xe9 latin-1", 1, "not UTF-8"),
        (["summarize", "/no/such/file.txt"], "", 1, "does not exist"),
        (["summarize", "/"], "", 1, "is a directory"),
        (["run", "nosuch"], "x", 1, "unknown template 'nosuch'"),
        (["run", "broken"], "x", 1, "broken.yaml:3:"),
        (["run", "translate"], "x", 1, "needs the variable 'to'"),
        (["translate", "--to", "xyzzyish"], "x", 2, "unknown language 'xyzzyish'"),
        (["summarize", "--max-tokens", "0"], "x", 2, "--max-tokens"),
        (["summarize", "--length", "huge"], "x", 2, "--length"),
        (["run", "summarize", "-v", "oops"], "x", 2, "not key=value"),
        (["summarize", "-m", "/no/such/model.gguf"], "x", 1, "does not exist"),
        (["summarize", "-m", "openai:"], "x", 1, "not a remote model reference"),
    ],
)
def test_bad_input_is_one_error_line(args, stdin, code, message) -> None:
    write_bad_template()
    result = run_chatllm(*args, input=stdin)
    assert result.returncode == code, result.stderr
    line = error_line(result)
    assert line.startswith("Error: ") and message in line
    assert result.stdout == b""


def test_a_file_that_is_not_gguf_is_rejected(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    result = run_chatllm("summarize", "-m", str(fake), input="hello")
    assert result.returncode == 1
    assert "is not a GGUF model file" in error_line(result)


def test_debug_shows_the_traceback() -> None:
    result = run_chatllm("--debug", "summarize", "/no/such/file", input="")
    assert result.returncode == 1
    assert (
        "Traceback" in result.stderr.decode() and "Error: file '/no/such/file' does not exist" in result.stderr.decode()
    )
