"""What a persona's reply goes through beyond the generic stages (repetition
guard, grounding); the reply pipeline (chatllm/reply/pipeline.py) puts them
together for the chat session and for `serve`:

before the model writes, whether it should:
  * a question about one particular order, which a persona without a way to
    look orders up cannot answer (jobs/orders.py); with a tool that may
    look it up, the model answers (and the coverage judge does not decide);
  * a question its knowledge does not cover, by the model's own judgement
    (jobs/coverage.py), where the model can judge;

after, whether what it wrote may reach the customer:
  * a reply to a question must draw on the knowledge (jobs/knowledge_use.py);
  * no sentence states an order's status (jobs/orders.py);
  * nothing internal shows: the prompt's passage labels, knowledge file names,
    the word the prompt uses for the knowledge;
  * a reply that declines offers the handover (jobs/handover.py).

Measured on both benchmark models (benchmarks/README.md, "Support on the 1.5B"): each
stage is on for every model where it helps, not by the model's size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatllm.engine.base import Message, Scorer
from chatllm.jobs.knowledge_use import KnowledgeUse, asks
from chatllm.jobs.orders import asks_about_an_order, order_reference

if TYPE_CHECKING:
    from chatllm.jobs.chat import Persona

# How the prompt refers to what it gave the model: never words for a customer.
_SOURCE = r"(?:the |our )?(?:provided |given |available )?(?:knowledge(?: base)?|information|text|passages?)(?: (?:above|provided|given))?"
_LEADS_IN = re.compile(
    rf"\b(?:according to|based on|as (?:stated|mentioned|described) in|from) {_SOURCE},?\s*"
    rf"|\b{_SOURCE} (?:says|states|indicates|mentions|shows|explains) that\s+",
    re.IGNORECASE,
)
_IN_SOURCE = re.compile(
    r"\s+(?:in|from|by) (?:the |our )(?:provided |given |available )(?:knowledge|information|text)\b", re.I
)
_SHOUTED = re.compile(r"\b(?:the |our )?KNOWLEDGE\b")
# A passage label ("[Returns]", "[faq.md — Returns]") as the prompt wrote them.
_LABEL = re.compile(r"\s*\[[^\]\n]{1,80}\]")


@dataclass(frozen=True)
class PersonaTexts:
    """What a persona says in fixed words to one message."""

    fallback: str = ""  # declines and offers the handover
    handover: str = ""  # added to a reply that declines without offering it
    # The reply to a question about one particular order, which the persona
    # cannot look up; "" when it may answer such questions itself.
    no_order_lookup: str = ""


@dataclass
class PersonaTurn:
    """One customer message to a persona, and what its stages decided."""

    persona: Persona
    question: str  # what the customer wrote
    # Why the model's reply was not (all) used, for a note on stderr.
    notes: list[str] = field(default_factory=list)
    # Judges whether the reply draws on the knowledge; None: not checked.
    use: KnowledgeUse | None = None
    texts: PersonaTexts = field(init=False)
    # The question is about an order a tool may look up: the model answers it
    # (and states a status only once a tool returned one).
    looks_up: bool = False

    def __post_init__(self) -> None:
        persona = self.persona
        if persona.checks_answers and persona.facts and asks(self.question):
            self.use = KnowledgeUse(persona.facts, self.question)
        self.texts = (
            persona.texts_for(self.question)
            if persona.texts_for is not None
            else PersonaTexts(persona.fallback, persona.handover)
        )

    def names_an_order(self) -> bool:
        """Whether the question names an order by its number (a lookup needs one)."""
        return order_reference(self.question) is not None

    def reply_instead(self, can_look_up: bool = False) -> str | None:
        """A reply decided without the model: an order it cannot see
        (`can_look_up`: a tool may look it up, so the model answers)."""
        if self.texts.no_order_lookup and asks_about_an_order(self.question):
            if can_look_up:
                self.looks_up = True
                return None
            self.notes.append("The question is about one order, which this persona cannot look up.")
            return self.texts.no_order_lookup
        return None

    def judge(self, messages: Sequence[Message], scorer: Scorer, can_score: bool) -> str | None:
        """The fallback when the model judges that its knowledge does not
        answer the question; None when it does, or cannot judge."""
        judge = self.persona.coverage
        if judge is None or self.looks_up or not can_score or not asks(self.question) or not self.texts.fallback:
            return None
        coverage = judge.judge(scorer, messages)
        if coverage is None or coverage.covered:
            return None
        self.notes.append(
            "The knowledge does not answer this question (the model's own judgement), so the agent declined."
        )
        return self.texts.fallback

    def finish_notes(self) -> list[str]:
        if self.use is not None and self.use.replaced:
            self.notes.append("The reply drew on nothing in the knowledge, so the agent declined instead.")
        return self.notes


def scrub(sentence: str, names: Sequence[str]) -> str:
    """`sentence` without passage labels ("[Returns]"), knowledge file names and
    the prompt's words for its knowledge ("According to the knowledge, …")."""
    text = _LABEL.sub("", sentence)
    for name in names:
        text = re.sub(rf"\s*\b{re.escape(name)}\b", "", text, flags=re.IGNORECASE)
    body = text.lstrip()
    if _LEADS_IN.match(body):  # the sentence opened with it: the next word opens it now
        body = _LEADS_IN.sub("", body, count=1)
        body = body[:1].upper() + body[1:]
    text = text[: len(text) - len(text.lstrip())] + _LEADS_IN.sub("", body)
    text = _SHOUTED.sub("our information", _IN_SOURCE.sub("", text))
    if text == sentence:
        return sentence
    # What a removed label leaves behind: "at ." or "in the  section".
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text))
