"""The interactive `chatllm chat`.

Unit tests type keys into the REPL through prompt-toolkit's pipe input, on the
fake engine. The slow tests run the real command on the embedded model in a
real pseudo-terminal (pexpect), and in a pipe.
"""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatllm.cli import slash_commands
from chatllm.cli.options import RunOptions
from chatllm.cli.repl import Repl, block_is_open, message_text
from chatllm.config.settings import Settings, data_dir
from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.hub.models import ResolvedModel
from chatllm.jobs.chat import ChatSession, Persona
from tests.support.cli import chatllm_command, cli_env, run_chatllm

ENTER = "\r"
NEWLINE = "\x1b\r"  # Alt-Enter / Esc Enter
CTRL_C = "\x03"


def paste(text: str) -> str:
    """Keys a terminal sends for pasted text (bracketed paste)."""
    return f"\x1b[200~{text}\x1b[201~"


@dataclass
class Ran:
    session: ChatSession
    engine: FakeEngine
    out: str
    err: str
    history: Path


def chat(
    keys: str,
    *,
    engine: FakeEngine | None = None,
    options: RunOptions | None = None,
    greeting: str = "",
    out: io.StringIO | None = None,
    history: Path | None = None,
) -> Ran:
    """Type `keys` into a fresh REPL; the input ends there (Ctrl-D)."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    engine = engine or FakeEngine()
    session = ChatSession(engine, Persona("chat", "You are helpful.", greeting=greeting), GenerationParams())
    model = ResolvedModel(reference="fake", name="fake.gguf", path=None)
    out = out or io.StringIO()
    err = io.StringIO()
    history = history or data_dir() / "repl_history"
    with create_pipe_input() as keyboard:
        keyboard.send_text(keys)
        keyboard.close()
        Repl(
            session,
            options or RunOptions(),
            Settings(),
            model,
            pt_input=keyboard,
            pt_output=DummyOutput(),
            out=out,
            err=err,
            history_path=history,
        ).run()
    return Ran(session, engine, out.getvalue(), err.getvalue(), history)


# ---------------------------------------------------------------- messages


def test_a_message_gets_a_streamed_reply_and_the_greeting_comes_first() -> None:
    ran = chat("hello there" + ENTER, greeting="Hi! How can I help?")
    assert ran.out.index("Hi! How can I help?") < ran.out.index("Echo: hello there")
    assert [turn.user for turn in ran.session.turns] == ["hello there"]
    assert ran.session.turns[0].reply == "Echo: hello there"
    assert "Chatting with fake as chat" in ran.err


def test_alt_enter_inserts_a_new_line_and_enter_sends() -> None:
    ran = chat("line one" + NEWLINE + "line two" + ENTER)
    assert [turn.user for turn in ran.session.turns] == ["line one\nline two"]


def test_triple_quotes_make_a_multi_line_block_where_enter_is_a_new_line() -> None:
    ran = chat('"""' + ENTER + "first" + ENTER + "  second" + ENTER + '"""' + ENTER + "after" + ENTER)
    assert [turn.user for turn in ran.session.turns] == ["first\n  second", "after"]


def test_pasted_lines_stay_one_message() -> None:
    ran = chat(paste("a pasted\nparagraph\r\nof three lines") + ENTER)
    assert [turn.user for turn in ran.session.turns] == ["a pasted\nparagraph\nof three lines"]


def test_blank_input_is_ignored() -> None:
    ran = chat("   " + ENTER + ENTER)
    assert ran.session.turns == [] and ran.engine.calls == []


def test_double_slash_sends_a_message_starting_with_a_slash() -> None:
    ran = chat("//usr/bin is a folder" + ENTER)
    assert ran.session.turns[0].user == "/usr/bin is a folder"


def test_ctrl_c_at_the_prompt_clears_the_line_and_the_repl_goes_on() -> None:
    ran = chat("half typed" + CTRL_C + CTRL_C + CTRL_C + "sent" + ENTER)
    assert [turn.user for turn in ran.session.turns] == ["sent"]
    assert ran.err.count("press Ctrl-D or type /exit") == 1  # hinted once, after an empty line


def test_input_history_is_saved_and_read_back_by_the_next_session() -> None:
    first = chat("first question" + ENTER + "/help" + ENTER)
    assert first.history.exists()
    assert "first question" in first.history.read_text()
    # Up arrow in a new REPL brings the earlier message back.
    again = chat("\x1b[A\x1b[A" + ENTER, history=first.history)
    assert [turn.user for turn in again.session.turns] == ["first question"]
    # So does Ctrl-R, searching backwards; Enter ends the search, then sends.
    searched = chat("\x12first" + ENTER + ENTER, history=first.history)
    assert [turn.user for turn in searched.session.turns] == ["first question"]


def test_the_history_folder_is_created() -> None:
    history = data_dir() / "deeper" / "repl_history"
    chat("hi" + ENTER, history=history)
    assert history.is_file()


def test_an_unwritable_history_file_is_a_notice_not_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    ran = chat("hi" + ENTER, history=blocker / "repl_history")
    assert "Input history will not be kept" in ran.err
    assert [turn.user for turn in ran.session.turns] == ["hi"]


# ---------------------------------------------------------------- slash commands


def test_help_lists_every_command_and_the_keys() -> None:
    ran = chat("/help" + ENTER)
    for command in ("/help", "/exit", "/reset", "/system", "/save", "/retry"):
        assert command in ran.out
    assert "Alt-Enter" in ran.out and "Ctrl-D" in ran.out
    assert ran.engine.calls == []


def test_exit_and_quit_leave_at_once() -> None:
    for word in ("/exit", "/quit", "/EXIT"):
        ran = chat(word + ENTER + "never sent" + ENTER)
        assert ran.session.turns == []


def test_reset_forgets_the_conversation() -> None:
    ran = chat("one" + ENTER + "/reset" + ENTER + "two" + ENTER)
    assert [turn.user for turn in ran.session.turns] == ["two"]
    assert [m.content for m in ran.engine.calls[-1] if m.role == "user"] == ["two"]
    assert "new conversation" in ran.err


def test_system_shows_the_prompt_and_replaces_it() -> None:
    ran = chat("/system" + ENTER + "/system Answer like a pirate." + ENTER + "hi" + ENTER)
    assert "You are helpful." in ran.out
    assert ran.engine.calls[-1][0] == Message("system", "Answer like a pirate.")


def test_a_long_system_prompt_is_shown_shortened() -> None:
    long_prompt = "\n".join(f"knowledge line {n}" for n in range(50))
    ran = chat(paste("/system " + long_prompt) + ENTER + "/system" + ENTER)
    assert "knowledge line 19" in ran.out and "knowledge line 20" not in ran.out
    assert "30 more lines" in ran.err


def test_retry_generates_the_last_reply_again() -> None:
    ran = chat("tell me" + ENTER + "/retry" + ENTER)
    assert len(ran.engine.calls) == 2
    assert ran.engine.calls[0] == ran.engine.calls[1]  # the same prompt, answered again
    assert len(ran.session.turns) == 1
    assert ran.out.count("Echo: tell me") == 2


def test_retry_with_nothing_to_retry_is_an_error_and_the_repl_goes_on() -> None:
    ran = chat("/retry" + ENTER + "hi" + ENTER)
    assert "Error: nothing to retry yet" in ran.err
    assert len(ran.session.turns) == 1


def test_save_writes_markdown_or_json(tmp_path: Path) -> None:
    markdown, as_json = tmp_path / "chat.md", tmp_path / "chat.json"
    ran = chat("hello" + ENTER + f"/save {markdown}" + ENTER + f"/save {as_json}" + ENTER)
    text = markdown.read_text()
    assert "## User\n\nhello" in text and "Echo: hello" in text
    assert json.loads(as_json.read_text())["turns"][0]["reply"] == "Echo: hello"
    assert f"Saved 1 turn to {markdown}" in ran.err


def test_save_without_a_file_name_or_to_a_folder_explains(tmp_path: Path) -> None:
    ran = chat("/save" + ENTER + f"/save {tmp_path}" + ENTER)
    assert "Usage: /save FILE" in ran.err
    assert "is a directory" in ran.err


def test_an_unknown_command_gets_a_one_line_hint() -> None:
    ran = chat("/sytem be brief" + ENTER + "/frobnicate" + ENTER)
    assert "Unknown command /sytem: did you mean /system?" in ran.err
    assert "Unknown command /frobnicate: /help lists the commands." in ran.err
    assert ran.engine.calls == []


def test_slash_commands_complete_while_typing() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    completer = slash_commands.make_completer()
    names = [c.text for c in completer.get_completions(Document("/s"), CompleteEvent())]
    assert names == ["/system", "/save"]
    assert list(completer.get_completions(Document("hello /s"), CompleteEvent())) == []


def test_save_completes_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    (tmp_path / "notes.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    completer = slash_commands.make_completer()
    assert [c.text for c in completer.get_completions(Document("/save no"), CompleteEvent())] == ["tes.md"]


# ---------------------------------------------------------------- Ctrl-C, errors, notices


class SlowEngine(FakeEngine):
    """Streams ten words; the user presses Ctrl-C (a real SIGINT) after the third."""

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        for index, piece in enumerate(super().stream(messages, params)):
            if index == 3:
                os.kill(os.getpid(), signal.SIGINT)
            yield piece

    def reply_words(self, messages):  # noqa: D102 - used as the reply function
        return "one two three four five six seven eight nine ten"


def test_ctrl_c_during_a_reply_keeps_it_marked_interrupted_and_returns_to_the_prompt() -> None:
    engine = SlowEngine()
    engine.reply = engine.reply_words
    ran = chat("count" + ENTER + "and then?" + ENTER, engine=engine)
    first, second = ran.session.turns
    assert first.interrupted and first.reply == "one two three "
    assert "[interrupted]" in ran.err
    assert second.user == "and then?"  # the REPL went on
    assert ran.engine.calls[1][2] == Message("assistant", "one two three ")
    assert "one two three  [interrupted]" in ran.session.to_markdown()


class InterruptedTerminal(io.StringIO):
    """Ctrl-C arrives while the reply is being written to the screen."""

    def write(self, text: str) -> int:
        if "three" in text:
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


def test_ctrl_c_while_the_reply_is_drawn_closes_the_turn_the_same_way() -> None:
    engine = FakeEngine(reply=lambda messages: "one two three four five six seven eight nine ten")
    ran = chat("count" + ENTER + "/save " + str(data_dir() / "t.md") + ENTER, engine=engine, out=InterruptedTerminal())
    turn = ran.session.turns[0]
    assert turn.interrupted and turn.reply.startswith("one two three")
    assert engine.last_stats.finish_reason == "interrupted"
    assert "[interrupted]" in (data_dir() / "t.md").read_text()


def test_a_message_too_long_for_the_context_is_an_error_and_the_repl_goes_on() -> None:
    engine = FakeEngine(context_size=512)
    ran = chat("word " * 400 + ENTER + "short" + ENTER, engine=engine)
    assert "Error: this message does not fit in the 512-token context" in ran.err
    assert [turn.user for turn in ran.session.turns] == ["short"]


def test_dropping_old_turns_is_shown_as_a_notice() -> None:
    engine = FakeEngine(context_size=400)
    message = "a fairly long message that takes up room in the small context window " * 3
    ran = chat((message + ENTER) * 5, engine=engine)
    assert "outgrew the 400-token context: dropped the oldest" in ran.err
    assert len(ran.session.turns) == 5


def test_stats_are_printed_after_each_reply_with_the_stats_option() -> None:
    ran = chat("one" + ENTER + "two" + ENTER, options=RunOptions(stats=True))
    assert ran.err.count("decode ") == 2 and "from cache" in ran.err


def test_no_escape_codes_when_the_output_is_not_a_terminal() -> None:
    ran = chat("hello" + ENTER + "/bogus" + ENTER)
    assert "\x1b" not in ran.out + ran.err


# ---------------------------------------------------------------- input parsing


@pytest.mark.parametrize(
    ("typed", "is_open", "message"),
    [
        ("hello", False, "hello"),
        ('"""', True, ""),
        ('"""\nfirst line', True, '"""\nfirst line'),
        ('"""\nfirst\n  second\n"""', False, "first\n  second"),
        ('"""one line"""', False, "one line"),
        ("  padded  \n", False, "padded"),
    ],
)
def test_triple_quote_blocks(typed: str, is_open: bool, message: str) -> None:
    assert block_is_open(typed) is is_open
    if not is_open:
        assert message_text(typed) == message


# ---------------------------------------------------------------- the real thing


# The placeholder shown in an empty prompt. (The toolbar is no marker here: it
# needs the terminal to answer cursor-position requests, which pexpect does not.)
PROMPT = "Send a message"
ACCEPTED = r"\x1b\[\?2004l"  # the prompt let go of the terminal: what follows is the reply


def _spawn_env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    env.pop("NO_COLOR", None)
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_repl_in_a_real_terminal_on_the_embedded_model(embedded_model: Path, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    program, *args = chatllm_command("chat", "--max-tokens", "200", "--seed", "1")
    child = pexpect.spawn(
        program,
        args,
        cwd=str(tmp_path),
        env=_spawn_env(tmp_path),
        dimensions=(30, 100),
        encoding="utf-8",
        codec_errors="replace",
        timeout=300,
    )
    child.logfile_read = transcript = io.StringIO()
    try:
        child.expect(PROMPT)
        child.send("Hi! Who are you?" + "\r")
        child.expect(ACCEPTED)
        child.expect(r"[A-Za-z]{2,}")  # words of the reply, streamed
        child.expect(PROMPT)  # the reply ended and the prompt is back

        child.send("Write a very long, detailed essay about the history of the Roman Empire." + "\r")
        child.expect(ACCEPTED)
        child.expect(r"[A-Za-z]{3,}")  # the reply has started ...
        child.send(CTRL_C)  # ... stop it
        child.expect(r"\[interrupted\]")
        child.expect(PROMPT)
        assert child.isalive()

        child.send("/save out.md\r")
        child.expect("Saved 2 turns")
        saved = (tmp_path / "out.md").read_text()
        assert saved.count("## Assistant") == 2
        assert " [interrupted]" in saved
        first_reply = saved.split("## Assistant\n\n")[1].split("## User")[0].strip()
        assert first_reply and "[interrupted]" not in first_reply

        child.expect(PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    except pexpect.ExceptionPexpect as error:
        pytest.fail(f"{type(error).__name__}; the terminal showed:\n{transcript.getvalue()[-3000:]!r}")
    finally:
        child.close()
        if child.isalive():
            child.terminate(force=True)
    assert child.exitstatus == 0, transcript.getvalue()[-2000:]
    assert "Traceback" not in transcript.getvalue()
    assert (data_dir() / "repl_history").read_text().count("+") >= 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chat_in_a_pipe_answers_each_line_in_plain_text(embedded_model: Path) -> None:
    result = run_chatllm("chat", "--max-tokens", "40", "--stats", input="hi\nthanks\n", timeout=500)
    assert result.returncode == 0, result.stderr.decode()
    stdout = result.stdout.decode()
    assert stdout.strip()
    assert "\x1b" not in stdout
    assert result.stderr.decode().count("decode:") == 2  # one reply per line
