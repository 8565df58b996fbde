"""A persona's answer to a question must draw on its knowledge
(jobs/knowledge_use.py): one that uses nothing the knowledge says is replaced
by the fallback, which declines and offers the handover. On every model: on
the 1.5B benchmark model too it turned inventions into handovers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatllm.engine.base import GenerationParams
from chatllm.engine.fake import FakeEngine
from chatllm.jobs.chat import ChatSession
from chatllm.jobs.knowledge_use import KnowledgeUse, asks
from chatllm.jobs.persona import build_persona, choose_knowledge
from chatllm.reply.events import Draft, Text, text_of
from chatllm.reply.stages import KnowledgeDrawn, through
from chatllm.templates import load_template
from tests.support.events import reply_and_notes

FAQ = """## Returns
Returns are accepted within 45 days of delivery. We collect the bike for 79 EUR.

## Warranty
Frames carry a 10-year warranty for the first owner.

## Orders
Order numbers look like NB-12345.
"""
FALLBACK = "I'm sorry, I don't have that information. Shall I pass this to our team?"


def said(reply: str, question: str, knowledge: str = FAQ) -> str:
    use = KnowledgeUse(knowledge, question)
    return "".join(through(re.findall(r"\s*\S+", reply), KnowledgeDrawn(use, FALLBACK)))


@pytest.mark.parametrize(
    "question, reply, kept",
    [
        ("Do you sell electric scooters?", "The answer is yes.", False),
        ("are you hiring bike mechanics?", "Yes, I am hiring bike mechanics at the moment.", False),
        ("What's the maximum rider weight? I'm 120 kg.", "The maximum rider weight is 120 kg.", False),
        ("How long do I have to send a bike back?", "Returns are accepted within 45 days.", True),
        ("How many years does the frame warranty last?", "The answer is 10 years.", True),  # a number of its own
        ("Where is my order?", "I can check. What is your order number?", True),  # asks back
        ("Do you sell scooters?", "Do you sell scooters?", False),  # the customer's question echoed is not asking
        ("你们卖儿童自行车吗？", "我们不卖。", True),  # Chinese cannot share an English file's words: not judged
    ],
)
def test_a_reply_that_uses_nothing_the_knowledge_says_is_replaced(question: str, reply: str, kept: bool) -> None:
    assert said(reply, question).rstrip() == (reply if kept else FALLBACK)


def test_only_questions_are_judged() -> None:
    assert asks("Do you sell scooters") and asks("where can i see my order??") and asks("你们卖儿童自行车吗")
    assert not asks("Thanks!") and not asks("hello there") and not asks("My bike arrived damaged.")


def test_a_reply_streams_on_from_its_first_word_from_the_knowledge() -> None:
    use = KnowledgeUse(FAQ, "How long do I have to send a bike back?")
    pieces = ["Yes", ",", " returns", " are", " accepted", " within", " 45", " days", "."]
    shown = list(through(pieces, KnowledgeDrawn(use, FALLBACK)))
    assert shown == ["Yes, returns are", " accepted", " within", " 45", " days", "."]


def _persona_session(tmp_path: Path, reply: str, tiny_model: bool) -> ChatSession:
    faq = tmp_path / "faq.md"
    faq.write_text(FAQ)
    template = load_template("support")
    values = template.resolve_variables({"handoff": "Shall I pass this to our team?"})
    engine = FakeEngine(reply=lambda messages: reply)
    persona = build_persona(template, values, engine, choose_knowledge(template, [faq]), tiny_model=tiny_model)
    return ChatSession(engine, persona, GenerationParams(temperature=0))


def test_a_tiny_models_unfounded_answer_becomes_the_handover_with_a_note(tmp_path: Path) -> None:
    session = _persona_session(tmp_path, "The answer is yes.", tiny_model=True)
    reply, notes = reply_and_notes(session.send("Do you sell electric scooters?"))
    assert reply == "I'm sorry, I don't have that information. Shall I pass this to our team?"
    assert "drew on nothing in the knowledge" in notes
    assert session.turns[-1].reply.startswith("I'm sorry")  # the transcript holds what the customer saw
    assert text_of(session.send("Thanks!")) == "The answer is yes."  # not a question: not judged


def test_a_bigger_models_answer_is_judged_too(tmp_path: Path) -> None:
    session = _persona_session(tmp_path, "Yes, we do.", tiny_model=False)
    assert text_of(session.send("Do you deliver to Belgium?")).startswith("I'm sorry, I don't have that information.")
    session = _persona_session(tmp_path, "Yes, within 45 days.", tiny_model=False)
    assert text_of(session.send("Can I send a bike back?")) == "Yes, within 45 days."


def test_a_served_tiny_persona_declines_an_unfounded_answer(served) -> None:
    served.service.tiny_model = True
    served.engine.reply = lambda messages: "The answer is yes."
    question = [{"role": "user", "content": "Do you sell electric scooters?"}]
    reply = served.client.chat.completions.create(model="support", messages=question)
    assert reply.choices[0].message.content.startswith("I'm sorry, I don't have that information.")
    served.engine.reply = lambda messages: "Unworn items can be returned within 30 days of delivery."
    reply = served.client.chat.completions.create(model="support", messages=question)
    assert reply.choices[0].message.content.startswith("Unworn items can be returned")


def test_a_reply_held_for_the_knowledge_check_shows_no_drafts(tmp_path: Path) -> None:
    session = _persona_session(tmp_path, "Returns are accepted within 45 days.", tiny_model=True)
    session.drafts = True
    events = list(session.send("How long do I have to send a bike back?"))
    assert not [event for event in events if isinstance(event, Draft)]  # its later words would show before its first
    events = list(session.send("Thanks!"))  # not a question: not held, so drafts show
    # What a live view shows after each event: a Text clears the draft, a Draft replaces it.
    drafts = [event.text if isinstance(event, Draft) else "" for event in events if isinstance(event, Text | Draft)]
    assert any(drafts) and drafts[-1] == ""
