"""Splitting long text into pieces that fit a token budget, at the most natural
boundary available: paragraphs, then sentences, then (last resort) words or
characters. Nothing is dropped: joining the chunks gives back every character
of the input apart from whitespace at the cut points.

Splitting is near-linear, so 20 MB splits in seconds: each piece is counted
once, pieces are packed by adding up their counts, and each packed chunk is
counted once more to check it (a tokenizer may count a joined text
differently from its parts). Counting every candidate again as it grew made
the whole quadratic in the chunk's length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

TokenCounter = Callable[[str], int]

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends with . ! ? or their CJK forms, followed by space or not (CJK).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")


class Chunk(NamedTuple):
    text: str
    tokens: int


def split_paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def split_to_budget(text: str, budget: int, count_tokens: TokenCounter) -> list[str]:
    """Chunks of `text`, each at most `budget` tokens, packed greedily so there are
    as few as possible."""
    return [chunk.text for chunk in split_counted(text, budget, count_tokens)]


def split_counted(text: str, budget: int, count_tokens: TokenCounter) -> list[Chunk]:
    """`split_to_budget`, with each chunk's token count."""
    if budget < 1:
        raise ValueError("budget must be positive")
    pieces: list[Chunk] = []
    for paragraph in split_paragraphs(text):
        pieces.extend(_fit(paragraph, budget, count_tokens))
    return _pack(pieces, budget, count_tokens, separator="\n\n")


def _fit(paragraph: str, budget: int, count_tokens: TokenCounter) -> list[Chunk]:
    """A paragraph as one piece, or cut at sentence (then word, then character)
    boundaries into pieces that each fit."""
    tokens = count_tokens(paragraph)
    if tokens <= budget:
        return [Chunk(paragraph, tokens)]
    sentences = [s for s in SENTENCE_END.split(paragraph) if s.strip()]
    if len(sentences) > 1:
        parts = [part for s in sentences for part in _fit(s, budget, count_tokens)]
        return _pack(parts, budget, count_tokens, separator=" " if " " in paragraph else "")
    words = [w for w in paragraph.split(" ") if w]
    if len(words) > 1:
        parts = []
        for word in words:
            tokens = count_tokens(word)
            parts.extend([Chunk(word, tokens)] if tokens <= budget else _cut_characters(word, budget, count_tokens))
        return _pack(parts, budget, count_tokens, separator=" ")
    return _cut_characters(paragraph, budget, count_tokens)


def _pack(parts: list[Chunk], budget: int, count_tokens: TokenCounter, separator: str) -> list[Chunk]:
    """`parts` (each within `budget`) joined by `separator` into as few chunks as fit."""
    chunks: list[Chunk] = []
    # Tokens of a joined chunk per token of its parts, as last counted: joining
    # words with spaces, say, can take more than the words alone.
    ratio = 1.0
    start = 0
    while start < len(parts):
        end, estimate = start + 1, parts[start].tokens
        while end < len(parts) and (estimate + parts[end].tokens) * ratio <= budget:
            estimate += parts[end].tokens
            end += 1
        while True:
            text = separator.join(part.text for part in parts[start:end])
            if end - start == 1:
                tokens = parts[start].tokens
                break
            tokens = count_tokens(text)
            ratio = tokens / max(estimate, 1)
            if tokens <= budget:
                break
            # Over: leave out parts from the end worth the excess, and count again.
            excess = (tokens - budget) / ratio
            while end - start > 1 and excess > 0:
                end -= 1
                estimate -= parts[end].tokens
                excess -= max(parts[end].tokens, 1)
        chunks.append(Chunk(text, tokens))
        start = end
    return chunks


def _cut_characters(text: str, budget: int, count_tokens: TokenCounter) -> list[Chunk]:
    chunks = []
    while text:
        cut, tokens = _fitting_prefix(text, budget, count_tokens)
        chunks.append(Chunk(text[:cut], tokens))
        text = text[cut:]
    return chunks


def _fitting_prefix(text: str, budget: int, count_tokens: TokenCounter) -> tuple[int, int]:
    """The length and tokens of a prefix of `text` within `budget`: the longest
    one, or one within 1/16 of the budget, found in a few counts. Each guess is
    where the budget would end at the rate of tokens just seen, kept inside what
    is known so that the range left shrinks by a quarter at least."""
    low, low_tokens, high = 0, 0, len(text) + 1  # text[:low] fits, text[:high] does not
    guess = min(len(text), 4 * budget)
    while True:
        tokens = count_tokens(text[:guess])
        if tokens <= budget:
            low, low_tokens = guess, tokens
        else:
            high = guess
        if high - low <= 1 or low == len(text) or low_tokens >= budget - budget // 16:
            break
        proportional = round(guess * budget / max(tokens, 1))
        if high > len(text):  # no upper bound yet: grow
            guess = min(len(text), max(proportional, low + 1))
        else:
            quarter = max((high - low) // 4, 1)
            guess = min(max(proportional, low + quarter), high - quarter)
    if low == 0:  # not even one character fits: it goes alone
        return 1, count_tokens(text[:1])
    return low, low_tokens
