"""Keeping numbers a reply states to the ones its source contains.

A small model summarizing a text or answering from a knowledge file readily
writes numbers that are in neither ("announced on Monday, with 12 new
stations"): dates, prices, counts that look right and are not. A
`GroundingFilter` reads the reply sentence by sentence, as it streams, and
drops every sentence that states a number its source does not contain, so what
the user reads is grounded in what the model was given. It cannot tell a right
sentence from a wrong one without numbers; it only removes the kind of
invention that can be checked.

A number is kept when it occurs in the source as a number or inside one (a
year inside a date); "1,200" and "1200" are the same number; a date's month
and day count without their zeros ("2026-03-01" restated as "March 1,
2026"); digits inside a
word ("B2B", "mp3") are not a number. A list item's own
marker ("3.") is not a number the item states.
"""

from __future__ import annotations

import re

# A number stands on its own or follows a symbol ("£23.4"); digits inside a word
# ("B2B", "mp3") are not a number the sentence states.
# (A CJK character may touch a number: "收货后45天内".)
_NUMBER = re.compile(r"(?<![0-9A-Za-z\u00c0-\u024f])\d+(?:[.,]\d+)*")
# A sentence ends at . ! ? followed by a space, at CJK end punctuation, or at a line break.
SENTENCE_END = re.compile(r"[.!?][\"')\]»”’]*[ \t]+|[。！？；]|\n")
# A sentence whose end is the last thing in the reply (no space after it yet).
_FINISHED = re.compile(r"[.!?。！？][\"')\]»”’]*\s*$")
_LIST_MARKER = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)、])[ \t]+")
# A line that only titles what follows: a Markdown heading, or a bold line.
_HEADING = re.compile(r"[ \t]*(?:#{1,6}[ \t]+\S.*|\*\*[^*\n]+\*\*:?[ \t]*)\n")


def normal_number(number: str) -> str:
    """'1,200' and '1.200' (thousands) as '1200'; '4,70' and '4.70' as '4.7'."""
    if re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+", number):
        return re.sub(r"[.,]", "", number)
    number = number.replace(",", ".")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number


# A date as tools and documents write it: 2026-03-01, 2026/3/1, 01.03.2026, 1/3/2026.
_DATE = re.compile(r"(?<!\d)(?:(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})|(\d{1,2})[-/.](\d{1,2})[-/.](\d{4}))(?!\d)")


def date_parts(source: str) -> set[str]:
    """The months and days of `source`'s dates without their zeros: a reply
    may restate "2026-03-01" as "March 1, 2026"."""
    return {str(int(part)) for match in _DATE.finditer(source) for part in match.groups() if part}


class GroundingFilter:
    """Feed a reply's pieces; each `feed` returns the sentences that may be shown
    now (whole sentences only: a sentence is held until it ends), `finish` the
    rest. `dropped` counts the sentences left out. A heading is shown with the
    first sentence under it, so a reply that ends (or is cut) right after a
    heading does not end in a title with nothing under it."""

    def __init__(self, source: str) -> None:
        self._numbers = {normal_number(n) for n in _NUMBER.findall(source)} | date_parts(source)
        self._digits = " " + " ".join(re.findall(r"\d+", source)) + " "
        self._held = ""
        self._heading = ""  # a heading (and blank lines) waiting for a sentence under it
        self._at_line_start = True
        self.dropped = 0
        self.kept = 0

    def grounded(self, sentence: str, at_line_start: bool = True) -> bool:
        """Whether every number `sentence` states occurs in the source."""
        text = sentence
        if at_line_start:
            marker = _LIST_MARKER.match(text)
            if marker:
                text = text[marker.end() :]
        for number in _NUMBER.findall(text):
            if normal_number(number) not in self._numbers and f" {normal_number(number)} " not in self._digits:
                return False
        return True

    def feed(self, piece: str) -> str:
        self._held += piece
        shown = []
        while True:
            start = 0
            if self._at_line_start:  # "1. " opens a list item; it ends no sentence
                marker = _LIST_MARKER.match(self._held)
                start = marker.end() if marker else 0
            end = SENTENCE_END.search(self._held, start)
            if end is None:
                break
            sentence, self._held = self._held[: end.end()], self._held[end.end() :]
            shown.append(self._under_heading(sentence))
        return "".join(shown)

    def _under_heading(self, sentence: str) -> str:
        """The judged sentence, with the heading before it; a heading (or a blank
        line after one) is held for the next sentence."""
        at_line_start = self._at_line_start
        kept = self._judge(sentence)
        if at_line_start and _HEADING.fullmatch(kept) or self._heading and not kept.strip():
            self._heading += kept
            return ""
        if kept.strip():
            kept, self._heading = self._heading + kept, ""
        return kept

    @property
    def pending(self) -> str:
        """What is held, not yet judged: a heading and the sentence being written."""
        return self._heading + self._held

    def discard_unfinished(self) -> None:
        """Leave out the sentence being held (a reply cut in the middle of it),
        unless its end was the reply's last token."""
        if not _FINISHED.search(self._held):
            self._held = ""

    def finish(self) -> str:
        """The last sentence, if it may be shown; a heading still waiting for
        one is left out."""
        sentence, self._held = self._held, ""
        shown = self._under_heading(sentence) if sentence else ""
        self._heading = ""
        return shown

    def _judge(self, sentence: str) -> str:
        at_line_start = self._at_line_start
        self._at_line_start = sentence.endswith("\n")
        # Code is judged too: a summary or an answer has no business inventing
        # numbers in a code block either.
        if not sentence.strip() or self.grounded(sentence, at_line_start):
            if sentence.strip():
                self.kept += 1
            return sentence
        self.dropped += 1
        # A dropped list item or line takes its line break with it; a dropped
        # sentence inside a paragraph keeps the paragraph's line break.
        return "" if at_line_start or not sentence.endswith("\n") else "\n"
