"""Translating text of any length while keeping its Markdown structure.

The text is cut into blocks: fenced code blocks are kept verbatim and never sent
to the model; everything else is grouped into chunks that fit the context
(whole paragraphs and lists where possible) and translated chunk by chunk,
streaming. Blank lines between blocks are reproduced as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from chatllm.engine.base import GenerationParams
from chatllm.jobs.chunking import split_to_budget
from chatllm.jobs.metering import Meter
from chatllm.jobs.prompting import task_messages
from chatllm.jobs.summarize import input_budget
from chatllm.templates import Template

FENCE = re.compile(r"^(```|~~~)")


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
) -> Iterator[str]:
    engine = meter.engine
    # A translation is about as long as its source, so the input gets half of
    # what is left after the prompt.
    budget = max(32, input_budget(engine, template, values, params, system) // 2)
    chunk_params = params if params.max_tokens else _with_limit(params, budget * 2)
    for index, block in enumerate(split_blocks(text)):
        if index:
            yield "\n"  # the line break split_blocks cut at
        body = block.text.strip("\n")
        if not block.translate or not body.strip():
            yield block.text
            continue
        yield block.text[: len(block.text) - len(block.text.lstrip("\n"))]
        for number, chunk in enumerate(split_to_budget(body, budget, engine.count_tokens)):
            if number:
                yield "\n\n"
            pieces = meter.stream(task_messages(template, values, chunk, system), chunk_params)
            yield from _strip_surrounding_whitespace(pieces)
        yield block.text[len(block.text.rstrip("\n")) :]


def _with_limit(params: GenerationParams, max_tokens: int) -> GenerationParams:
    from dataclasses import replace

    return replace(params, max_tokens=max_tokens)


def _strip_surrounding_whitespace(pieces: Iterator[str]) -> Iterator[str]:
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
