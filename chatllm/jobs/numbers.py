"""The numbers a text states, as values, so a translation can be checked
against its source: every number of a paragraph is in its translation, in an
equivalent form, and none is added.

Measured on Qwen2.5-Coder-1.5B (benchmarks/README.md, "Quality"): en→zh of a
news article gave "约24亿欧元" for "about 240 million euros" (ten times too
much) and a "2022年2月" the source does not have. Such a translation reads
well and is wrong, and nothing but a check of its numbers catches it.

A number is read as a value whatever its form: "240 million", "240,000,000",
"2.4亿", "24000万" and "deux cent quarante millions" are all 240000000;
"1,5" (French) and "1.5" are 1.5; "十八" and "eighteen" are 18. Spelled
numbers go through maintained parsers (text2num for English and French,
cn2an for Chinese). Values up to 10 are not compared: "two" may become "两个"
or stay a word, "first" an ordinal, "February" "2月", and none of that
changes what the text says. Month names count as their month's number, so
"December" and "12月" agree.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from text_to_num import alpha2digit

SMALLEST_COMPARED = 11
_SCALES = {
    "thousand": 3,
    "k": 3,
    "mille": 3,
    "million": 6,
    "millions": 6,
    "mn": 6,
    "m": 6,
    "billion": 9,
    "billions": 9,
    "bn": 9,
    "milliard": 9,
    "milliards": 9,
    "trillion": 12,
    "千": 3,
    "万": 4,
    "十万": 5,
    "百万": 6,
    "千万": 7,
    "亿": 8,
    "十亿": 9,
    "百亿": 10,
    "千亿": 11,
    "万亿": 12,
}
_SCALE_WORDS = sorted(_SCALES, key=len, reverse=True)
# A number with its thousands separators or decimal mark, then perhaps a scale.
_NUMBER = re.compile(
    r"(?<![0-9A-Za-z.,])(\d{1,3}(?:[,\u00a0\u202f ]\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:[.,]\d+)?)"
    r"(?:\s*(" + "|".join(re.escape(w) for w in _SCALE_WORDS) + r")(?![A-Za-z]))?",
    re.IGNORECASE,
)
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "janvier"),
            ("february", "février", "fevrier"),
            ("march", "mars"),
            ("april", "avril"),
            ("may", "mai"),
            ("june", "juin"),
            ("july", "juillet"),
            ("august", "août", "aout"),
            ("september", "septembre"),
            ("october", "octobre"),
            ("november", "novembre"),
            ("december", "décembre", "decembre"),
        ),
        start=1,
    )
    for name in names
}
_MONTH_WORD = re.compile(r"\b(" + "|".join(_MONTHS) + r")\b", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def _digits(text: str, language: str) -> str:
    """`text` with spelled numbers written in digits."""
    if _CJK.search(text):
        import cn2an  # ~0.1 s to import: only for a text that has Chinese in it

        with warnings.catch_warnings():  # it warns about "亿" after digits, which it leaves as they are
            warnings.simplefilter("ignore")
            try:
                text = cn2an.transform(text, "cn2an")
            except (ValueError, KeyError, IndexError):
                pass
    base = language.split("-")[0]
    if base in ("en", "fr"):
        # Digits with a scale word ("23.4 million") are read by _NUMBER as they
        # are; alpha2digit would turn the word alone into "1000000".
        numbers = [match[0] for match in _NUMBER.finditer(text)]
        masked = _NUMBER.sub("\x00", text)
        spelled = alpha2digit(masked, base, threshold=SMALLEST_COMPARED - 1)
        pieces = iter(numbers)
        text = re.sub("\x00", lambda _: next(pieces, ""), spelled)
    return text


def _value(number: str, scale: str | None, language: str) -> Decimal | None:
    cleaned = number.replace("\u00a0", "").replace("\u202f", "")
    if re.fullmatch(r"\d{1,3}(?:[, ]\d{3})+(?:\.\d+)?", cleaned):
        cleaned = re.sub(r"[, ]", "", cleaned)
    elif re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", cleaned):
        cleaned = cleaned.replace(".", "").replace(",", ".")
    elif "," in cleaned:  # a decimal comma ("1,5"), or English thousands without a full group
        head, _, tail = cleaned.partition(",")
        cleaned = f"{head}.{tail}" if len(tail) != 3 or language.startswith("fr") else head + tail
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if scale:
        value *= Decimal(10) ** _SCALES[scale.lower()]
    return value.normalize()


def number_values(text: str, language: str = "") -> set[Decimal]:
    """The values above SMALLEST_COMPARED - 1 that `text` states, months by number."""
    found: set[Decimal] = set()
    converted = _digits(text, language)
    for match in _NUMBER.finditer(converted):
        value = _value(match[1], match[2], language)
        if value is not None and value >= SMALLEST_COMPARED:
            found.add(value)
    found |= {Decimal(_MONTHS[m.lower()]) for m in _MONTH_WORD.findall(text) if _MONTHS[m.lower()] >= SMALLEST_COMPARED}
    return found


def _shown(values: Iterable[Decimal]) -> list[str]:
    return [f"{v:f}" for v in sorted(values)]


def number_problems(source: str, translation: str, source_language: str, target_language: str) -> list[str]:
    """What is wrong with the numbers of `translation` of `source`: numbers
    missing from it and numbers added, each named; empty when they agree."""
    stated, translated = number_values(source, source_language), number_values(translation, target_language)
    problems = []
    missing, added = stated - translated, translated - stated
    if missing:
        problems.append(f"{', '.join(_shown(missing))} missing")
    if added:
        problems.append(f"{', '.join(_shown(added))} added")
    return problems
