"""`ask` as a `serve` model: `chatllm serve --docs PATH` answers model "ask"
from those documents, with the citations beside the answer, as the official
`openai` client reads them. The server core runs in-process over the fake
engine; `chatllm serve` itself runs as a subprocess for its bad inputs."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from chatllm.engine.base import Message
from chatllm.server import http as server
from chatllm.server.service import served_jobs
from tests.support.cli import run_chatllm
from tests.support.openai_servers import free_port
from tests.support.server_fixtures import RecordingEngine

DOCS = Path(__file__).parent / "data" / "ask"
WARRANTY = [{"role": "user", "content": "How long is the warranty of the Zephyr?"}]


def answering(messages: Sequence[Message]) -> str:
    """The fake model: translates a question, answers one about the warranty."""
    if messages[-1].content.startswith("Translate this"):
        return "How long is the warranty of the Zephyr?"
    return "The Zephyr has a warranty of 2 years."


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(DOCS, folder)
    return folder


def serving(options: dict, concurrent: bool = False) -> Iterator[SimpleNamespace]:
    """The server core; `concurrent`: requests answered at once, as under serve --parallel."""
    engine = RecordingEngine(reply=answering)
    http = server.bind("127.0.0.1", 0)
    jobs = served_jobs(options)
    http.service = server.ChatService(engine, "fake.gguf", aliases=("fake",), jobs=jobs, concurrent=concurrent)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    client = openai.OpenAI(base_url=server.base_url(http), api_key="x", max_retries=0)
    yield SimpleNamespace(engine=engine, client=client)
    client.close()
    http.shutdown()
    http.server_close()


@pytest.fixture
def served_docs(docs: Path) -> Iterator[SimpleNamespace]:
    """The server core as `chatllm serve --docs DOCS` makes it."""
    yield from serving({"docs": [docs]})


def test_ask_answers_from_the_served_documents_with_citations(served_docs, docs: Path) -> None:
    assert "ask" in [model.id for model in served_docs.client.models.list()]
    reply = served_docs.client.chat.completions.create(model="ask", messages=WARRANTY)
    assert reply.choices[0].message.content == "The Zephyr has a warranty of 2 years."  # the sources are data here
    extra = reply.model_extra or {}
    kettle = (docs / "guides" / "kettle.md").as_posix()
    assert extra["citations"] == [{"path": kettle, "heading": "Warranty", "lines": [17, 17]}]
    assert extra["answered"] is True
    prompt = served_docs.engine.calls[-1][-1].content
    assert prompt.startswith("Question: How long is the warranty") and f"--- {kettle} › Warranty" in prompt


def test_ask_streams_its_answer_and_sends_the_citations_with_the_finish(served_docs) -> None:
    chunks = list(served_docs.client.chat.completions.create(model="ask", messages=WARRANTY, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The Zephyr has a warranty of 2 years."
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert [c["heading"] for c in (last.model_extra or {})["citations"]] == ["Warranty"]
    assert all("citations" not in (c.model_extra or {}) for c in chunks[:-1])


def test_first_questions_asked_at_once_are_all_answered(docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve --parallel: the documents' search index is built by the first
    question; one asked meanwhile waits for it instead of searching half an
    index (bm25s raised AttributeError, a 500). The build is slowed to make
    the overlap certain."""
    import bm25s

    build = bm25s.BM25.index

    def slow_build(self, *args, **kwargs):
        time.sleep(0.5)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", slow_build)
    for served in serving({"docs": [docs]}, concurrent=True):
        with ThreadPoolExecutor(3) as pool:
            asks = [pool.submit(served.client.chat.completions.create, model="ask", messages=WARRANTY) for _ in "abc"]
            replies = [future.result() for future in asks]
        assert [(r.model_extra or {})["answered"] for r in replies] == [True, True, True]


def test_ask_says_when_the_served_documents_do_not_answer(served_docs) -> None:
    served_docs.engine.reply = lambda messages: (
        "What is the capital of Peru?" if messages[-1].content.startswith("Translate this") else "Lima."
    )
    question = [{"role": "user", "content": "秘鲁的首都是哪里？"}]
    reply = served_docs.client.chat.completions.create(model="ask", messages=question)
    assert reply.choices[0].message.content == "这些文档没有回答这个问题。"
    assert reply.model_extra == {**(reply.model_extra or {}), "citations": [], "answered": False}


def test_ask_is_served_only_with_documents_and_other_models_keep_working() -> None:
    for served in serving({}):
        assert "ask" not in [model.id for model in served.client.models.list()]
        with pytest.raises(openai.BadRequestError, match="served only when chatllm serve is given --docs"):
            served.client.chat.completions.create(model="ask", messages=WARRANTY)
        reply = served.client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "The Zephyr has a warranty of 2 years."
        assert "citations" not in (reply.model_extra or {})  # only a job that adds fields adds them


def test_an_empty_question_or_a_schema_is_the_clients_error(served_docs) -> None:
    with pytest.raises(openai.BadRequestError, match="the question"):
        served_docs.client.chat.completions.create(model="ask", messages=[{"role": "user", "content": "  "}])
    with pytest.raises(openai.BadRequestError, match="takes no response_format"):
        served_docs.client.chat.completions.create(
            model="ask", messages=WARRANTY, response_format={"type": "json_object"}
        )
    assert served_docs.engine.calls == []


@pytest.mark.parametrize(
    ("docs_path", "message"),
    [
        ("missing", "Error: 'missing' does not exist"),
        ("EMPTY", "Error: 'EMPTY' has no documents (.txt, .md, .markdown, .rst, .html, .htm, .pdf)"),
        (
            "BINARY",
            "Error: 'BINARY' has no text to answer from; skipped 'BINARY/a.txt': it looks like a binary file, "
            "not text (it holds a NUL byte)",
        ),
    ],
)
def test_serve_with_bad_documents_stops_with_one_line(tmp_path: Path, docs_path: str, message: str) -> None:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BINARY").mkdir()
    (tmp_path / "BINARY" / "a.txt").write_bytes(b"\x00\x01\x02")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    # -m names a model that does not exist: the documents are checked before any model is looked for.
    port = str(free_port())
    result = run_chatllm("serve", "--port", port, "--docs", docs_path, "-m", "nothing.gguf", cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert result.stderr.decode().splitlines() == [message]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
