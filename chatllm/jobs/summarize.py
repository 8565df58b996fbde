"""Summarizing text of any length, always shorter than the text.

Input that fits the context is summarized in one call, streaming. Longer input
is split at paragraph and sentence boundaries by token count, each part is
summarized (map), and the parts' summaries are summarized together (reduce),
repeating the reduce while the summaries still do not fit. Nothing is truncated.

Each call's reply is bounded by the length asked for, relative to the tokens of
what it summarizes (`summary_bound`), unless the user gave --max-tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from chatllm.engine.base import GenerationParams, Stream
from chatllm.errors import EngineError
from chatllm.jobs.chunking import split_to_budget
from chatllm.jobs.metering import Meter
from chatllm.jobs.model_fit import SUGGESTED_MODEL
from chatllm.jobs.prompting import input_budget, task_messages
from chatllm.templates import Template

# Progress of the map steps: (parts done, parts in all).
ProgressCallback = Callable[[int, int], None]

# --length: (share of the input's tokens, floor, ceiling). The floor lets a
# short text still get a sentence or two; the ceiling keeps the summary of a
# long report a summary.
LENGTHS = {"short": (0.15, 32, 128), "medium": (0.3, 64, 256), "long": (0.5, 128, 512)}
# Whatever the floor says, a summary stays under this share of its input.
MOST_OF_INPUT = 0.75
# Tokens per word of English prose, for the word count the prompt asks for.
TOKENS_PER_WORD = 1.4


def summary_bound(length: str, input_tokens: int) -> int:
    """The most tokens a summary of `input_tokens` tokens may take."""
    share, floor, ceiling = LENGTHS.get(length, LENGTHS["medium"])
    bound = min(max(round(share * input_tokens), floor), ceiling)
    return max(8, min(bound, int(MOST_OF_INPUT * input_tokens)))


def summarize(
    meter: Meter,
    template: Template,
    values: dict[str, str],
    text: str,
    params: GenerationParams,
    system: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Stream:
    engine = meter.engine
    length = values.get("length", "medium")

    def bounded(tokens: int) -> tuple[GenerationParams, dict[str, str]]:
        """Params and values for summarizing `tokens` tokens: --max-tokens when
        given, else the bound for --length."""
        if params.max_tokens is not None:
            bound = params.max_tokens
        else:
            bound = summary_bound(length, tokens)
        words = {"words": str(max(5, round(bound / TOKENS_PER_WORD)))} if template.variable("words") else {}
        return replace(params, max_tokens=bound), {**values, **words}

    facts = text  # every call may state only numbers of the original text
    whole = engine.count_tokens(text)
    final_params, final_values = bounded(whole)
    budget = input_budget(engine, template, final_values, final_params, system)
    size = whole
    while size > budget:
        parts = split_to_budget(text, budget, engine.count_tokens)
        summaries = []
        for index, part in enumerate(parts):
            if on_progress:
                on_progress(index, len(parts))
            part_params, part_values = bounded(engine.count_tokens(part))
            summaries.append(
                meter.complete(task_messages(template, part_values, part, system), part_params, facts=facts).strip()
            )
        if on_progress:
            on_progress(len(parts), len(parts))
        combined = "\n\n".join(s for s in summaries if s)
        combined_size = engine.count_tokens(combined)
        if combined_size >= size:
            # The model is not shrinking the text: stop rather than loop forever.
            raise EngineError(
                "the partial summaries are no shorter than the text; try --length short or a larger --ctx"
            )
        text, size = combined, combined_size
    messages = task_messages(template, final_values, text, system)
    # A small model's summary is sometimes nothing but a repeat, sentences with
    # invented numbers or half a sentence cut by a repeat ("The return of a desk
    # and a"), and once those are taken out nothing is left (2 of the 22
    # summaries of benchmarks/data/quality): one more try, with another seed.
    # Only the first try drops half a sentence: the second is what there is.
    seeds = (final_params.seed, None if final_params.seed is None else final_params.seed + 1)
    for attempt, seed in enumerate(seeds):
        if attempt:
            meter.forget_reply()
        pieces = meter.stream(
            messages, replace(final_params, seed=seed), facts=facts, drop_fragment_of_repeat=attempt == 0
        )
        shown = False
        for piece in _from_first_word(pieces):
            shown = True
            yield piece
        if shown:
            return
    # An empty summary with exit status 0 would pass for a result in a script.
    raise EngineError(
        "the model wrote no usable summary: twice, everything it wrote repeated itself or stated numbers "
        f"that are not in the text; a larger model does this well (-m {SUGGESTED_MODEL})"
    )


def _from_first_word(pieces: Stream) -> Stream:
    """`pieces` from the first that is not blank: blank lines before a summary
    are not shown, since it may yet turn out empty (and fail)."""
    started = False
    try:
        for piece in pieces:
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece
    finally:
        pieces.close()
