"""`chatllm logs ...`, and what chat and one-shot commands save (or do not
save) to the history, on the fake engine."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatllm.cli.app import app
from chatllm.history.store import history_path, load_conversation
from tests.support.cli import run_chatllm

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def saved(fake_engine) -> None:
    """Conversation 1: a summarize run; 2: a two-turn chat; 3: a support chat."""
    invoke("summarize", "--length", "short", input="Zebras have stripes. Lions do not.")
    invoke("chat", input="hello there\nhow are you\n")
    invoke("chat", "--persona", "support", input="my order is late\n")


def test_list_shows_newest_first_with_template_model_and_first_words(saved) -> None:
    lines = invoke("logs", "list").stdout.splitlines()
    assert lines[0].split() == ["id", "when", "template", "model", "first", "words"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]
    assert "support" in lines[1] and "fake.gguf" in lines[1] and "my order is late" in lines[1]
    assert "summarize" in lines[3] and "Zebras have stripes." in lines[3]


def test_list_limit_search_and_json(saved) -> None:
    assert [line.split()[0] for line in invoke("logs", "list", "-n", "1").stdout.splitlines()[1:]] == ["3"]
    found = invoke("logs", "list", "--search", "how are").stdout.splitlines()[1:]
    assert [line.split()[0] for line in found] == ["2"]
    rows = json.loads(invoke("logs", "list", "--json").stdout)
    assert [(r["id"], r["kind"], r["message_count"]) for r in rows] == [(3, "chat", 2), (2, "chat", 4), (1, "run", 2)]
    assert "No saved conversations match." in invoke("logs", "list", "--search", "nothing like this").stderr


def test_show_and_export(saved) -> None:
    shown = invoke("logs", "show", "2").stdout
    assert shown.startswith("Conversation 2: chat with chat; model fake.gguf;")
    assert "[user]\nhello there\n\n[assistant]\nEcho: hello there" in shown

    markdown = invoke("logs", "export", "2").stdout
    assert markdown.startswith("# Conversation with chat")
    assert "## User\n\nhow are you\n\n## Assistant\n\nEcho: how are you" in markdown

    data = json.loads(invoke("logs", "export", "1", "--format", "json").stdout)
    assert (data["kind"], data["template"], data["variables"]["length"]) == ("run", "summarize", "short")
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][0]["content"] == "Zebras have stripes. Lions do not."
    assert set(data["messages"][1]["usage"]) == {"prompt_tokens", "completion_tokens", "cached_prompt_tokens"}


def test_rm_removes(saved) -> None:
    assert "Removed conversation 2." in invoke("logs", "rm", "2").stderr
    assert [r["id"] for r in json.loads(invoke("logs", "list", "--json").stdout)] == [3, 1]


def test_chat_continue_and_conversation_resume_with_earlier_turns(saved, fake_engine) -> None:
    result = invoke("chat", "--continue", input="and now?\n")
    assert "Continuing conversation 3 (1 earlier turn)." in result.stderr
    prompt = fake_engine.calls[-1]
    # the support persona, restored (its user messages carry the knowledge found for them)
    assert prompt[0].role == "system" and any(m.content.endswith("my order is late") for m in prompt)
    assert [t.user for t in load_conversation(3).turns()] == ["my order is late", "and now?"]

    invoke("chat", "--conversation", "2", input="third\n")
    contents = [m.content for m in fake_engine.calls[-1]]
    assert contents[1:] == ["hello there", "Echo: hello there", "how are you", "Echo: how are you", "third"]


def test_continuing_with_another_model_than_the_conversations_says_so(saved, fake_engine) -> None:
    import sqlite3

    with sqlite3.connect(history_path()) as connection:
        connection.execute("UPDATE conversations SET model = 'other.gguf' WHERE id = 3")
    result = invoke("chat", "--continue", input="and now?\n")
    assert "It was with other.gguf; this session uses fake.gguf (-m picks the model)." in result.stderr
    assert "It was with" not in invoke("chat", "--conversation", "2", input="more\n").stderr


def test_continuing_a_run_makes_it_the_chat_to_continue(saved, fake_engine) -> None:
    invoke("chat", "--conversation", "1", input="shorter please\n")
    invoke("chat", "-c", input="thanks\n")
    assert [t.user for t in load_conversation(1).turns()][-2:] == ["shorter please", "thanks"]


def test_no_log_and_the_log_setting_turn_saving_off(fake_engine, monkeypatch) -> None:
    invoke("chat", "--no-log", input="secret\n")
    invoke("summarize", "--no-log", input="Secret text.")
    monkeypatch.setenv("CHATLLM_LOG", "off")
    invoke("chat", input="also secret\n")
    monkeypatch.delenv("CHATLLM_LOG")
    invoke("config", "set", "log", "false")
    invoke("translate", "--to", "fr", input="Secret text.")
    assert not history_path().exists() or json.loads(invoke("logs", "list", "--json").stdout) == []


def test_errors_are_one_line() -> None:
    result = run_chatllm("logs", "show", "42")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "Error: no conversation 42 in the history (see `chatllm logs list`)"

    result = run_chatllm("chat", "--continue", input="hi\n")
    assert result.returncode == 1 and result.stderr.decode().strip() == "Error: there is no saved chat to continue yet"

    history_path().parent.mkdir(parents=True, exist_ok=True)
    history_path().write_bytes(b"garbage" * 1000)
    result = run_chatllm("logs", "list")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("Error: cannot read the history database ")
        and "file is not a database" in lines[0]
    )


def test_list_in_a_pipe_prints_every_column_whole(fake_engine) -> None:
    title = "Zorbla " + "with many more words than any terminal column would ever hold " * 2
    invoke("chat", input=title + "\n")
    line = invoke("logs", "list").stdout.splitlines()[1]  # CliRunner's stdout is a pipe
    from chatllm.history.store import title_of

    assert line.endswith(title_of(title)) and len(line) > 80  # the stored title (its first 60 characters), whole
    assert line.split()[1].count("-") == 2 and ":" in line.split()[2]  # the date and the time, whole
