"""What keeps a reply bounded, grounded and honest on any model: the repetition
guard, the length bounds, the grounding filter and the knowledge a persona is
given. Unit tests on the fake engine and a scripted OpenAI-compatible server;
the same on the embedded model is in test_e2e.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from chatllm.engine.base import EngineOptions, GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.engine.openai import OpenAIEngine
from chatllm.errors import EngineError, InputError
from chatllm.hub.models import resolve_model
from chatllm.jobs.chat import ChatSession
from chatllm.jobs.grounding import GroundingFilter
from chatllm.jobs.persona import build_persona, choose_knowledge
from chatllm.jobs.repetition import RepetitionGuard, repeats_in
from chatllm.jobs.summarize import summarize, summary_bound, summary_limit
from chatllm.jobs.translate import translate, translation_bound
from chatllm.reply.events import Event, text_of
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import call
from chatllm.reply.stages import Ending, Grounding, through
from chatllm.templates import load_template
from tests.support.cli import run_chatllm
from tests.support.events import reply_and_notes
from tests.support.openai_servers import ScriptedServer, chunk

GUARD_TEXTS = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "quality" / "guard"
PARAMS = GenerationParams(temperature=0)


def guard(text: str, mode: str = "strict", allowed: int = 1, step: int = 3) -> tuple[str, str | None]:
    """`text` streamed through a guard in pieces of `step` characters: what is
    shown, and the rule that stopped it (None: it ran to the end)."""
    check = RepetitionGuard(mode=mode, allowed=allowed)
    shown = []
    for start in range(0, len(text), step):
        shown.append(check.feed(text[start : start + step]))
        if check.tripped:
            break
    shown.append(check.finish())
    return "".join(shown), check.tripped


# ---------------------------------------------------------------- the repetition guard


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50])
@pytest.mark.parametrize(
    "text, kept, rule",
    [
        ("Je suis déjà " + "déjà " * 60, "Je suis déjà", "span"),
        (
            "You can return an item within 45 days of delivery. You can return an item within 2 business days. "
            "You can return an item within 5 business days.",
            "You can return an item within 45 days of delivery.",
            "opening",
        ),
        (
            "1. You can order a bike from Klarna.\n"
            + "".join(f"{n}. You can order a bike from Klarna.\n" for n in range(2, 30)),
            "1. You can order a bike from Klarna.",
            "span",
        ),
        (
            "La question est question de\nLa question est question de\nLa question est question de\n",
            "La question est question de",
            "opening",
        ),
        ("Total: " + "＆" * 40, "Total:", "run"),
        (
            "我们的退货政策是收货后四十五天内可以退货。我们的退货政策是收货后四十五天内可以退货。我们的退货政策是收货后",
            "我们的退货政策是收货后四十五天内可以退货。",
            "opening",
        ),
    ],
)
def test_a_loop_is_stopped_and_its_repeat_not_shown(text: str, kept: str, rule: str, step: int) -> None:
    shown, tripped = guard(text, step=step)
    assert tripped == rule
    assert shown.strip() == kept


@pytest.mark.parametrize("step", [1, 3, 100])
def test_strict_mode_stops_a_whole_sentence_said_again(step: int) -> None:
    """Shorter than a span and not at an opening, but the whole sentence again."""
    text = "I'm sorry, I'm unable to provide that answer. I'm unable to provide that answer. Thanks."
    shown, tripped = guard(text, step=step)
    assert tripped == "sentence" and shown.strip() == "I'm sorry, I'm unable to provide that answer."
    assert guard(text, mode="loops", step=step) == (text, None)
    short = "Call us. Call us."  # under five units: not judged
    assert guard(short, step=step) == (short, None)
    twice = "It is red. The car is red and fast. The car is red and fast."
    assert guard(twice, allowed=2, step=step) == (twice, None)  # the source says it twice too


@pytest.mark.parametrize("path", sorted(GUARD_TEXTS.glob("[0-9]*.md")), ids=lambda p: p.stem)
def test_replies_with_legitimate_repeated_structure_pass_whole(path: Path) -> None:
    """Lists whose items start alike, tables, code, refrains, restated sentences:
    in "loops" mode (chat and other templates) none is cut."""
    text = path.read_text(encoding="utf-8")
    for step in (1, 3, 7):
        assert guard(text, mode="loops", step=step) == (text, None)


@pytest.mark.parametrize(
    "name",
    [
        "01-checklist-check-that",
        "02-steps-open",
        "03-table-plan-comparison",
        "04-code-asserts",
        "10-zh-checklist",
        "12-sql-inserts",
        "14-timetable",
    ],
)
def test_strict_mode_leaves_lists_tables_and_code_alone(name: str) -> None:
    text = (GUARD_TEXTS / f"{name}.md").read_text(encoding="utf-8")
    assert guard(text, mode="strict") == (text, None)


def test_a_looping_line_of_code_or_table_row_is_stopped() -> None:
    code = "Use this:\n```\n" + '    "--output.flush-interval=3s",\n' * 20 + "```\n"
    shown, tripped = guard(code, mode="loops")
    assert tripped == "line" and shown.count("flush-interval") == 4
    shown, tripped = guard(code, mode="strict")
    assert tripped == "line" and shown.count("flush-interval") == 2
    table = "| a | b |\n|---|---|\n| 当前的新功能 | 当前的新功能不支持 |\n| 当前的新功能 | 当前的新功能不支持 |\n"
    shown, tripped = guard(table, mode="strict")
    assert tripped == "line" and shown.count("当前的新功能不支持") == 1


def test_a_translation_may_repeat_what_its_source_repeats() -> None:
    source = "Step 1: check the cable. Step 2: check the cable. Step 3: check the cable."
    reply = "Étape 1 : vérifiez le câble qui relie la box. Étape 2 : vérifiez le câble qui relie la box. Étape 3 : vérifiez le câble qui relie la box."
    assert repeats_in(source) == 2  # "check the cable step" comes back twice
    assert guard(reply, allowed=repeats_in(source)) == (reply, None)
    assert guard(reply)[1] is not None  # without the source's allowance it is a loop


def test_the_meter_reports_repetition_and_stops_the_engine() -> None:
    engine = FakeEngine(
        reply=lambda messages: "The plan is good. " + "The plan will also include a new plan to build roads. " * 50
    )
    meter = Meter(engine, repetition="strict")
    text = text_of(call(meter, [Message("user", "go")], PARAMS))
    assert text.strip() == "The plan is good. The plan will also include a new plan to build roads."
    assert meter.stats().finish_reason == "repetition"
    assert engine.last_stats.usage.completion_tokens < 60  # generation stopped, not just the display
    assert "repeating itself" in meter.finish_note()


@pytest.mark.parametrize(
    "tokens",
    [["1", " ", "2", " ", "3"], ["Hel", "lo", " world"], ["你", "好"], ["12", ".", " Buy"]],
    ids=["numbers", "a word in pieces", "Chinese", "a numbered item"],
)
@pytest.mark.parametrize("mode", ["strict", "loops"])
def test_a_replys_first_token_is_shown_as_it_comes(tokens: list[str], mode: str) -> None:
    # A served reply's time to first token is this: a line that begins "12"
    # may be "12. item" or "12 items", but nothing before it can make it held.
    guard = RepetitionGuard(mode=mode)
    assert guard.feed(tokens[0]) == tokens[0]
    assert "".join(guard.feed(token) for token in tokens[1:]) + guard.finish() == "".join(tokens[1:])


@pytest.mark.parametrize("mode", ["strict", "loops"])
def test_a_sentences_first_word_waits_for_the_next_where_a_repeat_may_begin(mode: str) -> None:
    # "So" never began a repeat, but "you can" did: shown at once, "So" would
    # be left dangling where the reply is cut (the sentence's start).
    text = "You can return an item within 30 days of purchase. So you can return an item within 30 days of purchase."
    for step in (1, 2, 3):
        shown, rule = guard(text, mode, step=step)
        assert (shown.rstrip(), rule) == ("You can return an item within 30 days of purchase.", "span")
    # A mark may begin a run ("Wow!!!!…" is cut after "Wow"): it waits until its line is read.
    check = RepetitionGuard(mode=mode)
    assert [check.feed(piece) for piece in ("Wow", "!", "!")] == ["Wow", "", ""]


def test_the_guard_is_strict_by_default_on_a_tiny_model() -> None:
    from chatllm.jobs.prompting import repetition_mode

    chat, summarize = load_template("chat"), load_template("summarize")
    assert "repetition" not in chat.defaults
    assert repetition_mode(chat) == "loops" and repetition_mode(chat, tiny_model=True) == "strict"
    assert repetition_mode(chat, "off", tiny_model=True) == "off"  # --repetition wins
    assert repetition_mode(summarize) == "strict" == summarize.defaults["repetition"]
    assert repetition_mode(None, tiny_model=True) == "strict"  # a served model without a template


def test_repetition_off_lets_everything_through() -> None:
    reply = "again " * 40
    meter = Meter(FakeEngine(reply=lambda messages: reply.strip()), repetition="off")
    assert text_of(call(meter, [Message("user", "go")], PARAMS)) == reply.strip()
    assert meter.stats().finish_reason == "stop"


def test_the_guard_stops_a_remote_server_and_hangs_up() -> None:
    hung_up = threading.Event()

    def endless(handler, body):
        handler.start_stream()
        try:
            handler.send_lines(chunk("Je suis "), "")
            for _ in range(100_000):
                handler.send_lines(chunk("déjà "), "")
        except OSError:
            hung_up.set()

    with ScriptedServer() as server:
        server.route("POST", "/v1/chat/completions", endless)
        engine = OpenAIEngine(resolve_model(f"openai:stub@{server.url}"), EngineOptions())
        meter = Meter(engine, repetition="strict")
        text = text_of(call(meter, [Message("user", "Translate")], PARAMS))
        assert text.strip() == "Je suis déjà"
        assert meter.stats().finish_reason == "repetition"
        assert hung_up.wait(20), "the server kept streaming after the guard stopped the reply"
        engine.close()


# ---------------------------------------------------------------- length bounds


def test_summary_bounds_follow_the_input_with_floors_and_ceilings() -> None:
    assert summary_bound("medium", 1000) == 256  # 30%, under the ceiling
    assert summary_bound("medium", 400) == 120
    assert summary_bound("short", 400) == 60
    assert summary_bound("long", 400) == 200
    assert summary_bound("medium", 100) == 64  # the floor
    assert summary_bound("medium", 40) == 30  # never three quarters of a tiny input
    assert summary_bound("long", 100_000) == 512


def test_a_summary_is_asked_for_a_length_and_bounded_by_a_safety_net_unless_max_tokens_is_given() -> None:
    template = load_template("summarize")
    values = template.resolve_variables({})
    text = "Word " * 400
    # Sentences of four words (one token each, no numbers) for as long as it is let.
    engine = FakeEngine(
        context_size=4096, reply=lambda messages: " ".join(f"w{n} w{n} w{n} w{n}." for n in range(1000))
    )
    meter = Meter(engine)
    summary = text_of(summarize(meter, template, values, text, PARAMS)).split()
    limit = summary_limit("medium", engine.count_tokens(text))
    assert limit - 4 < len(summary) <= limit and limit > summary_bound("medium", engine.count_tokens(text))
    # Cut by the safety net, it was written once more; cut again, it is shown.
    assert len(engine.calls) == 2 and meter.stats().finish_reason == "length"
    assert "length limit" in meter.finish_note()
    # The prompt asks for the length in words at the input's own tokens per word (here 1.25).
    prompt = engine.calls[0][-1].content
    assert f"in about {round(summary_bound('medium', engine.count_tokens(text)) / 1.25)} words" in prompt
    meter = Meter(engine)
    assert 495 < len(text_of(summarize(meter, template, values, text, GenerationParams(max_tokens=500))).split()) <= 500


def test_a_summary_cut_by_the_safety_net_is_written_again_and_the_whole_one_shown() -> None:
    """A model that did not keep to the length asked (a text nearly copied) is
    asked once more; its second summary, ended by itself, is the one shown."""
    template = load_template("summarize")
    values = template.resolve_variables({})
    text = "The hotel opened last spring with a handful of rooms. " * 40
    wordy = " ".join(f"w{n} w{n} w{n} w{n}." for n in range(1000))
    replies = iter([wordy, "A small hotel opened last spring."])
    engine = FakeEngine(context_size=4096, reply=lambda messages: next(replies))
    meter = Meter(engine)
    summary = text_of(summarize(meter, template, values, text, PARAMS)).strip()
    assert summary == "A small hotel opened last spring." and len(engine.calls) == 2
    assert meter.stats().finish_reason == "stop"
    assert meter.finish_note() == "The first reply was cut at the length bound, so it was written again."


def test_a_summary_with_nothing_left_is_written_again_once() -> None:
    """All invented numbers (or all repeat) leaves nothing to show: one retry,
    whose finish reason and notes are the ones reported."""
    template = load_template("summarize")
    values = template.resolve_variables({})
    replies = iter(["It opened in 1999 with 12 rooms.", "The hotel opened with few rooms."])
    engine = FakeEngine(context_size=4096, reply=lambda messages: next(replies))
    meter = Meter(engine)
    text = "The hotel opened last spring with a handful of rooms. " * 4
    assert text_of(summarize(meter, template, values, text, PARAMS)).strip() == "The hotel opened with few rooms."
    stats = meter.stats()
    assert stats.finish_reason == "stop" and stats.usage.completion_tokens > engine.count_tokens("The hotel")
    assert meter.finish_note() == "The first reply was all repeats or invented numbers, so it was written again."

    # A good first reply is kept as it is, with no second call.
    replies = iter(["The hotel opened with few rooms."])
    meter = Meter(engine)
    assert text_of(summarize(meter, template, values, text, PARAMS)).strip() == "The hotel opened with few rooms."
    assert meter.finish_note() is None


def test_half_a_sentence_cut_by_a_repeat_is_no_summary_and_twice_nothing_is_an_error() -> None:
    template = load_template("summarize")
    values = template.resolve_variables({})
    text = "The hotel opened last spring with a handful of rooms. " * 4
    loop = "The return of a desk and a desk and a desk and a desk and a desk and a desk and a desk and a desk"
    replies = iter([loop, "The hotel opened with few rooms."])
    engine = FakeEngine(context_size=4096, reply=lambda messages: next(replies))
    meter = Meter(engine)
    assert text_of(summarize(meter, template, values, text, PARAMS)).strip() == "The hotel opened with few rooms."
    assert "written again" in meter.finish_note()

    replies = iter([loop, "\n\nIt opened in 1999 with 12 rooms."])
    shown: list[Event] = []
    with pytest.raises(EngineError, match="no usable summary"):
        shown.extend(summarize(Meter(engine), template, values, text, PARAMS))
    assert shown == []  # not even the blank lines before it: a script sees no output and exit status 1

    # Half a sentence is no summary: a --max-tokens too small for one whole
    # sentence is an error that says so, without a second try.
    replies = iter(["The hotel opened with a few of its rooms"])
    meter = Meter(engine)
    with pytest.raises(EngineError, match="--max-tokens 5 is too small for one whole sentence"):
        text_of(summarize(meter, template, values, text, GenerationParams(temperature=0, max_tokens=5)))
    assert meter.calls == 1


CUT = Ending(by_itself=False)  # a length limit or a stopped repeat


def test_a_cut_reply_ends_at_its_last_whole_sentence() -> None:
    reply = ["The hotel opened last spring. ", "It has a handful of rooms", " and a"]
    assert "".join(through(reply, Grounding(GroundingFilter("spring")), ending=CUT)) == (
        "The hotel opened last spring. "
    )
    assert "".join(through(reply, Grounding(GroundingFilter("spring")))) == "".join(reply)  # ended by itself
    ended = ["The hotel opened. ", "It has rooms."]  # cut right after a sentence's end: kept
    assert "".join(through(ended, Grounding(GroundingFilter("")), ending=CUT)) == "".join(ended)
    only = ["A sentence that never ends"]  # all there is: kept
    assert "".join(through(only, Grounding(GroundingFilter("")), ending=CUT)) == only[0]

    # Through a job: a summary cut by its length bound ends with a whole sentence.
    template = load_template("summarize")
    engine = FakeEngine(
        context_size=4096, reply=lambda messages: "The hotel opened. It has " + " ".join(f"w{n}" for n in range(900))
    )
    meter = Meter(engine)
    summary = text_of(summarize(meter, template, template.resolve_variables({}), "Word " * 400, PARAMS))
    assert summary.strip() == "The hotel opened." and meter.stats().finish_reason == "length"


@pytest.mark.parametrize("step", [1, 3, 100])
def test_a_heading_is_shown_only_with_a_sentence_under_it(step: int) -> None:
    reply = "## Returns\n\nWithin 45 days.\n\n**Exchanges**\n\nExchanges are fr"
    pieces = [reply[i : i + step] for i in range(0, len(reply), step)]
    shown = "".join(through(pieces, Grounding(GroundingFilter("45")), ending=CUT))
    assert shown == "## Returns\n\nWithin 45 days.\n\n"  # the cut left "Exchanges" with nothing under it
    # A heading over a sentence that was left out waits for the next one.
    reply = "# Title\nWithin 99 days.\nOk."
    assert "".join(through([reply], Grounding(GroundingFilter("45")))) == "# Title\nOk."


def test_a_translation_chunk_is_bounded_by_its_source() -> None:
    template = load_template("translate")
    values = template.resolve_variables({"to": "French"})
    engine = FakeEngine(context_size=4096, reply=lambda messages: " ".join(f"mot{n}" for n in range(5000)))
    source = "The first forty electric buses arrive next spring."
    words = text_of(translate(Meter(engine), template, values, source, PARAMS)).split()
    assert len(words) == translation_bound(engine.count_tokens(source), "French")
    assert translation_bound(100, "Chinese (中文)") > translation_bound(100, "French")


# ---------------------------------------------------------------- grounding


def test_sentences_stating_numbers_not_in_the_source_are_left_out() -> None:
    source = (
        "The council rejected the delay by 31 votes to 18. The depot upgrade costs £23.4 million; 1,200 people signed."
    )
    reply = (
        "The council voted 31 to 18. It was announced on Monday with 12 new stations. "
        "The upgrade costs 23.4 million and 1200 people signed.\n1. A list item with 7 things\n2. An item\nDone."
    )
    for step in (1, 4, 100):
        check = GroundingFilter(source)
        shown = "".join(check.feed(reply[i : i + step]) for i in range(0, len(reply), step)) + check.finish()
        assert (
            shown
            == "The council voted 31 to 18. The upgrade costs 23.4 million and 1200 people signed.\n2. An item\nDone."
        )
        assert check.dropped == 2


def test_a_persona_whose_whole_reply_is_ungrounded_says_its_fallback(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days of delivery.\n")
    template = load_template("support")
    values = template.resolve_variables({})
    engine = FakeEngine(reply=lambda messages: "You can return it within 30 days.")
    persona = build_persona(template, values, engine, choose_knowledge(template, [faq]))
    session = ChatSession(engine, persona, PARAMS)
    reply, notes = reply_and_notes(session.send("How long do I have to return a bike?"))
    assert "30 days" not in reply and "hand this over to a human colleague" in reply
    assert "Left out 1 sentence" in notes


@pytest.mark.parametrize(
    "reply, offered",
    [
        ("I'm sorry, I'm unable to provide that information.", True),
        ("I don't have that information.", True),
        ("抱歉，我没有相关信息。", True),
        ("I'm sorry your bike arrived damaged. Report it within 72 hours.", False),  # an apology is not declining
        ("I don't have that information. I can hand this over to a human colleague.", False),  # offered already
        ("Returns are accepted within 45 days.", False),
        ("If you are unable to return it within 45 days, email us.", False),  # the customer, not the agent
    ],
)
def test_a_persona_reply_that_declines_offers_the_handover(tmp_path: Path, reply: str, offered: bool) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days. Report damage within 72 hours.\n")
    template = load_template("support")
    values = template.resolve_variables({"handoff": "Shall I pass this to our team?"})
    engine = FakeEngine(reply=lambda messages: reply)
    persona = build_persona(template, values, engine, choose_knowledge(template, [faq]))
    # Not a question: the knowledge check (jobs/knowledge_use.py) leaves the reply as it is.
    said = text_of(ChatSession(engine, persona, PARAMS).send("I'd like a scooter."))
    assert said.startswith(reply.rstrip())
    assert said.endswith(" Shall I pass this to our team?") is offered


def test_a_persona_reply_ends_where_the_model_starts_the_prompts_next_turn(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days.\n")
    template = load_template("support")
    values = template.resolve_variables({})
    echoes = [
        "\nCustomer: And exchanges?",
        "\nQuestion: And exchanges?\nAnswer: No.",
        "\n[faq.md — Returns]\nReturns are accepted within 45 days.",
    ]
    for echo in echoes:
        engine = FakeEngine(reply=lambda messages, echo=echo: "Returns are accepted within 45 days." + echo)
        persona = build_persona(template, values, engine, choose_knowledge(template, [faq]))
        params = GenerationParams(**{**vars(PARAMS), "stop": tuple(template.defaults["stop"])})
        assert text_of(ChatSession(engine, persona, params).send("Returns?")).strip() == (
            "Returns are accepted within 45 days."
        )


# ---------------------------------------------------------------- a persona's knowledge


def test_kb_replaces_the_demo_knowledge_and_its_examples(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days of delivery.\n")
    template = load_template("support")
    values = template.resolve_variables({})
    demo = build_persona(template, values, FakeEngine(context_size=8192), tiny_model=True)
    assert "30 days" in demo.system  # the demo's own example quotes the demo's knowledge
    mine = build_persona(
        template, values, FakeEngine(context_size=8192), choose_knowledge(template, [faq]), tiny_model=True
    )
    everything = mine.system + mine.greeting + mine.render_user("How long do refunds take?")
    assert "45 days" in everything
    for demo_fact in ("30 days", "Maple", "maplemoss", "4.90", "退货"):
        assert demo_fact not in everything
    added = build_persona(
        template, values, FakeEngine(context_size=8192), choose_knowledge(template, [f"+{faq}"]), tiny_model=True
    )
    assert "within 45 days" in added.render_user("Returns within 45 days?") or "45 days" in added.facts
    assert "Returns and refunds" in added.render_user("How long do refunds take?")


def test_company_and_tone_still_work_with_the_users_knowledge(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Hours\nWe open at 9:00.\n")
    template = load_template("support")
    values = template.resolve_variables({"company": "Acme", "tone": "formal"})
    persona = build_persona(template, values, FakeEngine(context_size=8192), choose_knowledge(template, [faq]))
    assert "of Acme" in persona.system and "formal" in persona.system and "Acme" in persona.greeting


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"   \n\n", "is empty"),
        (b"\x00\x01binary", "looks like a binary file"),
        (b"caf\xe9", "is not UTF-8 text"),
    ],
)
def test_unusable_knowledge_files_are_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "kb.md"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=message):
        choose_knowledge(load_template("support"), [bad])
    with pytest.raises(InputError, match="is a directory"):
        choose_knowledge(load_template("support"), [tmp_path])


def test_the_cli_refuses_bad_knowledge_and_an_unknown_length(tmp_path: Path) -> None:
    empty = tmp_path / "empty.md"
    empty.write_text("")
    for args in (["--kb", str(empty)], ["--kb", str(tmp_path)], ["--kb", f"+{tmp_path / 'missing.md'}"]):
        result = run_chatllm("chat", "-p", "support", *args, "--dry-run", input="hi\n")
        errors = result.stderr.decode().strip().splitlines()
        assert result.returncode == 1 and len(errors) == 1 and errors[0].startswith("Error: ") and not result.stdout
    result = run_chatllm("summarize", "--length", "huge", "--dry-run", input="Some text to summarize.")
    assert result.returncode == 2 and "huge" in result.stderr.decode() and not result.stdout


def test_the_dry_run_shows_the_users_knowledge_only(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from chatllm.cli.app import app

    faq = tmp_path / "faq.md"
    faq.write_text("## Returns\nReturns are accepted within 45 days of delivery.\n")
    result = CliRunner().invoke(app, ["chat", "-p", "support", "--kb", str(faq), "--dry-run"])
    assert result.exit_code == 0, result.stderr
    messages = json.loads(result.stdout)["messages"]
    assert "45 days" in messages[0]["content"] and "30 days" not in result.stdout


def test_a_loop_from_paragraph_to_paragraph_of_a_translation_is_stopped() -> None:
    template = load_template("translate")
    values = template.resolve_variables({"to": "French"})
    engine = FakeEngine(reply=lambda messages: "La question est question de la ville et de la mer.")
    meter = Meter(engine, repetition="strict")
    source = "First paragraph about the city.\n\nSecond paragraph about the sea.\n\nThird one about roads."
    output = text_of(translate(meter, template, values, source, PARAMS))
    assert output.count("La question est question") == 1
    assert meter.stats().finish_reason == "repetition"


def test_a_date_restated_in_words_is_grounded_in_its_iso_form() -> None:
    # A tool returns "2026-03-01"; the 1.5B writes "shipped on March 1, 2026".
    check = GroundingFilter('{"shipped_on": "2026-03-01", "expected_delivery": "2026-03-06"}')
    assert check.grounded("It was shipped on March 1, 2026 and should arrive on March 6.")
    assert check.grounded("Shipped 01/03/2026.")
    assert not check.grounded("It should arrive on March 9, 2026.")
    assert not check.grounded("It left on March 1, 2025.")
    # Only a date's parts lose their zeros: a time's "05" grounds no "5 days".
    timed = GroundingFilter('{"eta": "08:05", "code": "000123"}')
    assert not timed.grounded("It ships in 5 days.") and not timed.grounded("Code 123.")
