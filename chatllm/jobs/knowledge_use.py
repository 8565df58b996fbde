"""A persona's answer to a question must draw on its knowledge.

Asked something its knowledge does not cover ("Do you sell electric
scooters?"), a small model rarely says so: it answers "The answer is yes.", or
turns the question into a statement ("Yes, I am hiring bike mechanics at the
moment."). Such a reply uses no word of the knowledge that the customer did
not say first, and that is plain to see. So a reply to a question is held until
it says something from the knowledge (a word the knowledge has and the question
has not) or asks the customer something back; a reply that does neither by its
end is replaced by the persona's fallback, which declines and offers the
handover.

Measured on benchmarks/quality.py's support set with SmolLM2-135M: at seed 7,
uncovered questions offered the handover went from 7 to 10 of 14 and right
facts stayed at 8 of 39. Replayed over the stored replies of 18 earlier runs,
the handovers rose in every run (3 to 10 of 14 on the latest prompt) and no
reply carrying a right fact was replaced: a right fact is the knowledge's own
words. It cannot catch an invention made of the knowledge's words ("We offer a
fleet discount of 100%").

A bigger model's curt "Yes, we do." can be right, so only tiny models get the
check (jobs/persona.py). A reply in a script the knowledge does not use (a
Chinese answer from an English file) cannot share its words and is not judged.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from chatllm.jobs.knowledge import CJK, search_terms

# Whether the text asks something: a question mark, an English question word
# first, or a Chinese question particle.
_ASKS = re.compile(
    r"[?？]|^\W*(?:what|when|where|which|who|whose|why|how|can|could|do|does|did|is|are|was|were|will|would|"
    r"should|may|have|has)\b|吗|什么|怎么|哪|多少|几|是否|能否|可否",
    re.IGNORECASE,
)
# A whole sentence that asks the customer something back.
_QUESTION_END = re.compile(r"[?？][\"')\]»”’]*\s*$")
_SENTENCE = re.compile(r"[^.!?。！？\n]*(?:[.!?。！？]+|\n|$)")


@cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS) | frozenset(STOPWORDS_CHINESE)


def content_terms(text: str) -> set[str]:
    """Search terms (words, CJK bigrams) less stop words and single letters."""
    stop = _stopwords()
    return {term for term in search_terms(text) if term not in stop and (len(term) > 1 or term.isdigit())}


@lru_cache(maxsize=4)  # a persona's knowledge, judged against every question
def _knowledge_terms(knowledge: str) -> frozenset[str]:
    return frozenset(content_terms(knowledge))


def _scripts(text: str) -> set[str]:
    """ "cjk" and/or "other": whether `text` has CJK characters, and letters of
    other scripts."""
    found = {"cjk"} if CJK.search(text) else set()
    if re.search(r"[^\W\d_]", CJK.sub("", text)):
        found.add("other")
    return found


def asks(text: str) -> bool:
    """Whether the customer's message asks something (a greeting or a thank-you
    gets its reply unjudged)."""
    return bool(_ASKS.search(text.strip()))


class KnowledgeUse:
    """Judges, for one question, whether a reply draws on the knowledge."""

    def __init__(self, knowledge: str, question: str) -> None:
        self._known = _knowledge_terms(knowledge)
        self._asked = content_terms(question)
        self.replaced = False  # the reply was replaced by the fallback
        self._knowledge_scripts = _scripts(knowledge)

    def draws_on_knowledge(self, reply: str) -> bool:
        """Some word or number of `reply` is the knowledge's and not the
        question's ("The answer is 10 years." to "How many years…?")."""
        return bool((content_terms(reply) - self._asked) & self._known)

    def asks_back(self, reply: str) -> bool:
        """Some sentence of `reply` is a question of its own, not the
        customer's repeated ("What is your order number?")."""
        return any(
            _QUESTION_END.search(sentence) and content_terms(sentence) - self._asked
            for sentence in _SENTENCE.findall(reply)
        )

    def judgeable(self, reply: str) -> bool:
        """Whether `reply` is written in a script the knowledge uses at all."""
        return bool(_scripts(reply) & self._knowledge_scripts)

    def settled(self, reply: str) -> bool:
        """`reply` (so far) may be shown: it draws on the knowledge or asks back."""
        return self.draws_on_knowledge(reply) or self.asks_back(reply)
