"""Stopping a reply that has begun to repeat itself.

Small models fall into loops: the same words over and over ("déjà déjà déjà"),
the same sentence opening with a new ending each time ("You can return an item
within 2 days. You can return an item within 5 days."), or one character
repeated to the token limit. A `RepetitionGuard` reads a reply as it streams,
lets through what is safe, holds back text that may turn out to be the start of
a loop, and when a loop is certain, says where the reply should end: the
repeated tail is never shown.

The text is read as units: words (runs of letters and digits) and CJK
characters, a CJK character counting as half a word (16 of them weigh as much
as 8 words). Punctuation is not a unit. The rules, chosen from measurements on
benchmarks/data/quality (see benchmarks/README.md, "Repetition"):

1. span: a span of SPAN_UNITS (8) units occurs again. The reply ends where the
   repeat began.
2. opening: a sentence of prose opens with the same OPENING_UNITS (5) units as an
   earlier sentence. The reply ends before that sentence.
3. run: one character (not a space) repeated RUN_CHARS (16) times in a row. The
   reply ends before the run.

Fenced code and table rows are exempt from all three; list items and headings
are exempt from rule 2 (list items that start alike are normal). `allowed`
raises how many times a span or opening may occur: a translation of a text that
itself repeats a sentence three times may repeat it three times.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from typing import Callable, Iterator

SPAN_UNITS = 8
OPENING_UNITS = 5
LIST_OPENING_UNITS = 6
LOOP_NOVELTY = 12
RUN_CHARS = 16
# A span of this weight seen before makes what follows suspect: text from the
# start of that span is held back until the repeat breaks off or trips rule 1.
SUSPECT_UNITS = 2
# Characters at the end of the text not read yet: enough to tell "4.90" from the
# end of a sentence and "12. item" from "12 items".
_LOOKAHEAD = 4
# A line made of one character only (a rule, a setext underline) may be long.
_RULE_LINE_CHARS = 200

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_ITEM = re.compile(
    rf"(?P<nl>\n)|(?P<space>[^\S\n]+)|(?P<cjk>[{_CJK_RANGES}])|(?P<word>[^\W_{_CJK_RANGES}]+)|(?P<mark>.)",
    re.DOTALL,
)
_SENTENCE_END = ".!?"
_CJK_SENTENCE_END = "。！？；"
_CLOSERS = "\"')]}»”’」』"
_FENCE = re.compile(r"[ \t]*(```|~~~)")
_TABLE = re.compile(r"[ \t]*\|")
_HEADING = re.compile(r"[ \t]*#{1,6}(\s|$)")
_LIST_ITEM = re.compile(r"[ \t]*([-*+•]|\d{1,3}[.)、]|[a-zA-Z][.)])[ \t]")


class RepetitionGuard:
    """Feed a reply's pieces in order; each `feed` returns the text that may be
    shown now. Once `tripped` names a rule ("span", "opening", "run"), the reply
    should stop: later pieces are ignored. `finish` returns what is still held
    when the reply ends normally."""

    def __init__(self, mode: str = "strict", allowed: int = 1) -> None:
        if mode not in ("strict", "loops"):
            raise ValueError(f"unknown repetition mode {mode!r}")
        self.mode = mode
        self.allowed = max(1, allowed)
        self.tripped: str | None = None
        self._text = ""
        self._read = 0  # offset of the first character not read yet
        self._shown = 0  # offset of the first character not returned yet
        # Line state.
        self._line_start = 0
        self._line_kind: str | None = None  # prose, list, heading, table, code, fence
        self._marker_end = 0  # where a list item's marker ("-", "12.") ends
        self._in_code = False
        # Sentence state (rule 2).
        self._sentence_start: int | None = None
        self._opening: list[str] = []
        self._opening_weight = 0.0
        self._openings: dict[tuple[str, ...], tuple[int, int]] = {}  # key -> (count, novelty then)
        self._opening_prefixes: set[tuple[str, ...]] = set()
        self._sentence_cut = 0
        self._hold_opening: int | None = None
        self._end_pending = False
        # Units (rule 1): the latest ones as (text, weight, offset).
        self._window: deque[tuple[str, float, int]] = deque(maxlen=int(SPAN_UNITS * 2) + 1)
        self._spans: dict[tuple[str, ...], tuple[int, int]] = {}
        self._suspects: set[tuple[str, ...]] = set()
        # Units that began a span not seen before: how much new text there has been.
        self._novel = 0
        # Where the current repeat began, and the start of its sentence.
        self._run_start: int | None = None
        self._run_sentence: int | None = None
        # Character runs (rule 3).
        self._run_char = ""
        self._run_length = 0
        self._run_from = 0

    # ---- the interface -------------------------------------------------------

    def feed(self, piece: str) -> str:
        if self.tripped is not None or not piece:
            return ""
        self._text += piece
        self._read_items(final=False)
        return self._release()

    def flush(self) -> str:
        """Everything not shown yet, unchecked (the reply was interrupted)."""
        if self.tripped is not None:
            return ""
        text, self._shown = self._text[self._shown :], len(self._text)
        self._read = len(self._text)
        return text

    def finish(self) -> str:
        """The rest of the reply once it has ended (nothing after a trip)."""
        if self.tripped is None:
            self._read_items(final=True)
        if self.tripped is None:
            self._hold_opening = self._run_sentence = None
            return self._release(end=len(self._text))
        return ""

    # ---- reading -------------------------------------------------------------

    def _read_items(self, final: bool) -> None:
        text = self._text
        limit = len(text) if final else len(text) - _LOOKAHEAD
        position = self._read
        while position < limit and self.tripped is None:
            match = _ITEM.match(text, position)
            assert match is not None  # the pattern matches any character
            kind = match.lastgroup
            if kind == "word" and match.end() == len(text) and not final:
                break  # the word may go on in the next piece
            if self._line_kind is None and kind not in ("space", "nl"):
                self._classify_line(match.start())
            getattr(self, f"_on_{kind}")(match)
            position = match.end()
        self._read = max(self._read, position)

    def _classify_line(self, start: int) -> None:
        line = self._text[self._line_start :]
        if _FENCE.match(line):
            self._line_kind = "fence"
            self._in_code = not self._in_code
        elif self._in_code:
            self._line_kind = "code"
        elif _TABLE.match(line):
            self._line_kind = "table"
        elif _HEADING.match(line):
            self._line_kind = "heading"
        elif marker := _LIST_ITEM.match(line):
            self._line_kind = "list"
            self._marker_end = self._line_start + marker.end()
        else:
            self._line_kind = "prose"
        if self._line_kind in ("fence", "code", "table"):
            self._window.clear()  # spans do not reach across exempt text

    @property
    def _exempt(self) -> bool:
        return self._line_kind in ("fence", "code", "table")

    def _on_nl(self, match: re.Match[str]) -> None:
        self._end_sentence()
        self._line_start = match.end()
        self._line_kind = None
        self._run_length = 0

    def _on_space(self, match: re.Match[str]) -> None:
        if self._end_pending:
            self._end_sentence()
        self._run_length = 0

    def _on_mark(self, match: re.Match[str]) -> None:
        char = match.group()
        if char == self._run_char and self._run_length and match.start() == self._run_from + self._run_length:
            self._run_length += 1
        else:
            self._run_char, self._run_length, self._run_from = char, 1, match.start()
        if self._run_length >= RUN_CHARS and not self._exempt:
            only_this = not self._text[self._line_start : self._run_from].strip()
            if not only_this or self._run_length >= _RULE_LINE_CHARS:
                self._trip("run", self._run_from)
                return
        if char in _CJK_SENTENCE_END:
            self._end_sentence()
        elif char in _SENTENCE_END:
            self._end_pending = True
        elif char not in _CLOSERS:
            self._end_pending = False

    def _on_cjk(self, match: re.Match[str]) -> None:
        self._on_unit(match, 0.5)

    def _on_word(self, match: re.Match[str]) -> None:
        self._on_unit(match, 1.0)

    def _on_unit(self, match: re.Match[str], weight: float) -> None:
        self._end_pending = False
        self._run_length = 0
        if self._exempt:
            return
        start, unit = match.start(), match.group().lower()
        if self._line_kind == "list" and start < self._marker_end:
            return  # "12." numbers the item: counting it would make every item new
        self._check_opening(unit, weight, start)
        if self.tripped is None:
            self._check_span(unit, weight, start)

    def _end_sentence(self) -> None:
        self._sentence_start = None
        self._opening, self._opening_weight = [], 0.0
        self._hold_opening = None
        self._end_pending = False

    # ---- rule 2: openings ----------------------------------------------------

    def _check_opening(self, unit: str, weight: float, start: int) -> None:
        if self._sentence_start is None:
            self._sentence_start = start
            # A list item or a line is cut whole, marker and indentation included.
            at_line_start = not self._text[self._marker_end if self._line_kind == "list" else self._line_start : start].strip()
            self._sentence_cut = self._line_start if at_line_start else start
        size = LIST_OPENING_UNITS if self._line_kind == "list" else OPENING_UNITS
        if self._line_kind not in ("prose", "list") or self._opening_weight >= size:
            return
        self._opening.append(unit)
        self._opening_weight += weight
        key = (self._line_kind, *self._opening)
        if self._opening_weight < size:
            self._hold_opening = self._sentence_cut if key in self._opening_prefixes else None
            return
        self._hold_opening = None
        # Items of a list may share an opening once ("You can pay by card" /
        # "You can pay by transfer"); a third is a loop. Where loops are all
        # that is stopped, a line may come back once more (a song's repeated line).
        allowed = self.allowed + (self._line_kind == "list") + (self.mode == "loops")
        if self._repeats(self._openings, key, allowed):
            self._trip("opening", self._sentence_cut)
            return
        self._opening_prefixes.update(key[:size] for size in range(2, len(key)))

    # ---- rule 1: spans -------------------------------------------------------

    def _check_span(self, unit: str, weight: float, start: int) -> None:
        window = self._window
        window.append((unit, weight, start))
        suspect, suspect_start = _suffix(window, SUSPECT_UNITS)
        if suspect is not None:
            if suspect in self._suspects:
                if self._run_start is None:
                    self._run_start = suspect_start
                    # Held from the start of its sentence, so that a reply cut
                    # here can end with a whole sentence or list item.
                    sentence = self._sentence_cut if self._sentence_start is not None else suspect_start
                    self._run_sentence = min(suspect_start, sentence)
            else:
                self._run_start = self._run_sentence = None
                self._suspects.add(suspect)
                self._novel += 1
        span, span_start = _suffix(window, SPAN_UNITS)
        if span is not None and self._repeats(self._spans, span, self.allowed):
            if self._run_start is None or self._run_sentence is None:
                self._trip("span", span_start)
            elif self._run_sentence >= self._shown:
                self._trip("span", self._run_sentence)
            else:  # the sentence's start is out already: keep one round of the loop
                self._trip("span", min(span_start, self._run_start))

    def _repeats(self, seen: dict[tuple[str, ...], tuple[int, int]], key: tuple[str, ...], allowed: int) -> bool:
        """Count one more occurrence of `key`; whether that is more than `allowed`.
        In "loops" mode an occurrence after LOOP_NOVELTY new units counts as a
        first one again: a refrain after a verse is not a loop."""
        count, novel_then = seen.get(key, (0, 0))
        if count and self.mode == "loops" and self._novel - novel_then >= LOOP_NOVELTY:
            count = 0
        count += 1
        seen[key] = (count, self._novel)
        return count > allowed

    # ---- output --------------------------------------------------------------

    def _trip(self, rule: str, cut: int) -> None:
        self.tripped = rule
        self._cut = max(cut, self._shown)

    def _release(self, end: int | None = None) -> str:
        if self.tripped is not None:
            end = self._cut
            text = self._text[self._shown : end].rstrip()
            self._shown = end
            return text
        if end is None:
            end = self._read
            # The latest units may combine with the next one into a suspect span.
            latest = _suffix(self._window, SUSPECT_UNITS - 0.5)[1] if self._window else None
            for held in (self._hold_opening, self._run_sentence, latest):
                if held is not None:
                    end = min(end, held)
        end = max(end, self._shown)
        text = self._text[self._shown : end]
        self._shown = end
        return text


def _suffix(window: deque[tuple[str, float, int]], weight: float) -> tuple[tuple[str, ...] | None, int]:
    """The shortest run of the latest units that weighs at least `weight`, as a
    key, and the offset where it starts; while the whole window is lighter, None
    and the offset of its first unit."""
    total = 0.0
    units: list[str] = []
    for unit, unit_weight, start in reversed(window):
        units.append(unit)
        total += unit_weight
        if total >= weight:
            return tuple(units), start
    return None, window[0][2] if window else 0


def guarded(pieces: Iterator[str], guard: RepetitionGuard, on_trip: Callable[[str], None] | None = None) -> Iterator[str]:
    """`pieces` through `guard`. When it trips, `pieces` is closed (a local
    model stops generating, a server sees the connection close) and `on_trip`
    gets the rule's name. On Ctrl-C, what the guard holds back is passed on
    before the interrupt: it is reply text the user would have seen next."""
    try:
        while True:
            try:
                piece = next(pieces)
                shown = guard.feed(piece)
            except StopIteration:
                break
            except KeyboardInterrupt:
                held = guard.flush()
                if held:
                    yield held
                raise
            if shown:
                yield shown
            if guard.tripped is not None:
                pieces.close()
                if on_trip is not None:
                    on_trip(guard.tripped)
                return
        rest = guard.finish()
        if rest:
            yield rest
    finally:
        pieces.close()


def repeats_in(text: str) -> int:
    """How many times `text` itself repeats its most repeated span or opening (at
    least 1), by the guard's own rules: a reply rendering `text` (a translation,
    a proofread copy) may repeat what it repeats."""
    guard = RepetitionGuard(allowed=sys.maxsize)
    guard.feed(text)
    guard.finish()
    counts = [count for count, _ in (*guard._spans.values(), *guard._openings.values())]
    return max(counts, default=1)
