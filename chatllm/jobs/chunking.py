"""Splitting long text into pieces that fit a token budget, at the most natural
boundary available: paragraphs, then sentences, then (last resort) words or
characters. Nothing is dropped: joining the chunks gives back every character
of the input apart from whitespace at the cut points."""

from __future__ import annotations

import re
from collections.abc import Callable

TokenCounter = Callable[[str], int]

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends with . ! ? or their CJK forms, followed by space or not (CJK).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")


def split_paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def split_to_budget(text: str, budget: int, count_tokens: TokenCounter) -> list[str]:
    """Chunks of `text`, each at most `budget` tokens, packed greedily so there are
    as few as possible."""
    if budget < 1:
        raise ValueError("budget must be positive")
    pieces: list[str] = []
    for paragraph in split_paragraphs(text):
        pieces.extend(_fit(paragraph, budget, count_tokens))
    return _pack(pieces, budget, count_tokens, separator="\n\n")


def _fit(paragraph: str, budget: int, count_tokens: TokenCounter) -> list[str]:
    """A paragraph as one piece, or cut at sentence (then word, then character)
    boundaries into pieces that each fit."""
    if count_tokens(paragraph) <= budget:
        return [paragraph]
    sentences = [s for s in SENTENCE_END.split(paragraph) if s.strip()]
    if len(sentences) > 1:
        parts = [part for s in sentences for part in _fit(s, budget, count_tokens)]
        return _pack(parts, budget, count_tokens, separator=" " if " " in paragraph else "")
    words = paragraph.split(" ")
    if len(words) > 1:
        return _pack([w for w in words if w], budget, count_tokens, separator=" ", hard=True)
    return _cut_characters(paragraph, budget, count_tokens)


def _pack(parts: list[str], budget: int, count_tokens: TokenCounter, separator: str, hard: bool = False) -> list[str]:
    chunks: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{separator}{part}" if current else part
        if count_tokens(candidate) <= budget:
            current = candidate
            continue
        if current:
            chunks.append(current)
        if hard and count_tokens(part) > budget:
            cut = _cut_characters(part, budget, count_tokens)
            chunks.extend(cut[:-1])
            current = cut[-1]
        else:
            current = part
    if current:
        chunks.append(current)
    return chunks


def _cut_characters(text: str, budget: int, count_tokens: TokenCounter) -> list[str]:
    chunks = []
    while text:
        low, high = 1, len(text)
        while low < high:  # the longest prefix that fits
            middle = (low + high + 1) // 2
            if count_tokens(text[:middle]) <= budget:
                low = middle
            else:
                high = middle - 1
        chunks.append(text[:low])
        text = text[low:]
    return chunks
