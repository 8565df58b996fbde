"""`chatllm ask` end to end: the real CLI in a subprocess, on the embedded model,
over the small document folder in tests/data/ask."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest

from tests.support.cli import chatllm_command, run_chatllm
from tests.support.openai_servers import free_port, start_process, stop_process

pytestmark = pytest.mark.slow

DOCS = Path(__file__).parent / "data" / "ask"


def answer(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def test_an_answerable_question_is_answered_with_its_source(embedded_model: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    result = run_chatllm("ask", "How long is the warranty of the Zephyr?", "docs", cwd=tmp_path)
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "2 years" in text
    assert text.rstrip().endswith("[1] docs/guides/kettle.md › Warranty (line 17)")
    payload = answer(run_chatllm("ask", "How long is the warranty of the Zephyr?", "docs", "--json", cwd=tmp_path))
    assert payload["answered"] is True and "[1]" not in payload["text"]
    assert {"path": "docs/guides/kettle.md", "heading": "Warranty", "lines": [17, 17]} in payload["citations"]


def test_an_unanswerable_question_says_so_and_cites_nothing(embedded_model: Path) -> None:
    payload = answer(run_chatllm("ask", "Quelle est la capitale du Pérou ?", str(DOCS), "--json"))
    assert payload["text"] == "These documents do not answer this question."
    assert payload["answered"] is False and payload["citations"] == []
    chinese = answer(run_chatllm("ask", "秘鲁的首都是哪里？", str(DOCS / "guides"), "--json"))
    assert chinese["text"] == "这些文档没有回答这个问题。" and chinese["answered"] is False


def test_documents_on_stdin(embedded_model: Path) -> None:
    notes = "# Release\n\nVersion 4.2 ships on Friday.\n"
    result = run_chatllm("ask", "When does version 4.2 ship?", "--json", input=notes)
    payload = answer(result)
    assert payload["citations"] in ([], [{"path": "stdin", "heading": "Release", "lines": [3, 3]}])
    assert payload["usage"]["prompt_tokens"] > 0


def test_a_changed_document_is_read_again_and_a_broken_index_rebuilt(embedded_model: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    question = "How long is the warranty of the Zephyr?"
    answer(run_chatllm("ask", question, str(docs), "--json"))
    kettle = docs / "guides" / "kettle.md"
    kettle.write_text(kettle.read_text().replace("2 years", "5 years"))
    payload = answer(run_chatllm("ask", question, str(docs), "--json"))
    assert "2 years" not in payload["text"]
    home = Path(__import__("os").environ["XDG_CACHE_HOME"]) / "chatllm" / "ask" / "index"
    for index in home.iterdir():
        index.write_text("{not json")
    again = answer(run_chatllm("ask", question, str(docs), "--json"))
    assert again["text"] == payload["text"]
    assert json.loads(next(home.iterdir()).read_text())["version"] >= 1


def test_serve_docs_answers_model_ask_with_citations(embedded_model: Path, tmp_path: Path) -> None:
    port = free_port()
    command = chatllm_command("serve", "--port", str(port), "-m", "embedded", "--docs", str(DOCS))
    server = start_process(command, port, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=240)
        question = [{"role": "user", "content": "How long is the warranty of the Zephyr?"}]
        reply = client.chat.completions.create(model="ask", messages=question)
        assert "2 years" in (reply.choices[0].message.content or "")
        extra = reply.model_extra or {}
        assert extra["answered"] is True
        warranty = {"path": (DOCS / "guides" / "kettle.md").as_posix(), "heading": "Warranty", "lines": [17, 17]}
        assert warranty in extra["citations"]
    finally:
        stop_process(server)
