"""A persona reply that declines offers the handover.

A support persona's rules tell the model to offer a human colleague when it
cannot answer. A small model declines ("I'm sorry, I don't have that
information.") and stops there, leaving the customer at a dead end. Whether
a reply declines is plain from its words, so the tool finishes the rule: the
template's `handover` text is added to a reply that declines and offers no
handover of its own. On the evaluation set (benchmarks/quality.py, one seed)
uncovered questions offered the handover went from 2 of 14 to 5 of 14.
"""

from __future__ import annotations

import re

# The agent saying it cannot answer, in English or Chinese. An apology alone
# ("I'm sorry your bike arrived damaged") is not declining, nor is an answer
# about the customer ("if you are unable to come, call us").
DECLINES = re.compile(
    r"\b(?:I|we)(?:['’]m|['’]re| am| are)? (?:afraid )?(?:unable to|not able to|not sure)\b|"
    r"\b(?:I|we) (?:cannot|can ?not|can['’]t|do not|don['’]t) (?:help|provide|answer|find|say|tell|"
    r"have (?:(?:that|this|the|any|enough|such) )?(?:information|details|answer))\b|"
    r"\bno information\b|无法|不能回答|没有(?:相关|这方面的)?(?:信息|资料)|不清楚",
    re.IGNORECASE,
)
# Already offering a person.
OFFERS = re.compile(r"\b(?:human|colleague|hand (?:this|it) over|handover)\b|人工|同事|转交|转接", re.IGNORECASE)


def declines_without_offer(reply: str) -> bool:
    return bool(DECLINES.search(reply)) and not OFFERS.search(reply)
