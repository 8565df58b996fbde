"""Summarizing text of any length.

Input that fits the context is summarized in one call, streaming. Longer input
is split at paragraph and sentence boundaries by token count, each part is
summarized (map), and the parts' summaries are summarized together (reduce),
repeating the reduce while the summaries still do not fit. Nothing is truncated.
"""

from __future__ import annotations

from typing import Callable, Iterator

from chatllm.engine.base import Engine, GenerationParams
from chatllm.errors import EngineError
from chatllm.jobs.chunking import split_to_budget
from chatllm.jobs.metering import Meter
from chatllm.jobs.prompting import reply_reserve, task_messages
from chatllm.templates import Template

# Progress of the map steps: (parts done, parts in all).
ProgressCallback = Callable[[int, int], None]


def input_budget(engine: Engine, template: Template, values: dict[str, str], params: GenerationParams, system: str | None) -> int:
    """Tokens of input that fit in one call beside the prompt and the reply."""
    overhead = engine.count_prompt_tokens(task_messages(template, values, "", system))
    budget = engine.context_size - overhead - reply_reserve(params, engine.context_size) - 8
    if budget < 64:
        raise EngineError(
            f"the context ({engine.context_size} tokens) is too small for this template; use a larger --ctx"
        )
    return budget


def summarize(
    meter: Meter,
    template: Template,
    values: dict[str, str],
    text: str,
    params: GenerationParams,
    system: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[str]:
    engine = meter.engine
    budget = input_budget(engine, template, values, params, system)
    while engine.count_tokens(text) > budget:
        parts = split_to_budget(text, budget, engine.count_tokens)
        summaries = []
        for index, part in enumerate(parts):
            if on_progress:
                on_progress(index, len(parts))
            summaries.append(meter.complete(task_messages(template, values, part, system), params).strip())
        if on_progress:
            on_progress(len(parts), len(parts))
        combined = "\n\n".join(s for s in summaries if s)
        if engine.count_tokens(combined) >= engine.count_tokens(text):
            # The model is not shrinking the text: stop rather than loop forever.
            raise EngineError("the partial summaries are no shorter than the text; try --length short or a larger --ctx")
        text = combined
    yield from meter.stream(task_messages(template, values, text, system), params)
