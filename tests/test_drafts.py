"""On a terminal a summary's words show as they come, though grounding holds
each sentence back until its numbers are checked: the held words are a draft
that the live view shows and takes back if the sentence is left out. A pipe
gets only checked sentences (what it was given cannot be taken back)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from chatllm.jobs.grounding import GroundingFilter, grounded
from chatllm.render import CollectingSink, MarkdownSink, PlainSink
from tests.support.cli import chatllm_command, cli_env

ARTICLE = Path(__file__).parent.parent / "benchmarks/data/quality/summarize/01-council-electric-buses.en.md"


def _stream(text: str):
    yield from re.findall(r"\s*\S+", text)


def test_grounding_shows_held_words_as_a_draft_and_takes_back_a_dropped_sentence() -> None:
    drafts: list[str] = []
    shown = list(
        grounded(
            _stream("Buses cost 23 million. Fares rise by 99 cents. Routes"),
            GroundingFilter("The buses cost 23 million."),
            ended_by_itself=lambda: False,  # cut: the unfinished "Routes" is left out
            on_draft=drafts.append,
        )
    )
    assert "".join(shown) == "Buses cost 23 million. "
    assert drafts[:3] == ["Buses", "Buses cost", "Buses cost 23"]  # each word at once
    assert "Fares rise by 99 cents." in drafts  # shown while it was written…
    assert drafts[-2:] == ["Routes", ""]  # …then taken back, and so is the unfinished "Routes"
    assert not any(draft.startswith("Buses") for draft in drafts[drafts.index("Fares") :])


def test_a_live_view_shows_the_draft_but_keeps_only_what_was_written() -> None:
    out = io.StringIO()
    sink = MarkdownSink(out)
    sink.write("Checked sentence. ")
    sink.draft("Unchecked words")
    sink.close()
    assert "Checked sentence." in out.getvalue() and "Unchecked" not in out.getvalue()
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
