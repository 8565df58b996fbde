"""Every job through the deterministic fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.errors import EngineError
from chatllm.jobs.chat import ChatSession, Persona
from chatllm.jobs.chunking import split_to_budget
from chatllm.jobs.knowledge import KnowledgeBase, search_terms, split_passages
from chatllm.jobs.pacing import REFERENCE_BYTES, REFERENCE_PREFILL_PER_S, Progress
from chatllm.jobs.persona import build_persona, choose_knowledge
from chatllm.jobs.summarize import summarize
from chatllm.jobs.translate import split_blocks, translate
from chatllm.reply.events import Finish, Text, text_of
from chatllm.reply.meter import Meter
from chatllm.templates import load_template
from tests.support.events import reply_and_notes

PARAMS = GenerationParams(temperature=0, max_tokens=64)


def count(text: str) -> int:
    return (len(text) + 3) // 4


def the_text(messages) -> str:
    """The text a translation prompt carries (after its one-line instruction)."""
    return messages[-1].content.split("\n\n", 1)[1]


def long_text(paragraphs: int = 60) -> str:
    return "\n\n".join(
        f"Paragraph {n} talks about topic {n}. " + "It has several sentences of detail. " * 8 for n in range(paragraphs)
    )


# ---------------------------------------------------------------- chunking


def test_chunks_fit_the_budget_and_lose_nothing() -> None:
    text = long_text(30) + "\n\n" + "一句很长的中文句子。" * 200 + "\n\n" + "x" * 3000
    chunks = split_to_budget(text, 300, count)
    assert all(count(chunk) <= 300 for chunk in chunks)
    assert "".join("".join(c.split()) for c in chunks) == "".join(text.split())


def test_chunks_break_at_paragraphs_when_they_can() -> None:
    text = "First paragraph.\n\nSecond paragraph.\n\nThird paragraph."
    assert split_to_budget(text, 6, count) == ["First paragraph.", "Second paragraph.", "Third paragraph."]


@pytest.mark.parametrize(
    "text",
    [
        long_text(400),  # paragraphs that fit
        "\n\n".join(["A sentence of some length here. " * 60] * 40),  # paragraphs cut at sentences
        "word " * 20_000,  # one paragraph, one sentence: cut at words
        "x" * 60_000,  # no spaces at all: cut at characters
    ],
    ids=["paragraphs", "sentences", "words", "characters"],
)
def test_splitting_counts_each_character_a_few_times_not_once_per_candidate(text: str) -> None:
    """Near-linear: 20 MB split in seconds, not 25 s (each chunk was counted
    again as every piece joined it; a cut at characters, a binary search over
    all of the text left)."""
    counted = 0

    def counting(piece: str) -> int:
        nonlocal counted
        counted += len(piece)
        return count(piece)

    chunks = split_to_budget(text, 300, counting)
    assert all(count(chunk) <= 300 for chunk in chunks)
    assert counted <= 3 * len(text)


# ---------------------------------------------------------------- summarize


def test_short_input_is_summarized_in_one_call() -> None:
    engine = FakeEngine(context_size=2048, reply=lambda messages: "It is about cats.")
    template = load_template("summarize")
    values = template.resolve_variables({})
    source = "A short text about cats, which sleep all day and play all night, as cats in this house do."
    text = text_of(summarize(Meter(engine), template, values, source, PARAMS))
    assert len(engine.calls) == 1
    assert "cats" in engine.calls[0][-1].content
    assert text == "It is about cats."


def test_long_input_is_mapped_then_reduced_with_progress() -> None:
    engine = FakeEngine(context_size=1024)
    template = load_template("summarize")
    values = template.resolve_variables({})
    progress: list[tuple[int, int]] = []
    text = long_text(60)
    output = text_of(
        summarize(
            Meter(engine), template, values, text, PARAMS, on_progress=lambda p: progress.append((p.done, p.total))
        )
    )
    parts = progress[-1][1]
    assert parts > 2 and progress[-1] == (parts, parts)
    assert len(engine.calls) == parts + 1  # map steps, then one reduce
    # Every paragraph reached the model in some map step: nothing was truncated.
    sent = "\n".join(call[-1].content for call in engine.calls[:-1])
    for n in range(60):
        assert f"Paragraph {n} talks" in sent
    assert all(engine.count_prompt_tokens(call) < engine.context_size for call in engine.calls)
    assert output


def test_a_long_summary_says_its_parts_and_a_time_before_the_first_part() -> None:
    engine = FakeEngine(context_size=1024)
    engine.model_bytes = 10 * REFERENCE_BYTES  # type: ignore[attr-defined]  # a model ten times the embedded one
    template = load_template("summarize")
    seen: list[Progress] = []
    text_of(
        summarize(
            Meter(engine), template, template.resolve_variables({}), long_text(60), PARAMS, on_progress=seen.append
        )
    )
    first = seen[0]
    assert first.done == 0 and first.total > 2 and len(engine.calls) > first.total
    # Guessed from the model's size: ten times slower than the embedded model's figures.
    calls = first.total + 1  # the map steps and the final summary (the parts' summaries fit together)
    assert first.seconds_left and first.seconds_left > first.tokens / (REFERENCE_PREFILL_PER_S / 10)
    assert first.seconds_left < (first.tokens + 200 * calls) / (REFERENCE_PREFILL_PER_S / 10) + 64 * calls / 15
    line = first.announcement()
    assert line.startswith(f"Summarizing: {first.tokens:,} tokens in {first.total} parts; about ")
    assert "first guess from the model's size" in line


def test_meter_adds_up_usage_over_map_steps() -> None:
    engine = FakeEngine(context_size=1024)
    template = load_template("summarize")
    meter = Meter(engine)
    text_of(summarize(meter, template, template.resolve_variables({}), long_text(40), PARAMS))
    stats = meter.stats()
    assert meter.calls == len(engine.calls)
    assert stats.usage.prompt_tokens == sum(engine.count_prompt_tokens(c) for c in engine.calls)


# ---------------------------------------------------------------- translate


MARKDOWN = "# Title\n\nFirst paragraph.\n\n```python\nprint('keep me')\n```\n\n- item one\n- item two\n"


def test_code_blocks_are_kept_and_never_sent() -> None:
    engine = FakeEngine(reply=lambda messages: the_text(messages).upper())
    template = load_template("translate")
    # Into the text's own language: the fake's copy of the source passes the check for a copy.
    values = template.resolve_variables({"to": "English"})
    output = text_of(translate(Meter(engine), template, values, MARKDOWN, PARAMS))
    assert "```python\nprint('keep me')\n```" in output
    assert all("keep me" not in call[-1].content for call in engine.calls)
    assert output.startswith("# TITLE")
    assert "- ITEM ONE\n- ITEM TWO" in output
    # Structure: the same lines in the same places.
    assert output.count("\n") == MARKDOWN.count("\n")


def test_blocks_cover_the_whole_text() -> None:
    assert "\n".join(b.text for b in split_blocks(MARKDOWN)) == MARKDOWN


def test_long_translation_goes_chunk_by_chunk() -> None:
    engine = FakeEngine(context_size=1024, reply=the_text)
    template = load_template("translate")
    values = template.resolve_variables({"to": "English"})  # the fake copies: a copy in the asked language
    text = long_text(40)
    output = text_of(translate(Meter(engine), template, values, text, GenerationParams(temperature=0)))
    assert len(engine.calls) > 2
    assert "".join(output.split()) == "".join(text.split())


# ---------------------------------------------------------------- chat


def test_chat_keeps_history_and_reuses_the_prefix() -> None:
    engine = FakeEngine()
    session = ChatSession(engine, Persona("chat", "Be brief."), PARAMS)
    assert text_of(session.send("hello there")) == "Echo: hello there"
    finish = list(session.send("and again"))[-1]
    roles = [m.role for m in engine.calls[-1]]
    assert roles == ["system", "user", "assistant", "user"]
    assert isinstance(finish, Finish) and finish.stats.usage.cached_prompt_tokens > 0


def test_oldest_turns_are_dropped_when_the_context_fills() -> None:
    engine = FakeEngine(context_size=256)
    notices: list[str] = []
    session = ChatSession(engine, Persona("chat", "SYSTEM PROMPT"), GenerationParams(max_tokens=32))
    for n in range(12):
        notices += reply_and_notes(session.send(f"message number {n} " + "padding words " * 6))[1:]
    assert notices and "dropped the oldest" in [notice for notice in notices if notice][0]
    last_prompt = engine.calls[-1]
    assert last_prompt[0] == Message("system", "SYSTEM PROMPT")
    assert "message number 11" in last_prompt[-1].content
    assert "message number 0 " not in " ".join(m.content for m in last_prompt)
    assert len(session.turns) == 12  # the transcript keeps everything


def test_a_message_too_long_for_the_context_is_an_error_and_not_kept() -> None:
    session = ChatSession(FakeEngine(context_size=128), Persona("chat", "sys"), PARAMS)
    with pytest.raises(EngineError, match="does not fit"):
        text_of(session.send("word " * 400))
    assert session.turns == []


def test_interrupted_reply_stays_marked_in_the_conversation(tmp_path: Path) -> None:
    engine = FakeEngine(reply=lambda m: "one two three four five six")
    session = ChatSession(engine, Persona("chat", ""), PARAMS)
    stream = session.send("count")
    assert next(stream) == Text("one")
    stream.close()  # what the REPL does on Ctrl-C
    turn = session.turns[-1]
    assert turn.interrupted and turn.reply == "one"
    session.save(tmp_path / "t.md")
    assert "one [interrupted]" in (tmp_path / "t.md").read_text()
    assert text_of(session.retry()) == "one two three four five six"
    assert not session.turns[-1].interrupted


def test_reset_and_system() -> None:
    engine = FakeEngine()
    session = ChatSession(engine, Persona("chat", "old"), PARAMS)
    text_of(session.send("hi"))
    session.reset()
    session.set_system("new")
    text_of(session.send("hi again"))
    assert engine.calls[-1][0].content == "new"
    assert len(engine.calls[-1]) == 2


# ---------------------------------------------------------------- support


def test_search_terms_split_chinese_into_bigrams() -> None:
    assert search_terms("退货 refund") == ["退货", "refund"]
    assert "退货" in search_terms("我想退货怎么办")


def test_knowledge_search_finds_the_right_passage_in_english_and_chinese() -> None:
    template = load_template("support")
    kb = KnowledgeBase.from_files(template.knowledge, count)
    english = kb.search("How long do refunds take?", 400, count)
    assert english and english[0].heading == "Returns and refunds"
    chinese = kb.search("配送需要几天？", 400, count)
    assert chinese and chinese[0].heading == "配送"
    assert kb.search("", 400, count) == []


def small_faq(tmp_path: Path) -> Path:
    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days of delivery.\n")
    return faq


def test_small_knowledge_goes_whole_into_the_system_prompt(tmp_path: Path) -> None:
    template = load_template("support")
    knowledge = choose_knowledge(template, [small_faq(tmp_path)])
    persona = build_persona(template, template.resolve_variables({}), FakeEngine(context_size=8192), knowledge)
    assert "KNOWLEDGE:" in persona.system and "within 45 days" in persona.system
    assert persona.render_user("hello") == "hello"


def test_a_tiny_model_gets_the_knowledge_found_for_each_question_after_a_fixed_system_prompt() -> None:
    template = load_template("support")
    persona = build_persona(template, template.resolve_variables({}), FakeEngine(context_size=8192), tiny_model=True)
    assert "KNOWLEDGE:" not in persona.system  # the system prompt stays one cacheable prefix
    assert "Returns and refunds" in persona.render_user("How long do refunds take?")
    assert "配送" in persona.render_user("配送需要几天？")
    assert "nothing in the knowledge matches" in persona.render_user("zzzz qqqq")


def test_large_knowledge_is_retrieved_per_question(tmp_path: Path) -> None:
    big = tmp_path / "big.md"
    sections = [
        f"## Product {n}\nThe gadget model G{n} weighs {n} kilograms and costs {n * 3} EUR." for n in range(300)
    ]
    sections.append("## Gift cards\nGift cards never expire and can be used online only.")
    big.write_text("\n\n".join(sections))
    template = load_template("support")
    engine = FakeEngine(context_size=2048)
    persona = build_persona(template, template.resolve_variables({}), engine, choose_knowledge(template, [big]))
    assert persona.retrieves
    assert "KNOWLEDGE:" not in persona.system
    message = persona.render_user("Do gift cards expire?")
    assert "Gift cards never expire" in message
    assert engine.count_tokens(message) < 2048 * 0.35
    unknown = persona.render_user("zzzz qqqq")
    assert "nothing in the knowledge matches" in unknown


def test_a_larger_model_reads_the_whole_knowledge_and_modes_override_the_choice() -> None:
    template = load_template("support")
    values = template.resolve_variables({})
    engine = FakeEngine(context_size=8192)
    assert "KNOWLEDGE:" in build_persona(template, values, engine).system
    assert "KNOWLEDGE:" not in build_persona(template, values, engine, mode="search").system
    assert "KNOWLEDGE:" in build_persona(template, values, engine, mode="whole", tiny_model=True).system


def test_split_passages_keeps_headings() -> None:
    passages = split_passages("intro\n\n## A\ntext a\n\n## B\ntext b", "f.md", count)
    assert [(p.heading, p.text) for p in passages] == [("", "intro"), ("A", "text a"), ("B", "text b")]


def test_a_reply_interrupted_before_any_text_is_dropped() -> None:
    engine = FakeEngine()
    session = ChatSession(engine, Persona("chat", ""), PARAMS)
    stream = session.send("hello")
    stream.close()  # Ctrl-C before the first token
    assert session.turns == []


def test_replacing_the_system_prompt_keeps_the_knowledge(tmp_path: Path) -> None:
    template = load_template("support")
    engine = FakeEngine(context_size=8192)
    knowledge = choose_knowledge(template, [small_faq(tmp_path)])
    persona = build_persona(template, template.resolve_variables({}), engine, knowledge, system_override="Be terse.")
    assert persona.system.startswith("Be terse.") and "within 45 days" in persona.system
    session = ChatSession(engine, persona, PARAMS)
    session.set_system("Be formal.")
    assert session.system.startswith("Be formal.") and "within 45 days" in session.system
