"""Stopping a reply that has begun to repeat itself.

Small models fall into loops: the same words over and over ("déjà déjà déjà"),
the same sentence opening with a new ending each time ("You can return an item
within 2 days. You can return an item within 5 days."), the same line of code,
or one character repeated to the token limit. A `RepetitionGuard` reads a reply
as it streams, lets through what is safe, holds back text that may turn out to
be the start of a loop, and when a loop is certain, says where the reply should
end: the repeated tail is never shown.

The text is read as units: words (runs of letters and digits) and CJK
characters, a CJK character counting as half a word (16 of them weigh as much
as 8 words). Punctuation is not a unit, nor is a list item's or heading's
numbering ("12."). The rules, chosen from measurements on
benchmarks/data/quality (benchmarks/README.md, "Repetition"):

1. span: a span of SPAN_UNITS (8) units occurs again.
2. opening: a sentence of prose opens with the same OPENING_UNITS (5) units as
   an earlier one, or a line shorter than that is an earlier line again. List
   items and headings get LIST_OPENING_UNITS (6) and may share an opening once
   ("You can pay by card." / "You can pay by transfer.").
3. run: one character (not a space) repeated RUN_CHARS (16) times in a row.
   In "strict" mode also: a sentence of prose of at least OPENING_UNITS units
   that is, word for word, earlier text again ("I'm sorry, I'm unable to
   provide that answer. I'm unable to provide that answer."), however short.
4. line: code and tables are exempt from rules 1-3 (similar lines are normal
   there); instead the same line as written (of at least 3 units) may not
   come a CODE_LINE_REPEATS-th (5th) time, in strict mode a
   STRICT_CODE_LINE_REPEATS-th (3rd) time, and a table row not twice.

In "strict" mode (summaries, translations, answers) any repeat counts. In
"loops" mode (chat) only a repeat of recent text counts: after LOOP_NOVELTY new
units a repeat starts counting afresh, so a song's refrain or a restated
sentence may come back, and a prose line may come back once more. `allowed` raises
how many times anything may occur: a translation of a text that itself repeats
a sentence three times may repeat it three times (`repeats_in`).
"""

from __future__ import annotations

import re
import sys
from collections import deque

SPAN_UNITS = 8
OPENING_UNITS = 5
LIST_OPENING_UNITS = 6
RUN_CHARS = 16
CODE_LINE_REPEATS = 5
STRICT_CODE_LINE_REPEATS = 3
CODE_LINE_UNITS = 3
LOOP_NOVELTY = 12
# A span of this weight seen before makes what follows suspect: text from the
# start of its sentence is held back until the repeat breaks off or trips rule 1.
SUSPECT_UNITS = 2
# A line shorter than an opening counts as one for rule 2 from this weight on.
SHORT_LINE_UNITS = 2
# Characters a line's start must have before it is read (unless _PROSE_START
# says what it is): enough to tell "12. item" from "12 items" and "4.90" from
# "4. item". Past its start a line is read as it comes.
_LOOKAHEAD = 4
# A line made of one character only (a rule, a setext underline) may be long.
_RULE_LINE_CHARS = 200

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# How a line that can only be prose begins: a word and a space, or a CJK character.
_PROSE_START = re.compile(rf"[{_CJK_RANGES}]|[^\W_]+[^\S\n]")
# Words and white space: what a reply may begin with and show before it is read.
_PLAIN = re.compile(r"(?:[^\W_]|\s)*")
_ITEM = re.compile(
    rf"(?P<nl>\n)|(?P<space>[^\S\n]+)|(?P<cjk>[{_CJK_RANGES}])|(?P<word>[^\W_{_CJK_RANGES}]+)|(?P<mark>.)",
    re.DOTALL,
)
_SENTENCE_END = ".!?"
_CJK_SENTENCE_END = "。！？；"
_CLOSERS = "\"')]}»”’」』"
_FENCE = re.compile(r"[ \t]*(```|~~~)")
_TABLE = re.compile(r"[ \t]*\|")
# A heading's marks and its own numbering ("## 3. Setup") are not its words.
_HEADING = re.compile(r"[ \t]*#{1,6}(?:[ \t]+\d{1,3}[.)、])?(?:[ \t]+|$)")
_LIST_ITEM = re.compile(r"[ \t]*([-*+•]|\d{1,3}[.)、]|[a-zA-Z][.)])[ \t]")

Key = tuple[str, ...]


class RepetitionGuard:
    """Feed a reply's pieces in order; each `feed` returns the text that may be
    shown now. Once `tripped` names a rule ("span", "opening", "run", "line"),
    the reply should stop: later pieces are ignored. `finish` returns what is
    still held when the reply ends normally; `flush`, when it was interrupted."""

    def __init__(self, mode: str = "strict", allowed: int = 1, span_units: float = SPAN_UNITS) -> None:
        if mode not in ("strict", "loops"):
            raise ValueError(f"unknown repetition mode {mode!r}")
        self.mode = mode
        self.allowed = max(1, allowed)
        self.span_units = span_units
        self.tripped: str | None = None
        self._text = ""
        self._read = 0  # offset of the first character not read yet
        self._shown = 0  # offset of the first character not returned yet
        self._cut = 0
        self._item_start = 0  # offset of the item being read
        # Line state.
        self._line_start = 0
        self._line_kind: str | None = None  # prose, list, heading, table, code, fence
        self._marker_end = 0  # where a list item's or heading's marker ends
        self._in_code = False
        self._line_units: list[str] = []
        # Sentence state (rule 2): its opening units so far.
        self._sentence_start: int | None = None
        self._sentence_cut = 0  # where a reply cut before this sentence ends
        self._opening: list[str] = []
        self._opening_weight = 0.0
        self._hold_opening: int | None = None
        self._end_pending = False
        # Every unit of prose so far, and the current sentence's (the "sentence" rule).
        self._prose_units: list[str] = []
        self._unit_positions: dict[str, list[int]] = {}  # where each unit occurs in _prose_units
        self._sentence_units: list[str] = []
        self._sentence_weight = 0.0
        self._sentence_from = 0  # index in _prose_units where the sentence begins
        # Keys seen (count, novelty then), and the prefixes of those that may recur.
        self._openings: dict[Key, tuple[int, int]] = {}
        self._opening_prefixes: set[Key] = set()
        self._code_lines: dict[Key, tuple[int, int]] = {}
        self._last_allowed: set[str] = set()  # code lines that may not come back
        # Units (rule 1): the latest ones as (text, weight, offset).
        self._window: deque[tuple[str, float, int]] = deque(maxlen=int(SPAN_UNITS * 2) + 1)
        self._spans: dict[Key, tuple[int, int]] = {}
        self._first_seen: dict[Key, int] = {}
        self._suspects: set[Key] = set()
        # Units seen as a span's older part: only these can begin a repeat with
        # the next unit, so only these are held back at the end of the text.
        self._may_begin_repeat: set[str] = set()
        self._latest_unit_end = 0  # where the latest unit of the window ends
        self._unit_read = False  # whether any unit (word, CJK character, number) has been read
        self._novel = 0  # units that began a span not seen before: how much new text there has been
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

    def finish(self) -> str:
        """The rest of the reply once it has ended (nothing after a trip)."""
        if self.tripped is None:
            self._read_items(final=True)
            if self.tripped is None:
                self._end_line()
            if self.tripped is None:
                self._end_sentence()
        if self.tripped is None:
            return self._release(end=len(self._text))
        return self._release()

    @property
    def pending(self) -> str:
        """Text held back, not shown yet (nothing once tripped: the repeat is cut)."""
        return "" if self.tripped is not None else self._text[self._shown :]

    @property
    def started(self) -> bool:
        """Whether any reply text went through this guard yet."""
        return bool(self._text)

    def next_part(self, separator: str = "\n\n") -> None:
        """Go on with another part of the same reply (a translation's next
        paragraph, made by another call): what came before still counts, so
        a loop across parts is caught too; `separator` is what the caller
        shows between them."""
        if self.tripped is None:
            self.finish()
        self.tripped = None
        self._text += separator
        self._read = self._shown = self._line_start = len(self._text)
        self._line_kind, self._line_units = None, []
        self._end_sentence()
        self._window.clear()
        self._run_start = self._run_sentence = None
        self._run_length = 0

    def flush(self) -> str:
        """Everything not shown yet, unchecked (the reply was interrupted)."""
        if self.tripped is not None:
            return ""
        text, self._shown = self._text[self._shown :], len(self._text)
        self._read = len(self._text)
        return text

    # ---- reading -------------------------------------------------------------

    def _read_items(self, final: bool) -> None:
        text = self._text
        position = self._read
        while position < len(text) and self.tripped is None:
            match = _ITEM.match(text, position)
            assert match is not None  # the pattern matches any character
            kind = match.lastgroup
            if kind == "word" and match.end() == len(text) and not final:
                break  # the word may go on in the next piece
            if self._line_kind is None and kind not in ("space", "nl"):
                if not final and not self._line_start_known(match.start()):
                    break  # what the line is ("12. item" or "12 items") is not known yet
                self._classify_line()
            self._item_start = match.start()
            getattr(self, f"_on_{kind}")(match)
            position = match.end()
        self._read = max(self._read, position)

    def _line_start_known(self, start: int) -> bool:
        """Whether enough of the line that begins (its first item at `start`)
        has come to say what the line is: _LOOKAHEAD characters, or a word
        and a space, or a CJK character (neither is a list's, a heading's or a
        table's mark)."""
        return len(self._text) - start > _LOOKAHEAD or bool(_PROSE_START.match(self._text, start))

    def _classify_line(self) -> None:
        line = self._text[self._line_start :]
        self._marker_end = self._line_start
        if _FENCE.match(line):
            self._line_kind = "fence"
            self._in_code = not self._in_code
        elif self._in_code:
            self._line_kind = "code"
        elif _TABLE.match(line):
            self._line_kind = "table"
        elif heading := _HEADING.match(line):
            self._line_kind = "heading"
            self._marker_end = self._line_start + heading.end()
        elif item := _LIST_ITEM.match(line):
            self._line_kind = "list"
            self._marker_end = self._line_start + item.end()
        else:
            self._line_kind = "prose"
        if self._exempt:
            self._window.clear()  # spans do not reach across exempt text

    @property
    def _exempt(self) -> bool:
        """Exempt from rules 1-3 (rule 4 watches these lines instead)."""
        return self._line_kind in ("fence", "code", "table")

    def _on_nl(self, match: re.Match[str]) -> None:
        self._end_line()
        self._end_sentence()
        self._line_start = match.end()
        self._line_kind = None
        self._line_units = []
        self._run_length = 0

    def _on_space(self, match: re.Match[str]) -> None:
        if self._end_pending:
            self._end_sentence()
        self._run_length = 0

    def _on_mark(self, match: re.Match[str]) -> None:
        char = match.group()
        if self._exempt:
            self._hold_code_line(match.end())
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
        self._unit_read = True
        self._end_pending = False
        self._run_length = 0
        start, unit = match.start(), match.group().lower()
        if start < self._marker_end:
            return  # "12." numbers the item: counting it would make every item new
        self._line_units.append(unit)
        if self._exempt:
            self._hold_code_line(match.end())
            return
        self._check_opening(unit, weight, start)
        if self._line_kind == "prose":
            self._unit_positions.setdefault(unit, []).append(len(self._prose_units))
            self._prose_units.append(unit)
            self._sentence_units.append(unit)
            self._sentence_weight += weight
        if self.tripped is None:
            self._check_span(unit, weight, start, match.end())

    def _end_sentence(self) -> None:
        self._check_sentence()
        self._sentence_units, self._sentence_weight = [], 0.0
        self._sentence_from = len(self._prose_units)
        self._sentence_start = None
        self._opening, self._opening_weight = [], 0.0
        self._hold_opening = None
        self._end_pending = False

    def _end_line(self) -> None:
        """Rule 2 for a line shorter than an opening, rule 4 for code lines."""
        kind, units = self._line_kind, tuple(self._line_units)
        if self._exempt:
            self._check_code_line(units)
        elif kind in ("prose", "list", "heading") and self._sentence_start is not None:
            size = OPENING_UNITS if kind == "prose" else LIST_OPENING_UNITS
            if SHORT_LINE_UNITS <= self._opening_weight < size:
                self._check_opening_key(("line", *self._opening), kind)

    # ---- rule 2: openings ----------------------------------------------------

    def _check_opening(self, unit: str, weight: float, start: int) -> None:
        if self._sentence_start is None:
            self._sentence_start = start
            # A sentence that begins its line is cut whole, marker and indentation included.
            at_line_start = not self._text[self._marker_end : start].strip()
            self._sentence_cut = self._line_start if at_line_start else start
        kind = self._line_kind
        size = OPENING_UNITS if kind == "prose" else LIST_OPENING_UNITS
        if kind not in ("prose", "list", "heading") or self._opening_weight >= size:
            return
        self._opening.append(unit)
        self._opening_weight += weight
        key = (kind, *self._opening)
        if self._opening_weight < size:
            # Held while it may still become a repeated opening or a repeated short line.
            suspect = key in self._opening_prefixes or ("line", *self._opening) in self._opening_prefixes
            self._hold_opening = self._sentence_cut if suspect else None
            return
        self._hold_opening = None
        self._check_opening_key(key, kind)

    def _check_opening_key(self, key: Key, kind: str | None) -> None:
        # A list's items or headings may share an opening once; where only loops
        # are stopped, any line may come back once more (a song's repeated line).
        allowed = self.allowed + (kind != "prose") + (self.mode == "loops")
        if self._repeats(self._openings, key, allowed):
            self._trip("opening", self._sentence_cut)
            return
        self._opening_prefixes.update(key[:size] for size in range(2, len(key) + 1))
        self._opening_prefixes.update(("line", *key[1:size]) for size in range(2, len(key) + 1))

    def _check_sentence(self) -> None:
        """The "sentence" rule of rule 3 (strict mode): a whole sentence of
        prose that is earlier text again, however short."""
        if self.mode != "strict" or self.tripped is not None or self._sentence_start is None:
            return
        units = self._sentence_units
        if self._sentence_weight < OPENING_UNITS or not units:
            return
        prose, size, begins = self._prose_units, len(units), self._sentence_from
        seen = sum(
            1 for i in self._unit_positions.get(units[0], ()) if i + size <= begins and prose[i : i + size] == units
        )
        if seen + 1 > self.allowed:
            self._trip("sentence", self._sentence_cut)

    # ---- rule 4: lines of code and tables ------------------------------------

    def _line_text(self, end: int | None = None) -> str:
        """The current line up to the item being read (or `end`), spaces collapsed."""
        return " ".join(self._text[self._line_start : self._item_start if end is None else end].split())

    def _hold_code_line(self, unit_end: int) -> None:
        """Hold a line that may become one repeat too many (see _check_code_line)."""
        text = self._line_text(unit_end)
        self._hold_opening = self._line_start if any(line.startswith(text) for line in self._last_allowed) else None

    def _check_code_line(self, units: Key) -> None:
        """Code lines are compared as written ("f(1)" and "f(-1)" differ); a
        table's rows in strict mode may not repeat at all."""
        self._hold_opening = None
        if len(units) < CODE_LINE_UNITS:
            return
        line = self._line_text()
        if self.mode == "strict":  # a summary or an answer has no business repeating a line of code
            allowed = self.allowed * (1 if self._line_kind == "table" else STRICT_CODE_LINE_REPEATS - 1)
        else:
            allowed = self.allowed * (CODE_LINE_REPEATS - 1)
        if self._repeats(self._code_lines, ("code", line), allowed):
            self._trip("line", self._line_start)
        elif self._code_lines[("code", line)][0] == allowed:  # one more trips: hold the next such line
            self._last_allowed.add(line)

    # ---- rule 1: spans -------------------------------------------------------

    def _check_span(self, unit: str, weight: float, start: int, end: int) -> None:
        window = self._window
        window.append((unit, weight, start))
        self._latest_unit_end = end
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
                self._may_begin_repeat.update(suspect[1:])  # a key lists the newest unit first
                self._novel += 1
        span, span_start = _suffix(window, self.span_units)
        if span is None:
            return
        first = self._first_seen.setdefault(span, span_start)
        if self._repeats(self._spans, span, self.allowed):
            repeat = min(span_start, self._run_start if self._run_start is not None else span_start)
            run_sentence = self._run_sentence
            if run_sentence is not None and first < run_sentence and run_sentence >= self._shown:
                self._trip("span", run_sentence)  # end with the last whole sentence before the repeat
            else:  # the loop is inside one sentence, or its start is out already: keep one round
                self._trip("span", repeat)

    def _repeats(self, seen: dict[Key, tuple[int, int]], key: Key, allowed: int) -> bool:
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
            text = self._text[self._shown : self._cut].rstrip()
            self._shown = max(self._shown, self._cut)
            return text
        if end is None and not self._unit_read:
            # Every hold but a run of one mark needs a unit read before it, so
            # until the first one is read (its word may go on, its line may be
            # "12. item" or "12 items") the words and spaces that have come are
            # shown: a reply's first token at once.
            plain = _PLAIN.match(self._text)
            end = plain.end() if plain else 0
        elif end is None:
            end = self._read
            # The latest units may combine with the next one into a suspect span
            # if the latest has begun one before. Otherwise only what follows
            # the latest unit is held (a repeat starting with the next unit is
            # cut where its sentence or line starts): a reply's first words
            # reach the reader one token after they are made, not three.
            if not self._window:
                latest = None
            elif self._window[-1][0] in self._may_begin_repeat:
                latest = _suffix(self._window, SUSPECT_UNITS - 0.5)[1]
            elif self._window[-1][2] == self._sentence_start and self._suspects:
                # A sentence's first word: if the next begins a repeat, the cut
                # is where the sentence starts ("So" in "…purchase. So you can
                # return…" would be left dangling). The reply's first is shown.
                latest = self._sentence_start
            else:
                latest = self._latest_unit_end
            for held in (self._hold_opening, self._run_sentence, latest):
                if held is not None:
                    end = min(end, held)
        end = max(end, self._shown)
        text = self._text[self._shown : end]
        self._shown = end
        return text


def _suffix(window: deque[tuple[str, float, int]], weight: float) -> tuple[Key | None, int]:
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


def repeats_in(text: str) -> int:
    """How many times `text` itself repeats its most repeated span or opening (at
    least 1): a reply rendering `text` (a translation, a proofread copy) may
    repeat what it repeats. Spans of half the guard's length are counted, as a
    translation may take twice the words ("Step 2: check the cable" /
    "Étape 2 : vérifiez le câble qui relie la box")."""
    guard = RepetitionGuard(allowed=sys.maxsize, span_units=SPAN_UNITS / 2)
    guard.feed(text)
    guard.finish()
    counts = [count for count, _ in (*guard._spans.values(), *guard._openings.values())]
    return max(counts, default=1)
