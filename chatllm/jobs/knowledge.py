"""Knowledge files for personas, split into passages and searched with BM25.

Passages are Markdown sections (a heading and its text), cut further at
paragraphs when long. Tokenizing for search lower-cases words and turns CJK text
into character bigrams, so Chinese questions find Chinese passages without a
word segmenter.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatllm.inputs import read_file
from chatllm.jobs.chunking import split_to_budget

HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.MULTILINE)
WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
PASSAGE_TOKENS = 200
# Reciprocal rank fusion's constant (Cormack et al. 2009): rankings of several
# queries add up without one's scores swamping another's.
_FUSION_RANK = 60


@dataclass(frozen=True)
class Passage:
    source: str
    heading: str
    text: str
    # First and last line of the passage in its file (1-based), where known:
    # `chatllm ask` cites them.
    lines: tuple[int, int] | None = None

    def render(self) -> str:
        """The passage as the model reads it: its heading as a label, never the
        file's name, which a model copies into its answer ("contact us at
        [faq.md — Contact]"; chatllm also takes such labels out of replies,
        jobs/persona_reply.py)."""
        return f"[{self.heading}]\n{self.text}" if self.heading else self.text


def search_terms(text: str) -> list[str]:
    terms: list[str] = []
    for run in WORD.findall(text.lower()):
        for part in CJK.split(run):
            if part:
                terms.append(part)
        for cjk in CJK.findall(run):
            terms.extend(cjk[i : i + 2] for i in range(max(1, len(cjk) - 1)))
    return terms


def split_passages(text: str, source: str, count_tokens: Callable[[str], int]) -> list[Passage]:
    passages = []
    matches = list(HEADING.finditer(text))
    bounds = [(m.start(), m.group(1).strip()) for m in matches]
    if not bounds or bounds[0][0] > 0:
        bounds.insert(0, (0, ""))
    for index, (start, heading) in enumerate(bounds):
        end = bounds[index + 1][0] if index + 1 < len(bounds) else len(text)
        body = text[start:end]
        if heading:
            body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.strip()
        if not body:
            continue
        for piece in split_to_budget(body, PASSAGE_TOKENS, count_tokens):
            passages.append(Passage(source, heading, piece))
    return passages


class KnowledgeBase:
    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)
        self._index = None
        # Built by the first search; under serve --parallel, searches asked
        # meanwhile wait for it rather than read an index half built.
        self._building = threading.Lock()

    @classmethod
    def from_files(cls, paths: Sequence[Path], count_tokens: Callable[[str], int]) -> KnowledgeBase:
        passages: list[Passage] = []
        for path in paths:
            passages.extend(split_passages(read_file(path), path.name, count_tokens))
        return cls(passages)

    def full_text(self) -> str:
        return "\n\n".join(p.render() for p in self.passages)

    def search(
        self, query: str, budget_tokens: int, count_tokens: Callable[[str], int], limit: int = 8
    ) -> list[Passage]:
        """The passages most relevant to `query`, best first, that together fit
        in `budget_tokens`. Empty when nothing matches."""
        return packed([passage for passage, _ in self.ranked(query, limit)], budget_tokens, count_tokens)

    def search_each(
        self, queries: Sequence[str], budget_tokens: int, count_tokens: Callable[[str], int], limit: int = 8
    ) -> list[Passage]:
        """`search` for several wordings of one question (its translation, for
        documents in another language), their rankings fused by reciprocal rank."""
        fused: dict[int, float] = {}
        for query in queries:
            for rank, (passage, _) in enumerate(self.ranked(query, limit)):
                key = id(passage)
                fused[key] = fused.get(key, 0.0) + 1 / (_FUSION_RANK + rank)
        by_id = {id(p): p for p in self.passages}
        best = sorted(fused, key=lambda key: -fused[key])[:limit]
        return packed([by_id[key] for key in best], budget_tokens, count_tokens)

    def ranked(self, query: str, limit: int = 8) -> list[tuple[Passage, float]]:
        """Up to `limit` passages that match `query`, best first, with their BM25
        scores (each above 0)."""
        terms = search_terms(query)
        if not terms or not self.passages:
            return []
        retriever = self._retriever()
        import numpy

        try:
            results, scores = retriever.retrieve([terms], k=min(limit, len(self.passages)), show_progress=False)
        except (ValueError, KeyError):
            return []
        found = []
        for index, score in zip(numpy.asarray(results[0]).tolist(), numpy.asarray(scores[0]).tolist()):
            if score <= 0:
                break
            found.append((self.passages[index], float(score)))
        return found

    def _retriever(self):
        with self._building:
            if self._index is None:
                import bm25s

                index = bm25s.BM25()
                index.index(
                    [search_terms(p.heading + " " + p.text) or ["_"] for p in self.passages], show_progress=False
                )
                self._index = index
        return self._index


def packed(ranked: Sequence[Passage], budget_tokens: int, count_tokens: Callable[[str], int]) -> list[Passage]:
    """The passages of `ranked`, in order, that together fit in `budget_tokens`."""
    chosen, used = [], 0
    for passage in ranked:
        cost = count_tokens(passage.render()) + 2
        if used + cost > budget_tokens:
            continue
        chosen.append(passage)
        used += cost
    return chosen
