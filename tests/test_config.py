"""`chatllm config ...`, the settings file's rules, CHATLLM_* variables, and
per-command defaults reaching every command's options."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatllm.cli.app import app
from chatllm.config.settings import load_settings, settings_path
from tests.support.cli import run_chatllm

runner = CliRunner()


def invoke(*args: str, input: str | None = None, code: int = 0):
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def write_settings(text: str) -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(text, encoding="utf-8")


def error_line(result) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], result.stderr.decode()
    return lines[0]


def test_path_is_config_yaml_in_the_config_folder(isolated_home) -> None:
    assert invoke("config", "path").stdout.strip() == str(isolated_home / "config" / "chatllm" / "config.yaml")


def test_set_get_and_show(isolated_home) -> None:
    invoke("config", "set", "ctx", "2048")
    invoke("config", "set", "default_model", "qwen2.5:0.5b")
    invoke("config", "set", "log", "off")
    invoke("config", "set", "gpu_layers", "-1")
    assert invoke("config", "get", "ctx").stdout == "2048\n"
    assert invoke("config", "get", "default_model").stdout == "qwen2.5:0.5b\n"
    assert invoke("config", "get", "log").stdout == "false\n"
    assert invoke("config", "get", "threads").stdout == "\n"  # unset
    assert load_settings().ctx == 2048 and load_settings().log is False

    shown = invoke("config", "show").stdout
    assert shown.splitlines()[0] == f"# settings file: {settings_path()}"
    assert any(line.startswith("ctx: 2048") and "# config file:" in line for line in shown.splitlines())
    assert any(line.startswith("theme: monokai") and "# default:" in line for line in shown.splitlines())
    data = json.loads(invoke("config", "show", "--json").stdout)
    assert data["settings"]["default_model"] == "qwen2.5:0.5b" and data["sources"]["threads"] == "default"


def test_set_keeps_comments_and_the_rest_of_the_file() -> None:
    write_settings("# my settings\nctx: 4096  # fits my GPU\ntheme: native\n\ncommands:\n  translate:\n    to: de\n")
    invoke("config", "set", "ctx", "8192")
    invoke("config", "set", "commands.translate.to", "fr")
    invoke("config", "set", "commands.summarize.length", "short")
    text = settings_path().read_text()
    assert text.startswith("# my settings\nctx: 8192  # fits my GPU\ntheme: native\n")
    assert load_settings().commands == {"translate": {"to": "fr"}, "summarize": {"length": "short"}}
    assert [p.name for p in settings_path().parent.iterdir()] == ["config.yaml"]  # no temporary file left
    invoke("config", "unset", "commands.translate.to")
    invoke("config", "unset", "theme")
    assert load_settings().commands == {"translate": {}, "summarize": {"length": "short"}}
    assert "theme" not in settings_path().read_text() and "# fits my GPU" in settings_path().read_text()


def test_set_types_command_options_as_the_option_takes_them() -> None:
    invoke("config", "set", "commands.translate.from", "no")  # Norwegian, not YAML's false
    invoke("config", "set", "commands.summarize.temperature", "0.2")
    invoke("config", "set", "commands.chat.json", "true")
    invoke("config", "set", "commands.run.var", "tone=formal")
    commands = load_settings().commands
    assert commands["translate"]["from"] == "no"
    assert commands["summarize"]["temperature"] == 0.2 and commands["chat"]["json"] is True
    assert commands["run"]["var"] == ["tone=formal"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["ctx", "lots"], "'ctx' must be a positive whole number, not 'lots'"),
        (["log", "maybe"], "'log' must be true or false, not 'maybe'"),
        (["gpu_layers", "many"], "'gpu_layers' must be a number of layers"),
        (["colour", "red"], "unknown setting 'colour'"),
        (["commands.nosuch.x", "1"], "unknown command 'nosuch'"),
        (
            ["commands.translate.tone", "1"],
            "'translate' has no option 'tone' (options: chat-template, ctx, dry-multiplier, dry-run,",
        ),
        (
            ["commands.summarize.length", "huge"],
            "commands.summarize.length: 'huge' is not one of 'short', 'medium', 'long'",
        ),
        (["commands.summarize.max-tokens", "0"], "commands.summarize.max-tokens:"),
    ],
)
def test_set_refuses_what_loading_would_refuse(args, message) -> None:
    write_settings("ctx: 1024\n")
    result = run_chatllm("config", "set", *args)
    assert result.returncode == 1
    assert error_line(result).startswith("Error: ") and message in error_line(result)
    assert settings_path().read_text() == "ctx: 1024\n"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("ctx: 2048\ntheme: [unclosed\n", 3, ""),
        ("ctx: 2048\nlog: perhaps\n", 2, "'log' must be true or false, not 'perhaps'"),
        ("ctx: 2048\n\ncolour: red\n", 3, "unknown setting 'colour'"),
        ("commands:\n  translate:\n    tone: formal\n", 3, "'translate' has no option 'tone'"),
        ("commands:\n  translate:\n    temperature: hot\n", 3, "commands.translate.temperature:"),
        ("commands:\n  translation: {to: fr}\n", 2, "unknown command 'translation'"),
    ],
)
def test_a_malformed_file_is_an_error_naming_the_line(text, line, message) -> None:
    write_settings(text)
    result = run_chatllm("translate", "--to", "fr", "--dry-run", input="hello")
    assert result.returncode == 1
    assert error_line(result).startswith(f"Error: {settings_path()}:{line}: ") and message in error_line(result)
    assert result.stdout == b""
    # `chatllm config path` still works, to find the file and fix it.
    assert run_chatllm("config", "path").stdout.decode().strip() == str(settings_path())


def test_environment_variables_override_the_file(monkeypatch) -> None:
    write_settings("ctx: 2048\ndefault_model: embedded\n")
    monkeypatch.setenv("CHATLLM_CTX", "512")
    monkeypatch.setenv("CHATLLM_LOG", "0")
    assert load_settings().ctx == 512 and load_settings().log is False
    assert invoke("config", "get", "ctx").stdout == "512\n"
    assert invoke("config", "get", "default_model").stdout == "embedded\n"
    assert json.loads(invoke("config", "show", "--json").stdout)["sources"]["ctx"] == "CHATLLM_CTX"

    result = run_chatllm("config", "get", "ctx", env={"CHATLLM_CTX": "big"})
    assert error_line(result) == "Error: CHATLLM_CTX: 'ctx' must be a positive whole number, not 'big'"


def dry_run(*args: str) -> dict:
    return json.loads(invoke(*args, "--dry-run", input="Good morning.").stdout)


def test_per_command_defaults_apply_and_the_command_line_wins() -> None:
    write_settings(
        "commands:\n  translate:\n    to: fr\n    temperature: 0.05\n  summarize:\n    length: short\n    max-tokens: 99\n"
    )
    translated = dry_run("translate")  # --to is required, but the settings give it
    assert "French" in translated["messages"][0]["content"] and translated["params"]["temperature"] == 0.05
    assert "German" in dry_run("translate", "--to", "de")["messages"][0]["content"]
    summary = dry_run("summarize")
    assert summary["params"]["max_tokens"] == 99
    assert (
        "in about 50 words" in summary["messages"][-1]["content"]  # 99 tokens at the input's 2 tokens a word
    )  # 99 tokens (max-tokens wins over --length short)
    assert dry_run("summarize", "--max-tokens", "7")["params"]["max_tokens"] == 7


def test_per_command_defaults_reach_groups_and_flags(fake_engine) -> None:
    write_settings("commands:\n  chat:\n    persona: support\n    json: true\n  logs:\n    list:\n      number: 1\n")
    reply = json.loads(invoke("chat", input="hello\n").stdout)
    assert reply["template"] == "support"
    invoke("chat", input="again\n")
    assert len(invoke("logs", "list").stdout.splitlines()) == 2  # header + 1 row


def test_set_repairs_a_bad_value_but_not_broken_yaml() -> None:
    write_settings("# keep me\nlog: perhaps\n")
    invoke("config", "set", "log", "true")
    assert settings_path().read_text() == "# keep me\nlog: true\n"
    write_settings("log: [unclosed\n")
    result = run_chatllm("config", "set", "log", "true")
    assert result.returncode == 1 and error_line(result).startswith(f"Error: {settings_path()}:2: ")
