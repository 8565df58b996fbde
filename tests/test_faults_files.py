"""Private data stays private: what chatllm keeps of a user's prompts, chats
and settings is readable by its owner only (0600 files in 0700 folders).

The real CLI runs in a subprocess under a umask of 022 (the usual one, which
makes files 0644 and folders 0755 unless a program asks otherwise), then the
modes are read with os.stat: the history (and SQLite's side files), the
prompt states and a persona judge's calibration, config.yaml, the REPL's input
history. Files an older chatllm left looser are tightened when chatllm next
writes them, and keep their contents. `config show` masks secrets.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatllm.config.settings import cache_dir, config_dir, data_dir
from tests.support.cli import chatllm_command, cli_env, run_chatllm

API_KEY = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems give users, inherited by every chatllm started here."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def assert_private(folder: Path, pattern: str = "*") -> list[Path]:
    """`folder` is 0700 and every file in it matching `pattern` 0600 (and
    there is one); no temporary file is left behind."""
    assert mode(folder) == 0o700, oct(mode(folder))
    files = sorted(folder.glob(pattern))
    assert files, f"nothing matches {pattern} in {folder}"
    assert {path.name: oct(mode(path)) for path in files} == {path.name: "0o600" for path in files}
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    return files


# ------------------------------------------------------------------ the history


@pytest.mark.slow
def test_the_history_and_sqlites_side_files_are_private(embedded_model: Path) -> None:
    ok(run_chatllm("chat", "--max-tokens", "8", input="hi\n"))
    database = data_dir() / "history.db"
    assert mode(data_dir()) == 0o700 and mode(database) == 0o600

    # As an older chatllm left it: world-readable, with SQLite's side files
    # (kept in existence by a reader that stays connected).
    os.chmod(data_dir(), 0o755)
    os.chmod(database, 0o644)
    reader = sqlite3.connect(database)
    try:
        reader.execute("SELECT count(*) FROM conversations").fetchone()
        side_files = [database.with_name("history.db-wal"), database.with_name("history.db-shm")]
        assert [mode(path) for path in side_files] == [0o644, 0o644]

        ok(run_chatllm("chat", "--max-tokens", "8", input="hi\n"))
        assert mode(data_dir()) == 0o700
        assert [mode(path) for path in [database, *side_files]] == [0o600, 0o600, 0o600]
        assert reader.execute("SELECT count(*) FROM conversations").fetchone()[0] == 2  # nothing lost
    finally:
        reader.close()


# ------------------------------------------- prompt states and persona judges


@pytest.mark.slow
def test_a_persona_run_keeps_its_prompt_state_and_judge_calibration_private(
    embedded_model: Path, tmp_path: Path
) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days of delivery. Refunds take 10 working days.\n")
    judges = cache_dir() / "persona-judges"
    judges.mkdir(parents=True, mode=0o755)  # an older chatllm's folder: tightened at the next write
    os.chmod(judges, 0o755)
    result = run_chatllm(
        "chat", "-p", "support", "--kb", str(faq), "--max-tokens", "8", "--temperature", "0",
        input="Is there a loyalty programme where I collect points?\n",
    )  # fmt: skip
    ok(result)
    assert_private(cache_dir() / "prompt-states", "*.state")  # they hold the persona's prompt
    assert_private(judges, "*.json")


# ------------------------------------------------------------------- the config


def test_config_set_writes_a_private_file_and_tightens_an_older_one() -> None:
    ok(run_chatllm("config", "set", "commands.serve.api_key", API_KEY))
    path = config_dir() / "config.yaml"
    assert_private(config_dir(), "config.yaml")

    os.chmod(path, 0o644)
    os.chmod(config_dir(), 0o755)
    path.write_text(path.read_text() + "# my own comment\n")
    ok(run_chatllm("config", "set", "ctx", "2048"))
    assert_private(config_dir(), "config.yaml")
    assert "# my own comment" in path.read_text() and API_KEY in path.read_text()


def test_config_show_masks_secrets_and_get_still_prints_one() -> None:
    ok(run_chatllm("config", "set", "commands.serve.api_key", API_KEY))
    ok(run_chatllm("config", "set", "commands.summarize.max-tokens", "300"))
    path = config_dir() / "config.yaml"
    path.write_text(path.read_text() + "  translate:\n    hf_token: hf_abc\n")  # what a user may put there

    shown = ok(run_chatllm("config", "show"))
    assert API_KEY not in shown and "api_key: '****cdef'" in shown
    assert "hf_abc" not in shown and "hf_token: '****'" in shown
    assert "max-tokens: 300" in shown  # not a secret, though its name has "token" in it

    settings = json.loads(ok(run_chatllm("config", "show", "--json")))["settings"]
    assert settings["commands"]["serve"] == {"api_key": "****cdef"}
    assert settings["commands"]["translate"] == {"hf_token": "****"}
    assert settings["commands"]["summarize"] == {"max-tokens": 300}

    # Asked for by name, a value is printed whole: scripts read it so.
    assert ok(run_chatllm("config", "get", "commands.serve.api_key")).strip() == API_KEY


# ------------------------------------------------------------ the REPL history


PROMPT = "Send a message"  # the placeholder of an empty prompt (tests/test_repl.py)


def type_a_message(tmp_path: Path, message: str) -> None:
    """`chatllm chat` in a real terminal: send `message`, wait for the reply, Ctrl-D."""
    pexpect = pytest.importorskip("pexpect")
    program, *args = chatllm_command("chat", "--max-tokens", "4")
    env = cli_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    child = pexpect.spawn(
        program, args, cwd=str(tmp_path), env=env, dimensions=(30, 100), encoding="utf-8", timeout=300
    )
    child.logfile_read = transcript = io.StringIO()
    try:
        child.expect(PROMPT)
        child.send(message + "\r")
        child.expect(PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    except pexpect.ExceptionPexpect as error:
        pytest.fail(f"{type(error).__name__}; the terminal showed:\n{transcript.getvalue()[-3000:]!r}")
    finally:
        child.close()
    assert child.exitstatus == 0, transcript.getvalue()[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_repl_input_history_is_private(embedded_model: Path, tmp_path: Path) -> None:
    history = data_dir() / "repl_history"
    type_a_message(tmp_path, "my password is hunter2")
    assert mode(data_dir()) == 0o700 and mode(history) == 0o600

    os.chmod(history, 0o644)  # as an older chatllm left it
    type_a_message(tmp_path, "hello again")
    assert mode(history) == 0o600
    assert "hunter2" in history.read_text() and "hello again" in history.read_text()
