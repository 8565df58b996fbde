"""On a terminal a summary's words show as they come, though grounding holds
each sentence back until its numbers are checked: the held words are a draft
that the live view shows and takes back if the sentence is left out. A pipe
gets only checked sentences (what it was given cannot be taken back)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.render import CollectingSink, MarkdownSink, PlainSink
from chatllm.reply.events import Draft, Text, text_of
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, call
from tests.support.cli import chatllm_command, cli_env

ARTICLE = Path(__file__).parent.parent / "benchmarks/data/quality/summarize/01-council-electric-buses.en.md"


def test_held_words_show_as_a_draft_and_a_dropped_sentence_is_taken_back() -> None:
    engine = FakeEngine(reply=lambda messages: "Buses cost 23 million. Fares rise by 99 cents. Routes change.")
    meter = Meter(engine, repetition="strict", drafts=True)
    params = GenerationParams(temperature=0, max_tokens=10)  # cut: the unfinished "Routes" is left out
    checks = Checks(facts="The buses cost 23 million.")
    events = list(call(meter, [Message("user", "Summarize.")], params, checks))
    assert text_of(events) == "Buses cost 23 million. "
    # What a live view shows after each event: a Text clears the draft, a Draft replaces it.
    drafts = [event.text if isinstance(event, Draft) else "" for event in events if isinstance(event, Text | Draft)]
    assert isinstance(events[0], Draft) and drafts[0].strip() == "Buses"  # at once, though its sentence is unchecked
    assert "Fares rise by 99 cents." in " ".join(drafts)  # the invented figure was on screen a moment…
    assert drafts[-1] == ""  # …and is gone at the end, as is "Routes"


def test_a_live_view_shows_the_draft_but_keeps_only_what_was_written() -> None:
    out = io.StringIO()
    sink = MarkdownSink(out)
    sink.write("Checked sentence. ")
    sink.draft("Unchecked words")
    sink.close()
    assert "Checked sentence." in out.getvalue() and "Unchecked" not in out.getvalue()
    joined = MarkdownSink(io.StringIO())
    joined.write("Council")
    joined.draft("ne pas")  # translate holds back the space between them
    assert joined.live_text() == "Council ne pas"
    joined.write("\n\n理事会")
    joined.draft("否决了")
    assert joined.live_text().endswith("理事会否决了")
    joined.close()
    for other in (PlainSink(io.StringIO()), CollectingSink()):
        other.draft("ignored")  # a pipe and --json never show a draft


@pytest.mark.slow
def test_a_summary_on_a_terminal_starts_before_its_first_sentence_ends(embedded_model: Path, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = cli_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    env.pop("NO_COLOR", None)
    program, *args = chatllm_command("summarize", str(ARTICLE), "--seed", "7")
    child = pexpect.spawn(program, args, cwd=str(tmp_path), env=env, dimensions=(30, 100), timeout=300)
    raw = child.read()
    child.close()
    assert child.exitstatus == 0
    # The live view erases its last frame's lines before drawing the next one;
    # the first frame with any text in it is the first the user sees.
    frames = (re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\s+", b" ", part).decode().strip() for part in raw.split(b"\x1b[2K"))
    visible = next((frame for frame in frames if frame), "")
    assert visible, raw[-400:]
    assert not re.search(r"[.!?](\s|$)", visible), f"the first frame waited for a whole sentence: {visible!r}"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_repl_shows_a_personas_words_before_their_sentence_is_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from chatllm.cli.options import RunOptions
    from chatllm.cli.repl import Repl
    from chatllm.config.settings import Settings
    from chatllm.hub.models import ResolvedModel
    from chatllm.jobs.chat import ChatSession, Persona

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    reply = "Returns are free within 45 days. Refunds take 99 days. Keep the receipt."
    engine = FakeEngine(reply=lambda messages: reply)
    persona = Persona("support", "You answer from the FAQ.", facts="Returns are free within 45 days.")
    session = ChatSession(engine, persona, GenerationParams(temperature=0), repetition="strict")
    out = _Terminal()
    with create_pipe_input() as keyboard:
        keyboard.send_text("How long do I have?\r")
        keyboard.close()
        model = ResolvedModel(reference="fake", name="fake.gguf", path=None)
        Repl(
            session,
            RunOptions(),
            Settings(),
            model,
            pt_input=keyboard,
            pt_output=DummyOutput(),
            out=out,
            err=io.StringIO(),
            history_path=tmp_path / "history",
        ).run()
    first_frame = out.getvalue().split("\x1b[2K")[0]
    assert re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", first_frame).strip() == "Returns"  # before its sentence ended
    assert session.turns[0].reply == "Returns are free within 45 days. Keep the receipt."  # the 99 days left out
    assert "99" not in out.getvalue().rsplit("\x1b[2K", 1)[-1]
