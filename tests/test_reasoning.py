"""Reasoning models: thinking kept apart from the answer on every backend.

The splitter on streams cut at every position; the jobs and the CLI on the
fake engine; the remote backend against a scripted stand-in and against real
servers (`chatllm serve`, which sends `reasoning_content` apart, and
llama-cpp-python's server, whose reply carries inline tags); and the llama
engine end to end on a GGUF made in the test from the embedded model, with a
chat template that opens `<think>` (rewritten with the `gguf` package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatllm.engine.base import EngineOptions, GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.engine.openai import OpenAIEngine
from chatllm.engine.reasoning import ThinkSplitter, may_think, split_reasoning
from chatllm.hub.models import resolve_model
from chatllm.jobs.chat import ChatSession, Persona
from chatllm.reply.events import Reasoning, text_of
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import call
from tests.support.cli import chatllm_command, cli_env, run_chatllm
from tests.support.events import thinking_of
from tests.support.gguf_files import with_chat_template, without_chat_template
from tests.support.openai_servers import ScriptedServer, chunk, free_port, start_process, stop_process, streaming

THINKING_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


def split(text: str, thinking: bool | None, cuts: list[int]) -> tuple[str, str]:
    """`text` fed in the pieces `cuts` makes: (thinking, answer)."""
    bounds = [0, *cuts, len(text)]
    pieces = (text[a:b] for a, b in zip(bounds, bounds[1:]))
    out = list(split_reasoning(pieces, thinking))
    return "".join(p.text for p in out if isinstance(p, Reasoning)), "".join(p for p in out if isinstance(p, str))


@pytest.mark.parametrize(
    "text, thinking, expected",
    [
        ("<think>Add 2 and 2.</think>\n\nThe answer is 4.", False, ("Add 2 and 2.", "The answer is 4.")),
        ("Add 2 and 2.</think>\n\nFour.", True, ("Add 2 and 2.", "Four.")),
        ("Add 2 and 2.</think>\n\nFour.", None, ("Add 2 and 2.", "Four.")),
        ("<think>Add.</think>Four.", None, ("Add.", "Four.")),
        ("No thinking here, a < b and </ is not a tag.", False, ("", "No thinking here, a < b and </ is not a tag.")),
        ("No thinking here either.", None, ("", "No thinking here either.")),
        ("<think>never closed", False, ("never closed", "")),
    ],
)
def test_the_splitter_on_streams_cut_at_every_position(
    text: str, thinking: bool | None, expected: tuple[str, str]
) -> None:
    for cut in range(1, len(text)):
        assert split(text, thinking, [cut]) == expected, cut
        assert split(text, thinking, list(range(1, len(text)))) == expected  # one character at a time


def test_unclosed_thinking_is_flagged() -> None:
    splitter = ThinkSplitter(True)
    splitter.feed("still thinking")
    splitter.finish()
    assert splitter.unclosed


def test_names_of_remote_reasoning_models() -> None:
    assert may_think("qwen3:8b") and may_think("DeepSeek-R1-Distill-Qwen-7B") and may_think("qwq-32b")
    assert not may_think("llama3.2") and not may_think("gpt-4o-mini")


# ---------------------------------------------------------------- jobs on the fake engine


def test_a_summary_and_a_chat_reply_never_contain_thinking() -> None:
    engine = FakeEngine(reply=lambda messages: "<think>Let me count the words first.</think> A short summary.")
    meter = Meter(engine)
    assert text_of(call(meter, [Message("user", "text")], GenerationParams())) == "A short summary."
    assert meter.reasoning == "Let me count the words first."
    session = ChatSession(engine, Persona("chat", ""), GenerationParams())
    events = list(session.send("hi"))
    assert text_of(events) == "A short summary."
    assert session.turns[-1].reasoning == "Let me count the words first." == thinking_of(events)
    assert session.messages()[-1].content == "A short summary."  # the thinking is never sent back to the model
    assert "count the words" not in session.to_markdown()


def test_thinking_that_never_closes_is_the_reply_with_a_note() -> None:
    meter = Meter(FakeEngine(reply=lambda messages: "<think>Hmm, let me see"))
    assert text_of(call(meter, [Message("user", "x")], GenerationParams())) == "Hmm, let me see"
    assert "never finished thinking" in meter.finish_note()


def test_json_and_stats_carry_the_thinking_apart(fake_engine) -> None:
    from typer.testing import CliRunner

    from chatllm.cli.app import app

    fake_engine.reply = lambda messages: "<think>Think it over.</think>Done."
    result = CliRunner().invoke(app, ["run", "explain", "--json", "--stats"], input="code")
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["text"] == "Done." and payload["reasoning"] == "Think it over."
    assert payload["usage"]["completion_tokens"] > 0
    result = CliRunner().invoke(app, ["run", "explain", "--show-reasoning"], input="code")
    assert result.stdout.strip() == "Done." and "Think it over." in result.stderr


# ---------------------------------------------------------------- remote, scripted


def thought(text: str) -> str:
    """A chunk whose delta carries thinking apart, as llama-server and vLLM send it."""
    event = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"reasoning_content": text}}]}
    return f"data: {json.dumps(event)}\n"


def test_the_remote_backend_takes_reasoning_content_apart_and_sends_the_switch() -> None:
    with ScriptedServer() as server:
        server.route(
            "POST",
            "/v1/chat/completions",
            streaming(
                thought("Weigh "),
                "",
                thought("it."),
                "",
                chunk("Yes."),
                "",
                chunk(finish="stop"),
                "",
                "data: [DONE]",
                "",
            ),
        )
        engine = OpenAIEngine(resolve_model(f"openai:stub@{server.url}"), EngineOptions())
        meter = Meter(engine)
        assert text_of(call(meter, [Message("user", "?")], GenerationParams(think=False))) == "Yes."
        assert meter.reasoning == "Weigh it." and meter.stats().usage.reasoning_tokens == 2
        assert server.requests_to("/v1/chat/completions")[-1].body["chat_template_kwargs"] == {"enable_thinking": False}
        engine.close()


# ---------------------------------------------------------------- the embedded model with a thinking template


@pytest.fixture(scope="module")
def thinking_gguf(embedded_model: Path, tmp_path_factory) -> Path:
    """The embedded model with a chat template that opens <think> (Qwen3's switch)."""
    return with_chat_template(
        embedded_model, tmp_path_factory.mktemp("thinking") / "SmolLM2-think.gguf", THINKING_TEMPLATE
    )


@pytest.mark.slow
def test_the_llama_engine_ends_thinking_at_the_budget(thinking_gguf: Path) -> None:
    result = run_chatllm(
        "chat",
        "-m",
        str(thinking_gguf),
        "--reasoning-budget",
        "6",
        "--max-tokens",
        "40",
        "--temperature",
        "0",
        "--json",
        input="What is 2 + 2?\n",
    )
    assert result.returncode == 0, result.stderr.decode()
    payload = json.loads(result.stdout.decode().strip())
    assert payload["reasoning"].strip() and "<think>" not in payload["text"] and "</think>" not in payload["text"]
    assert payload["usage"]["reasoning_tokens"] == 6


@pytest.mark.slow
def test_no_think_closes_the_thinking_in_the_prompt(thinking_gguf: Path) -> None:
    result = run_chatllm(
        "chat",
        "-m",
        str(thinking_gguf),
        "--no-think",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--json",
        input="Say hello.\n",
    )
    payload = json.loads(result.stdout.decode().strip())
    assert "reasoning" not in payload and payload["text"].strip()


@pytest.mark.slow
def test_a_model_without_a_switch_gets_a_note(embedded_model: Path) -> None:
    result = run_chatllm("chat", "--think", "--max-tokens", "4", input="hi\n")
    assert result.returncode == 0 and "has no thinking switch" in result.stderr.decode()


@pytest.mark.slow
def test_serve_sends_thinking_as_reasoning_content_and_the_remote_backend_reads_it(
    thinking_gguf: Path, tmp_path: Path
) -> None:
    import openai

    port = free_port()
    server = start_process(
        chatllm_command(
            "serve", "--port", str(port), "-m", str(thinking_gguf), "--reasoning-budget", "5", "--temperature", "0"
        ),
        port,
        tmp_path / "serve.log",
        env=cli_env(),
    )
    try:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=240)
        reply = client.chat.completions.create(
            model="chat", max_tokens=30, messages=[{"role": "user", "content": "2+2?"}]
        )
        message = reply.choices[0].message
        assert getattr(message, "reasoning_content", None) and "<think>" not in (message.content or "")
        streamed = client.chat.completions.create(
            model="chat", max_tokens=30, stream=True, messages=[{"role": "user", "content": "2+2?"}]
        )
        fields = {key for event in streamed for key, value in event.choices[0].delta.model_dump().items() if value}
        assert "reasoning_content" in fields
        result = run_chatllm("chat", "-m", f"openai:chat@{server.url}", "--json", "--max-tokens", "30", input="2+2?\n")
        payload = json.loads(result.stdout.decode().strip())
        assert payload["reasoning"] and "</think>" not in payload["text"]
    finally:
        stop_process(server)


@pytest.mark.slow
def test_inline_thinking_from_llama_cpp_pythons_server(llama_server) -> None:
    """The reply's own tags (the server's grammar makes the model write them)."""
    engine = OpenAIEngine(resolve_model(f"openai:smollm@{llama_server.url}"), EngineOptions(n_ctx=2048))
    grammar = 'root ::= "<think>" [a-z ]{3,20} "</think>" [A-Za-z ]{3,20}'
    meter = Meter(engine)
    answer = text_of(
        call(meter, [Message("user", "Say hi.")], GenerationParams(temperature=0.7, max_tokens=48, grammar=grammar))
    )
    assert meter.reasoning.strip() and "<think>" not in answer and "</think>" not in answer
    engine.close()


# ---------------------------------------------------------------- a model without a chat template (issue 15)


@pytest.fixture(scope="module")
def base_gguf(embedded_model: Path, tmp_path_factory) -> Path:
    """The embedded model without its chat template, as a base model comes."""
    return without_chat_template(embedded_model, tmp_path_factory.mktemp("base") / "SmolLM2-base.gguf")


@pytest.mark.slow
def test_a_model_without_a_chat_template_is_named_and_chat_template_chooses(base_gguf: Path, tmp_path: Path) -> None:
    result = run_chatllm("chat", "-m", str(base_gguf), "--max-tokens", "4", input="hi\n")
    assert result.returncode == 0 and "has no chat template" in result.stderr.decode()
    assert result.stderr.decode().count("has no chat template") == 1
    result = run_chatllm("chat", "-m", str(base_gguf), "--chat-template", "plain", "--max-tokens", "4", input="hi\n")
    assert result.returncode == 0 and "has no chat template" not in result.stderr.decode()
    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}Answer:")
    result = run_chatllm(
        "chat", "-m", str(base_gguf), "--chat-template", str(template), "--max-tokens", "4", input="hi\n"
    )
    assert result.returncode == 0, result.stderr.decode()


def test_chat_template_must_be_a_name_or_a_file() -> None:
    result = run_chatllm("chat", "--chat-template", "nosuch", "--dry-run", input="hi\n")
    assert result.returncode == 2 and "neither a file nor a built-in template" in result.stderr.decode()
