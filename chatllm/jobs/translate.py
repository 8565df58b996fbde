"""Translating text of any length while keeping its Markdown structure.

The text is cut into blocks: fenced code blocks are kept verbatim and never sent
to the model; everything else is translated paragraph by paragraph (a list or
a heading is a paragraph too), streaming. Blank lines between blocks are
reproduced as they were. Each paragraph's translation is bounded by a multiple
of its own tokens (`translation_bound`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from chatllm.engine.base import GenerationParams, Stream
from chatllm.errors import EngineError
from chatllm.jobs.chunking import split_paragraphs, split_to_budget
from chatllm.jobs.metering import Meter
from chatllm.jobs.prompting import input_budget, task_messages
from chatllm.jobs.repetition import RepetitionGuard, repeats_in
from chatllm.templates import Template

FENCE = re.compile(r"^(```|~~~)")
# A chunk's translation may take this many times the chunk's tokens, plus a
# little: measured on benchmarks/data/quality's references with SmolLM2's
# English-first tokenizer, a translation took up to 2.0x its source's tokens
# into French and 2.9x into Chinese. More than that is a model writing
# something other than the translation (in practice, a loop).
GROWTH = {"cjk": 3.5, "other": 2.5}
GROWTH_SLACK = 16
_CJK_TARGETS = ("chinese", "japanese", "korean", "中文", "日本語", "한국어")


def translation_bound(source_tokens: int, target: str) -> int:
    """The most tokens the translation of a chunk of `source_tokens` may take."""
    growth = GROWTH["cjk"] if any(name in target.lower() for name in _CJK_TARGETS) else GROWTH["other"]
    return int(growth * source_tokens) + GROWTH_SLACK


@dataclass(frozen=True)
class Block:
    text: str
    translate: bool


def split_blocks(text: str) -> list[Block]:
    """Alternating prose and fenced-code blocks, in order, covering all lines."""
    blocks: list[Block] = []
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        marker = FENCE.match(line.lstrip())
        if fence is None and marker:
            if prose:
                blocks.append(Block("\n".join(prose), True))
                prose = []
            fence = marker.group(1)
            code = [line]
        elif fence is not None:
            code.append(line)
            if line.strip().startswith(fence) and len(code) > 1:
                blocks.append(Block("\n".join(code), False))
                fence, code = None, []
        else:
            prose.append(line)
    if code:  # an unclosed fence: keep it as code
        blocks.append(Block("\n".join(code), False))
    if prose:
        blocks.append(Block("\n".join(prose), True))
    return blocks


def translate(
    meter: Meter,
    template: Template,
    values: dict[str, str],
    text: str,
    params: GenerationParams,
    system: str | None = None,
) -> Stream:
    engine = meter.engine
    target = values.get("to", "")
    if params.max_tokens is not None:
        budget = input_budget(engine, template, values, params, system)
    else:  # a chunk and its translation's bound must fit in the context together
        overhead = engine.count_prompt_tokens(task_messages(template, values, "", system)) + GROWTH_SLACK + 8
        growth = translation_bound(1000, target) / 1000
        budget = int((engine.context_size - overhead) / (1 + growth))
        if budget < 32:
            raise EngineError(
                f"the context ({engine.context_size} tokens) is too small to translate with; use a larger --ctx"
            )
    # One guard for the whole translation: a loop from paragraph to paragraph is
    # a loop too. A translation may repeat what its source repeats.
    guard = RepetitionGuard(mode=meter.repetition, allowed=repeats_in(text)) if meter.repetition != "off" else None
    for index, block in enumerate(split_blocks(text)):
        if index:
            yield "\n"  # the line break split_blocks cut at
        body = block.text.strip("\n")
        if not block.translate or not body.strip():
            yield block.text
            continue
        yield block.text[: len(block.text) - len(block.text.lstrip("\n"))]
        # Paragraph by paragraph: a small model translates a paragraph far better
        # than a page (benchmarks/README.md, "Quality"); a paragraph too long for
        # the context goes in parts, cut between sentences.
        for number, paragraph in enumerate(split_paragraphs(body)):
            if number:
                yield "\n\n"
            for part, chunk in enumerate(split_to_budget(paragraph, budget, engine.count_tokens)):
                if part:
                    yield " "
                chunk_params = params
                if params.max_tokens is None:
                    chunk_params = replace(params, max_tokens=translation_bound(engine.count_tokens(chunk), target))
                if guard is not None and guard.started:
                    guard.next_part()
                pieces = meter.stream(task_messages(template, values, chunk, system), chunk_params, guard=guard)
                yield from _strip_surrounding_whitespace(pieces)
        yield block.text[len(block.text.rstrip("\n")) :]


def _strip_surrounding_whitespace(pieces: Stream) -> Stream:
    """The model's pieces without leading or trailing whitespace, still streaming
    (trailing whitespace is held back until more text follows it)."""
    started = False
    held = ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        text = held + piece
        stripped = text.rstrip()
        held = text[len(stripped) :]
        if stripped:
            yield stripped
