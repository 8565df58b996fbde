"""`chatllm ask` on the fake engine: documents and their passages, the index in
the cache folder, retrieval, the answer's checks, citations and --json, and
every bad input's one line."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatllm.cli.app import app
from chatllm.config.settings import ask_cache_dir
from chatllm.engine.base import Message
from chatllm.engine.fake import FakeEngine
from chatllm.jobs import doc_index
from chatllm.jobs.ask import Ask, cited
from chatllm.jobs.doc_index import INDEX_VERSION, collect
from chatllm.jobs.documents import html_text, sections, split_sections
from chatllm.jobs.knowledge import KnowledgeBase, Passage
from chatllm.reply.events import text_of
from chatllm.reply.meter import Meter
from chatllm.templates import load_template
from tests.support.cli import run_chatllm

DOCS = Path(__file__).parent / "data" / "ask"
runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def minimal_pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF with `lines` of text, written by hand."""
    content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    table = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    return out + f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{table}\n%%EOF\n".encode()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(DOCS, folder)
    return folder


# ---------------------------------------------------------------- documents


def test_sections_follow_markdown_and_rst_headings_with_their_lines() -> None:
    text = "Intro.\n\n# Guide\n\nThe X200 lasts\n10 hours.\n\nBattery\n-------\n\n```\n# not a heading\n```\n"
    found = split_sections(text)
    assert [(s.heading, s.first, s.last) for s in found] == [("", 1, 1), ("Guide", 5, 6), ("Battery", 11, 13)]
    assert "# not a heading" in found[2].text
    rst = sections(DOCS / "guides" / "toaster.rst", (DOCS / "guides" / "toaster.rst").read_text())
    assert [(s.heading, s.first, s.last) for s in rst] == [("Toaster manual", 4, 4), ("Cleaning", 9, 9)]


def test_html_keeps_headings_and_drops_scripts(tmp_path: Path) -> None:
    page = "<html><head><style>p{}</style><script>var x</script></head><body><h2>Wi-Fi</h2><p>Use <b>LF-Guest</b>.</p></body></html>"
    assert html_text(page) == "## Wi-Fi\n\nUse LF-Guest."
    path = tmp_path / "office.html"
    assert [(s.heading, s.first) for s in sections(path, html_text(page))] == [("Wi-Fi", None)]


def test_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    path.write_bytes(minimal_pdf(["The Z9 kettle boils water in 4 minutes."]))
    collection = collect([path], None)
    assert [(p.heading, p.lines) for p in collection.passages] == [("page 1", None)]
    assert "4 minutes" in collection.passages[0].text


# ---------------------------------------------------------------- the index


def test_a_folder_is_indexed_once_then_only_changed_files(docs: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = collect([docs], cache)
    assert first.read == 3 and first.files == 3
    assert collect([docs], cache).read == 0
    kettle = docs / "guides" / "kettle.md"
    kettle.write_text(kettle.read_text().replace("2 years", "3 years"))
    again = collect([docs], cache)
    assert again.read == 1
    assert any("3 years" in p.text for p in again.passages)
    (index,) = cache.iterdir()
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert [p.name for p in docs.rglob("*")] == [p.name for p in (DOCS).rglob("*")]  # nothing of theirs added


@pytest.mark.parametrize("damage", ["corrupt", "old version", "wrong shape"])
def test_a_broken_or_old_index_is_silently_rebuilt(docs: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    collect([docs], cache)
    (index,) = cache.iterdir()
    if damage == "corrupt":
        index.write_bytes(index.read_bytes()[:40])
    elif damage == "old version":
        index.write_text(index.read_text().replace(f'"version": {INDEX_VERSION}', '"version": 0'))
    else:
        shape = {"version": INDEX_VERSION, "passage_tokens": 200, "files": {"a.md": {"size": "x"}}}
        index.write_text(json.dumps(shape))
    rebuilt = collect([docs], cache)
    assert rebuilt.read == 3 and len(rebuilt.passages) == len(collect([docs], None).passages)
    assert json.loads(index.read_text())["version"] == INDEX_VERSION


def test_an_unreadable_file_in_a_folder_is_skipped_with_a_note(docs: Path) -> None:
    (docs / "notes.txt").write_bytes(b"caf\xe9 au lait")
    collection = collect([docs], None)
    assert collection.files == 3
    assert collection.notes == [
        f"Skipped '{(docs / 'notes.txt').as_posix()}': it is not UTF-8 text (invalid byte at position 3)."
    ]


# ---------------------------------------------------------------- retrieval and the answer


def ask_on(engine: FakeEngine, question: str, paths: Sequence[Path], **settings) -> tuple[str, Ask]:
    job = Ask(load_template("ask"), collect(paths, None), question, **settings)
    text = text_of(job.events(Meter(engine), job.params()))
    return text, job


def test_search_fuses_the_question_and_its_translation() -> None:
    passages = [
        Passage("a.md", "年假", "员工每年享有 15 天年假。"),
        Passage("b.md", "Parking", "There are 12 parking spaces."),
    ]
    base = KnowledgeBase(passages)
    count = lambda text: len(text) // 4  # noqa: E731
    assert base.search("How many days of annual leave?", 500, count) == []
    found = base.search_each(["How many days of annual leave?", "每年有多少天年假？"], 500, count)
    assert found == [passages[0]]


def translating(messages: Sequence[Message]) -> str:
    """The fake model: translates a question, answers one about the warranty."""
    if messages[-1].content.startswith("Translate this"):
        return "How long is the warranty of the Zephyr?"
    return "The Zephyr has a warranty of 2 years."


def test_a_question_in_another_language_is_searched_in_translation_too(docs: Path) -> None:
    engine = FakeEngine(reply=translating)
    text, job = ask_on(engine, "水壶保修多久？", [docs / "guides"])
    assert engine.calls[0][-1].content.startswith("Translate this text into English:")
    assert job.answered and [c.heading for c in job.citations] == ["Warranty"]
    tiny = FakeEngine(reply=translating)
    text, job = ask_on(tiny, "水壶保修多久？", [docs / "guides"], tiny_model=True)
    assert text == "这些文档没有回答这个问题。" and tiny.calls == []  # a tiny model cannot bridge languages


def test_an_answer_cites_the_passages_it_draws_on(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "The Zephyr boils one litre in 4 minutes.")
    text, job = ask_on(engine, "How fast does the Zephyr boil water?", [docs])
    answer, sources = text.split("\n\n", 1)
    assert answer == "The Zephyr boils one litre in 4 minutes."
    kettle = (docs / "guides" / "kettle.md").as_posix()
    assert sources == f"[1] {kettle} › Boiling (lines 7-8)\n"
    assert job.json_fields() == {
        "text": "The Zephyr boils one litre in 4 minutes.",  # --json's text: the answer, the sources as data
        "citations": [{"path": kettle, "heading": "Boiling", "lines": [7, 8]}],
        "answered": True,
    }
    prompt = engine.calls[-1][-1].content
    assert prompt.startswith("Question: How fast") and f"--- {kettle} › Boiling" in prompt


def test_one_blank_line_before_the_sources_when_the_answer_ends_its_line(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "The Zephyr boils one litre in 4 minutes.\n")
    text, _ = ask_on(engine, "How fast does the Zephyr boil water?", [docs])
    assert "minutes.\n\n[1] " in text


def test_cited_falls_back_to_every_passage_when_none_can_be_told() -> None:
    given = [Passage("a.md", "Boiling", "Boils in 4 minutes.", (3, 4)), Passage("b.md", "", "Other.", (1, 1))]
    assert [c.path for c in cited(given, "四分钟。", "多快？")] == ["a.md", "b.md"]
    assert [c.path for c in cited(given, "It boils in 4 minutes.", "How fast?")] == ["a.md"]


def test_nothing_found_is_not_answered_without_asking_the_model(docs: Path) -> None:
    engine = FakeEngine()
    text, job = ask_on(engine, "Quelle est la capitale du Pérou ?", [docs / "guides"])
    assert text == "These documents do not answer this question."
    assert job.json_fields() == {"text": text, "citations": [], "answered": False}
    assert engine.calls == []


def test_an_answer_that_draws_on_nothing_becomes_not_in_these_documents(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "Yes, it does.")
    text, job = ask_on(engine, "Does the Zephyr kettle have a warranty?", [docs])
    assert text == "These documents do not answer this question."
    assert not job.answered and job.citations == []


def test_a_question_asked_back_is_no_answer(docs: Path) -> None:
    """A support persona may ask the customer something back; an answer from
    documents may not: SmolLM2-135M's echo of the question ("Question: How
    often…?") passed as a question of its own and was cited as answered."""
    engine = FakeEngine(reply=lambda messages: "Question: How long is the warranty of the Zephyr?")
    text, job = ask_on(engine, "How long is the warranty of the Zephyr?", [docs])
    assert text == "These documents do not answer this question."
    assert not job.answered and job.citations == []


def test_a_reply_that_says_the_documents_do_not_answer_is_not_answered(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "The documents do not mention the kettle's price, only its descaling.")
    text, job = ask_on(engine, "What does the Zephyr kettle cost?", [docs])
    assert not job.answered and "\n[1]" not in text


def test_a_chinese_question_is_told_so_in_chinese(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "我不知道。")
    text, job = ask_on(engine, "周会的主持人是谁？", [docs])
    assert text == "这些文档没有回答这个问题。"
    assert "in Chinese" in engine.calls[-1][0].content


def test_an_answer_states_no_number_its_passages_lack(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "The Zephyr boils water in 4 minutes. It uses 2200 watts.")
    text, _ = ask_on(engine, "How fast does the Zephyr boil water?", [docs])
    assert "4 minutes" in text and "2200" not in text


def test_allow_general_answers_without_the_checks(docs: Path) -> None:
    engine = FakeEngine(reply=lambda messages: "These documents do not answer this question. Lima is the capital.")
    text, job = ask_on(engine, "What is the capital of Peru, and the warranty?", [docs], allow_general=True)
    assert "Lima is the capital." in text and not job.answered
    assert "answer from general knowledge" in engine.calls[-1][0].content


def test_the_coverage_judge_declines_before_the_answer(docs: Path, tmp_path: Path) -> None:
    class Judging(FakeEngine):
        identity = "fake-weights"

        def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]:
            super().score(messages, continuations)
            asked = messages[-1].content
            # Questions about a section (the calibration's covered probes) are covered; any other is not.
            covered = "Question: What can you tell me about" in asked
            return [0.0, 0.0, -4.0, -4.0] if covered else [-4.0, -4.0, 0.0, 0.0]

    engine = Judging(reply=lambda messages: "It costs 4 minutes.", context_size=8192)
    job = Ask(load_template("ask"), collect([docs], None), "What does the Zephyr cost?", judge_cache=tmp_path)
    meter = Meter(engine)
    assert text_of(job.events(meter, job.params())) == "These documents do not answer this question."
    assert "the model's own judgement" in (meter.finish_note() or "")
    assert not any("Answer:" in call[-1].content and "Reply yes or no" not in call[-1].content for call in engine.calls)


# ---------------------------------------------------------------- the command


def test_ask_json_adds_citations_and_answered(fake_engine, docs: Path) -> None:
    fake_engine.reply = lambda messages: "Descale it every month with white vinegar."
    result = invoke("ask", "How often should I descale the kettle?", str(docs), "--json")
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["text"] == "Descale it every month with white vinegar."
    assert payload["template"] == "ask" and payload["answered"] is True
    assert payload["citations"] == [
        {"path": (docs / "guides" / "kettle.md").as_posix(), "heading": "Descaling", "lines": [12, 13]}
    ]


def test_ask_reads_stdin_and_keeps_the_index_in_the_cache_folder(fake_engine, docs: Path) -> None:
    fake_engine.reply = lambda messages: "The meeting is at 9:30."
    result = invoke("ask", "When is the weekly meeting?", input="# Team\n\nThe weekly meeting is at 9:30 on Mondays.\n")
    assert result.stdout == "The meeting is at 9:30.\n\n[1] stdin › Team (line 3)\n"
    invoke("ask", "When is the weekly meeting?", str(docs))
    assert len(list((ask_cache_dir() / "index").iterdir())) == 1


def test_ask_dry_run_shows_the_passages(docs: Path) -> None:
    payload = json.loads(invoke("ask", "How do I clean the toaster?", str(docs), "--dry-run").stdout)
    assert "--- " + (docs / "guides" / "toaster.rst").as_posix() + " › Cleaning" in payload["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["How?", "missing"], None, "Error: 'missing' does not exist"),
        (["  ", "."], None, 'Error: the question is empty: chatllm ask "QUESTION" [PATH...]'),
        (["How?", "EMPTY"], None, "Error: 'EMPTY' has no documents (.txt, .md, .markdown, .rst, .html, .htm, .pdf)"),
        (
            ["How?", "BINARY"],
            None,
            "Error: 'BINARY' has no text to answer from; skipped 'BINARY/a.txt': it looks like a binary file, not text "
            "(it holds a NUL byte)",
        ),
        (["How?", "latin1.txt"], None, "Error: 'latin1.txt' is not UTF-8 text (invalid byte at position 3)"),
        (["How?"], "", "Error: the documents on standard input are empty"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], stdin: str | None, message: str) -> None:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BINARY").mkdir()
    (tmp_path / "BINARY" / "a.txt").write_bytes(b"\x00\x01\x02")
    (tmp_path / "BINARY" / "b.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    result = run_chatllm("ask", *args, input=stdin, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.decode().splitlines() == [message]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("damage", ["corrupt", "old version"])
def test_the_command_rebuilds_a_corrupt_or_old_index_without_a_word(docs: Path, damage: str) -> None:
    def dry_run() -> dict:
        result = run_chatllm("ask", "How do I clean the toaster?", str(docs), "--dry-run")
        assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
        return json.loads(result.stdout)

    planned = dry_run()
    (index,) = (ask_cache_dir() / "index").iterdir()
    if damage == "corrupt":
        index.write_bytes(b"\x00{not json")
    else:
        index.write_text(index.read_text().replace(f'"version": {INDEX_VERSION}', '"version": 0'))
    before = sorted((p, p.stat().st_mtime_ns) for p in docs.rglob("*"))
    assert dry_run() == planned
    assert json.loads(index.read_text())["version"] == INDEX_VERSION
    assert sorted((p, p.stat().st_mtime_ns) for p in docs.rglob("*")) == before  # nothing of theirs touched


def test_indexing_a_large_folder_shows_progress_on_stderr(fake_engine, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    count = doc_index.PROGRESS_FROM_FILES + 5
    for number in range(count):
        (folder / f"note{number:02}.md").write_text(f"# Note {number}\n\nRoom {number} is on floor {number % 4}.\n")
    fake_engine.reply = lambda messages: "Room 7 is on floor 3."
    first = invoke("ask", "Which floor is room 7 on?", str(folder))
    assert first.stderr.splitlines()[:1] == [f"Indexing the documents: {count} files. Ctrl-C stops."]
    assert f"Indexing the documents: file {count} of {count} done." in first.stderr
    assert first.stdout.startswith("Room 7 is on floor 3.")
    again = invoke("ask", "Which floor is room 7 on?", str(folder))
    assert "Indexing" not in again.stderr  # indexed once: nothing to read again


def test_index_folder_is_private(fake_engine, docs: Path) -> None:
    invoke("ask", "How do I clean the toaster?", str(docs))
    folder = ask_cache_dir() / "index"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert doc_index.PROGRESS_FROM_FILES > 3 and os.access(folder, os.W_OK)


def test_ask_on_a_remote_model_translates_and_answers_without_a_judge(served, docs: Path) -> None:
    served.engine.reply = translating
    result = run_chatllm("ask", "水壶保修多久？", str(docs / "guides"), "--json", "-m", f"openai:fake@{served.url}")
    assert result.returncode == 0, result.stderr.decode()
    payload = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert payload["text"] == "The Zephyr has a warranty of 2 years." and payload["answered"] is True
    assert [c["heading"] for c in payload["citations"]] == ["Warranty"]
    assert served.engine.calls[0][-1].content.startswith("Translate this text into English:")
    assert len(served.engine.calls) == 2  # the translation and the answer: a server has no scores to judge by
