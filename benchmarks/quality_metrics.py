"""The measures benchmarks/quality.py reports, as plain functions of text.

They are written apart from chatllm's own code on purpose: the repetition bar
here is not chatllm's guard, so the guard is judged by an independent rule
(any repeated span of 8 words or 16 CJK characters, wherever it is).
"""

from __future__ import annotations

import re
from collections import Counter

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_UNIT = re.compile(rf"[{CJK}]|[^\W_{CJK}]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
HANDOVER = re.compile(
    r"human|colleague|hand (?:this|it|you|your \w+) over|hand[- ]?over|pass (?:this|it) on|transfer you|"
    r"a (?:member of|person from) (?:our|the) (?:team|staff)|support team|customer service team|"
    r"人工|转交|转接|同事|客服人员",
    re.IGNORECASE,
)


def units(text: str) -> list[str]:
    """Words (runs of letters and digits) and single CJK characters, lower-cased."""
    return [u.lower() for u in _UNIT.findall(text)]


def weight(unit: str) -> float:
    return 0.5 if re.fullmatch(f"[{CJK}]", unit) else 1.0


def length(text: str) -> float:
    """Length in words, a CJK character counting as half a word."""
    return sum(weight(u) for u in units(text))


def repeated_span(text: str, words: float = 8) -> str | None:
    """The first span of `words` words (16 CJK characters for 8) that occurs
    twice in `text`, or None. Punctuation and spacing do not count."""
    found = units(text)
    seen: set[tuple[str, ...]] = set()
    for end in range(len(found)):
        total, start = 0.0, end
        while start >= 0 and total < words:
            total += weight(found[start])
            start -= 1
        if total < words:
            continue
        span = tuple(found[start + 1 : end + 1])
        if span in seen:
            return " ".join(span)
        seen.add(span)
    return None


def _normal_number(number: str) -> str:
    """'1,200' and '1.200' (thousands) as '1200'; '4.70' as '4.7'."""
    if re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+", number):
        return re.sub(r"[.,]", "", number)
    number = number.replace(",", ".")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number


# A list item's own marker ("1. ", "2、") is not a number the item states.
_LIST_MARKER = re.compile(r"^[ \t]*\d{1,3}(?:[.)][ \t]+|、)", re.MULTILINE)


def numbers(text: str) -> set[str]:
    return {_normal_number(n) for n in _NUMBER.findall(_LIST_MARKER.sub("", text))}


def new_numbers(output: str, source: str) -> list[str]:
    """Numbers in `output` that `source` does not contain (as numbers or inside
    a longer number such as a date), sorted."""
    known = numbers(source)
    digits = re.sub(r"\D", " ", source)
    return sorted(n for n in numbers(output) if n not in known and f" {n} " not in f" {digits} ")


def language_of(text: str) -> str | None:
    """The primary language subtag of `text` by CLD2 (via chatllm), or None."""
    from chatllm.languages import detect_language

    detected = detect_language(text)
    return detected.tag.split("-")[0] if detected else None


def has_any(text: str, needles: list[str]) -> bool:
    folded = text.casefold()
    return any(needle.casefold() in folded for needle in needles)


# An answer saying the documents it was given do not answer the question, in
# English or Chinese: `chatllm ask`'s own sentence or a model's own words.
NOT_IN_DOCUMENTS = re.compile(
    r"not in (?:these|the) (?:documents|passages)|(?:documents?|passages?|texts?) (?:do|does) not "
    r"(?:answer|mention|contain|say|include|provide|specify)|(?:documents?|passages?) (?:don't|doesn't)|"
    r"no information (?:about|on)|没有回答|没有提到|未提及|没有提及|文档中没有|没有相关信息|无法回答",
    re.IGNORECASE,
)


def says_not_in_documents(text: str) -> bool:
    return bool(NOT_IN_DOCUMENTS.search(text))


def offers_handover(text: str) -> bool:
    return bool(HANDOVER.search(text))


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (sacrebleu, character 6-grams, beta 2)."""
    import sacrebleu

    return round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 1)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def most_common_line(text: str) -> int:
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return max(Counter(lines).values(), default=0)


# A reply that tells a customer what state their order is in. A broader bar
# than chatllm's own guard (jobs/orders.py), on purpose: any sentence that
# names an order (or 订单) together with a state it could be in, unless it
# says where to look the state up or how orders go in general.
_ORDER_WORD = re.compile(r"\border\b|订单", re.IGNORECASE)
_STATE_WORD = re.compile(
    r"\b(?:confirmed|dispatched|delivered|shipped|sent|packed|processed|processing|in assembly|final check|"
    r"in transit|on (?:its|the) way|out for delivery|delayed|arriv(?:e|es|ed|ing) (?:on|by|tomorrow|today|soon)|"
    r"expected (?:on|by|to arrive))\b|已发货|已发出|已送达|配送中|运输中|已签收|已出库|正在处理|正在配送|已确认",
    re.IGNORECASE,
)
_HOW_TO_LOOK = re.compile(
    r"\b(?:see|check|track|follow|log in|open|under|my orders|stages?|goes through|statuses|once|while|when|if|after)\b|"
    r"查看|查询|如果|一旦",
    re.IGNORECASE,
)


def states_order_status(text: str) -> bool:
    for sentence in re.split(r"(?<=[.!?。！？])\s*", text):
        if _ORDER_WORD.search(sentence) and _STATE_WORD.search(sentence) and not _HOW_TO_LOOK.search(sentence):
            return True
    return False


def internal_label(text: str, *file_names: str) -> bool:
    """Whether `text` shows the customer something internal: a passage label
    ("[knowledge.md — Returns]"), a knowledge file's name, the prompt's rule
    numbers or its KNOWLEDGE heading."""
    if re.search(r"\[[^\]\n]*(?:—|\.md|\.txt)[^\]\n]*\]|\brules? \d\b|\bKNOWLEDGE\b", text, re.IGNORECASE):
        return True
    return any(name and name.casefold() in text.casefold() for name in file_names)


def ends_a_sentence(text: str) -> bool:
    """Whether `text` ends at the end of a sentence (or of a list item or a
    heading line): not cut in the middle of one."""
    last = text.rstrip()
    if not last:
        return False
    final_line = last.splitlines()[-1].strip()
    return bool(re.search(r"[.!?。！？…:：\)）\]\"”’*]$", last)) or final_line.startswith(("#", "- ", "* "))


def translation_number_problems(source: str, translation: str, source_lang: str, target_lang: str) -> list[str]:
    """Numbers of `source` missing from `translation`, and numbers it adds, as
    values ("240 million" = "2.4亿"). chatllm's own reader (jobs/numbers.py,
    text2num and cn2an): no independent parser reads spelled numbers in three
    languages, so this measure shares the guard's reading; the replies
    themselves are kept in benchmarks/results to read."""
    from chatllm.jobs.numbers import number_problems

    return number_problems(source, translation, source_lang, target_lang) if translation.strip() else []


def untranslated(source: str, translation: str) -> list[str]:
    """Words left in the source's script: CJK characters in a translation of a
    Chinese text into a Latin-script language, or lower-case English words of
    the source in a Chinese translation."""
    cjk = f"[{CJK}]+"
    source_cjk = bool(re.search(cjk, source))
    prose = re.sub(r"`[^`]*`|https?://\S+|\S+@\S+|\{[^{}\n]*\}|%[sd]", " ", translation)
    translation_cjk = len("".join(re.findall(cjk, prose))) > len(prose) / 4
    if source_cjk and not translation_cjk:
        return re.findall(cjk, prose)
    if translation_cjk and not source_cjk:
        lower = {w for w in re.findall(r"[A-Za-z]{3,}", source) if w.islower()}
        return [w for w in re.findall(r"(?<![A-Za-z])[A-Za-z]{3,}(?![A-Za-z])", prose) if w in lower]
    return []
