"""The support persona's guards (jobs/persona_reply.py and the modules it
composes): no order status it cannot see, no question answered that its
knowledge does not cover (the model's own calibrated judgement), nothing
internal shown to the customer, fixed texts in the customer's language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.jobs.chat import ChatSession
from chatllm.jobs.coverage import JUDGE_QUESTION, UNCOVERED_PROBES, CoverageJudge
from chatllm.jobs.knowledge import Passage
from chatllm.jobs.orders import asks_about_an_order, order_reference, states_order_status
from chatllm.jobs.persona import build_persona, choose_knowledge
from chatllm.jobs.persona_reply import scrub
from chatllm.reply.events import text_of
from chatllm.reply.stages import NoOrderStatus, through
from chatllm.templates import load_template
from tests.support.events import reply_and_notes

FAQ = """## Returns
Returns are accepted within 45 days of delivery. We collect the bike for 79 EUR.

## Orders
Order numbers look like NB-12345. See My orders for where your order is.
"""
PARAMS = GenerationParams(temperature=0)


@pytest.mark.parametrize(
    "question, about_one_order",
    [
        ("What's the status of my order NB-51377? It should have arrived by now.", True),
        ("Where is my order FS1093412?", True),
        ("My order hasn't arrived yet, has it been sent?", True),
        ("我的订单 FS1077123 到哪里了？", True),
        ("Where is my order?", True),
        ("where can i see how far along my order is??", False),  # how orders work: the knowledge answers it
        ("What does an order number look like?", False),
        ("Can I still cancel once it's in assembly?", False),
        ("How long does delivery take?", False),
    ],
)
def test_a_question_about_one_order_is_told_apart_from_one_about_orders(question: str, about_one_order: bool) -> None:
    assert asks_about_an_order(question) is about_one_order


def test_order_references_and_status_claims() -> None:
    assert order_reference("status of NB-51377 please") == "NB-51377"
    assert order_reference("订单号 1234567") == "1234567" and order_reference("my order") is None
    for claim in (
        "The order NB-51377 is still Confirmed.",
        "Your order has been shipped.",
        "您的订单已发货。",
        'Your order NB-51377 is currently in the "Received" status.',  # the 1.5B, with a lookup tool it did not call
        "The status of your order NB-51377 is Shipped.",
        "Your order's status is packed.",
    ):
        assert states_order_status(claim), claim
    for fine in (
        "You can see where your order is under My orders.",
        "Once the status is In assembly, we charge 49 EUR.",
        "You can see the status of your order in your account.",
    ):
        assert not states_order_status(fine), fine


def test_a_sentence_stating_an_order_status_is_taken_out_and_the_honest_reply_follows() -> None:
    pieces = ["Thanks for waiting. ", "Your order NB-12345 has been dispatched ", "and arrives Monday."]
    assert "".join(through(pieces, NoOrderStatus("I can't see orders from here."))) == (
        "Thanks for waiting. I can't see orders from here."
    )


def _session(tmp_path: Path, reply, scores=None) -> tuple[ChatSession, FakeEngine]:
    faq = tmp_path / "faq.md"
    faq.write_text(FAQ)
    template = load_template("support")
    engine = FakeEngine(reply=reply)
    if scores is not None:
        engine.score = scores  # type: ignore[method-assign]
    persona = build_persona(template, template.resolve_variables({}), engine, choose_knowledge(template, [faq]))
    return ChatSession(engine, persona, PARAMS), engine


def test_an_order_question_gets_the_no_lookup_reply_without_asking_the_model(tmp_path: Path) -> None:
    session, engine = _session(tmp_path, reply=lambda messages: "The order NB-51377 is still Confirmed.")
    reply, notes = reply_and_notes(session.send("What's the status of my order NB-51377?"))
    assert reply.startswith("I can't see orders from here, so I can't check order NB-51377 for you.")
    assert "human colleague" in reply and engine.calls == []
    assert "cannot look up" in notes
    # In Chinese, to a customer who writes Chinese.
    assert text_of(session.send("我的订单 NB-51377 到哪里了？")).startswith(
        "我在这里查不到订单，无法为您查询订单 NB-51377"
    )
    # A status the model states anyway, to words the first rule does not know, is taken back.
    reply = text_of(session.send("Is the parcel with my bike on its way? I ordered it in May."))
    assert not states_order_status(reply) and "can't see orders" in reply


def _judging(covered: float, uncovered: float, margin_for):
    """A scorer whose yes/no margin is `covered` for the calibration's section
    probes, `uncovered` for its uncovered ones, and margin_for(question) otherwise."""

    def score(messages, continuations):
        question = messages[-1].content.replace(JUDGE_QUESTION, "").strip()
        if question.startswith("What can you tell me about"):
            value = covered
        elif question in UNCOVERED_PROBES:
            value = uncovered
        else:
            value = margin_for(question)
        return [value / 2, value / 2, -value / 2, -value / 2]  # yes, Yes, no, No

    return score


def test_the_model_judges_whether_its_knowledge_answers_before_it_answers(tmp_path: Path) -> None:
    margins = {
        "Do you sell electric scooters?": -1.0,
        # A plausible uncovered question scores above halfway between the probes' means.
        "Do you offer a student discount?": 0.7,
        "How long do I have to return a bike?": 2.0,
    }
    session, engine = _session(
        tmp_path,
        reply=lambda messages: "Returns are accepted within 45 days of delivery.",
        scores=_judging(3.0, -2.0, lambda question: margins[question.split("\n")[-1]]),
    )
    assert session.persona.coverage is not None  # the knowledge is given whole
    declined, notes = reply_and_notes(session.send("Do you sell electric scooters?"))
    assert declined.startswith("I'm sorry, I don't have that information.") and engine.calls == []
    assert "the model's own judgement" in notes
    assert text_of(session.send("Do you offer a student discount?")).startswith("I'm sorry, I don't have that")
    assert text_of(session.send("How long do I have to return a bike?")) == (
        "Returns are accepted within 45 days of delivery."
    )
    calibration = session.persona.coverage.calibration
    assert calibration is not None and calibration.usable and calibration.threshold == pytest.approx(1.0)


def test_a_model_that_cannot_tell_covered_from_uncovered_does_not_judge(tmp_path: Path) -> None:
    session, _ = _session(
        tmp_path,
        reply=lambda messages: "Returns are accepted within 45 days of delivery.",
        scores=_judging(-1.2, -1.5, lambda question: -3.0),  # SmolLM2-135M's probes were this close
    )
    assert text_of(session.send("How long do I have to return a bike?")).startswith("Returns are accepted")
    assert not session.persona.coverage.calibration.usable


def test_the_calibration_is_kept_for_the_next_run(tmp_path: Path) -> None:
    calls = []

    def score(messages, continuations):
        calls.append(messages)
        return [1.0, 1.0, -1.0, -1.0] if "tell me about" in messages[-1].content else [-1.0, -1.0, 1.0, 1.0]

    system = [Message("system", "KNOWLEDGE: ...")]

    class Scorer:
        def score(self, messages, continuations):
            return score(messages, continuations)

    judge = CoverageJudge("KNOWLEDGE: ...", ("Returns", "Orders"), model_key="model-1", cache_dir=tmp_path)
    first = judge.judge(Scorer(), [*system, Message("user", "Do you sell scooters?")])
    assert first is not None and not first.covered
    probes = len(calls)
    again = CoverageJudge("KNOWLEDGE: ...", ("Returns", "Orders"), model_key="model-1", cache_dir=tmp_path)
    again.judge(Scorer(), [*system, Message("user", "Do you sell scooters?")])
    assert len(calls) == probes + 1, "the second judge measured nothing but the question"
    other = CoverageJudge("KNOWLEDGE: ...", ("Returns", "Orders"), model_key="model-2", cache_dir=tmp_path)
    other.judge(Scorer(), [*system, Message("user", "Do you sell scooters?")])
    assert len(calls) > probes + 2, "another model is calibrated on its own"


@pytest.mark.parametrize(
    "said, shown",
    [
        ("Contact us at [faq.md — Contact] for help. ", "Contact us at for help. "),
        ("According to the knowledge, you have 45 days. ", "You have 45 days. "),
        ("The knowledge indicates that returns take 45 days.", "Returns take 45 days."),
        ("That is not mentioned in the provided knowledge.", "That is not mentioned."),
        ("See faq.md for details.", "See for details."),
        ("We collect the bike for 79 EUR.", "We collect the bike for 79 EUR."),
    ],
)
def test_nothing_internal_reaches_the_customer(said: str, shown: str) -> None:
    assert scrub(said, ["faq.md"]) == shown


def test_passages_reach_the_model_without_file_names() -> None:
    assert Passage("hidden_faq.md", "Contact", "Call us.").render() == "[Contact]\nCall us."
    assert "hidden_faq.md" not in Passage("hidden_faq.md", "", "Call us.").render()


def test_a_served_persona_says_the_same_as_the_chat_session(served, tmp_path: Path) -> None:
    served.engine.reply = lambda messages: "Your order NB-51377 has been dispatched."
    question = [{"role": "user", "content": "Where is my order NB-51377?"}]
    reply = served.client.chat.completions.create(model="support", messages=question)
    assert reply.choices[0].message.content.startswith("I can't see orders from here, so I can't check order NB-51377")
    assert reply.usage is not None and reply.usage.completion_tokens == 0
    streamed = served.client.chat.completions.create(model="support", messages=question, stream=True)
    assert re.match(r"I can't see orders", "".join(c.choices[0].delta.content or "" for c in streamed if c.choices))
