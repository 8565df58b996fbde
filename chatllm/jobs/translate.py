"""Translating text of any length while keeping its Markdown structure.

The text is cut into blocks: fenced code blocks are kept verbatim and never sent
to the model; everything else is translated paragraph by paragraph (a list or
a heading is a paragraph too), streaming. Blank lines between blocks are
reproduced as they were. Each paragraph's translation is bounded by a multiple
of its own tokens (`translation_bound`), and held until it is checked: in the
asked language, every number of the source kept and none added, no words left
untranslated (`translation_problems`). A paragraph that fails is translated
once more; the better try is kept, and a note names what is still wrong. A
paragraph twice in another language is left out and fails the job.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace

from chatllm.engine.base import Engine, GenerationParams, Message
from chatllm.errors import ChatLLMError, EngineError
from chatllm.jobs.chunking import Chunk, split_counted, split_paragraphs
from chatllm.jobs.job import Setup
from chatllm.jobs.model_fit import SUGGESTED_MODEL, ModelFit
from chatllm.jobs.numbers import number_problems
from chatllm.jobs.pacing import Call, Pace, ProgressCallback
from chatllm.jobs.prompting import input_budget, task_messages
from chatllm.jobs.repetition import RepetitionGuard, repeats_in
from chatllm.jobs.task import TaskJob
from chatllm.languages import detect_language, parse_language, prose_of
from chatllm.reply.events import Event, Text
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, Events, call, hold
from chatllm.templates import Template, load_template

FENCE = re.compile(r"^(```|~~~)")
# A chunk's translation may take this many times the chunk's tokens, plus a
# little: measured on benchmarks/data/quality's references with SmolLM2's
# English-first tokenizer, a translation took up to 2.0x its source's tokens
# into French and 2.9x into Chinese. More than that is a model writing
# something other than the translation (in practice, a loop).
GROWTH = {"cjk": 3.5, "other": 2.5}
GROWTH_SLACK = 16
# What a translation typically takes, for an estimate of time: the median over
# the same references (24 pairs) was 2.4x into Chinese and Japanese, 1.1x
# into other languages.
TYPICAL_GROWTH = {"cjk": 2.4, "other": 1.2}
_CJK_TARGETS = ("chinese", "japanese", "korean", "中文", "日本語", "한국어")
# The second try of a paragraph that had a problem samples more freely, so it
# can differ from the first (translate's own temperature is 0.1).
RETRY_TEMPERATURE = 0.6
# Added to the prompt of a paragraph's second try.
RETRY_INSTRUCTION = "Translate every word, and keep every number and date of the text."


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
    on_progress: ProgressCallback | None = None,
) -> Events:
    engine = meter.engine
    target = values.get("to", "")
    overhead = engine.count_prompt_tokens(task_messages(template, values, "", system))
    budget = _chunk_budget(engine, template, values, params, system, overhead)
    # One guard for the whole translation: a loop from paragraph to paragraph is
    # a loop too. A translation may repeat what its source repeats.
    guard = RepetitionGuard(mode=meter.repetition, allowed=repeats_in(text)) if meter.repetition != "off" else None
    languages = _tag(values.get("from", "")), _tag(target)
    layout = list(_layout(text, budget, engine.count_tokens))
    parts = [item for item in layout if isinstance(item, _Part)]
    calls = [
        Call(overhead + part.chunk.tokens, expected_translation(part.chunk.tokens, target, params.max_tokens))
        for part in parts
    ]
    tokens, pace = sum(part.chunk.tokens for part in parts), Pace(meter)
    not_translated: list[int] = []
    for item in layout:
        if not isinstance(item, _Part):
            yield Text(item)
            continue
        if on_progress:
            on_progress(pace.progress("translating", item.index, len(parts), tokens, calls[item.index :]))
        chunk_params = params
        if params.max_tokens is None:
            chunk_params = replace(params, max_tokens=translation_bound(item.chunk.tokens, target))
        if guard is not None and guard.started:
            guard.next_part()
        messages = task_messages(template, values, item.chunk.text, system)
        checked = _checked_translation(meter, messages, chunk_params, item.chunk.text, guard, languages)
        translation, problems = yield from checked
        if problems:
            meter.add_note(f"Paragraph {item.paragraph}: {'; '.join(problems)}, also when translated again.")
        if any(problem.startswith("not in ") for problem in problems):
            not_translated.append(item.paragraph)  # not printed: it is no translation
        else:
            yield Text(translation)
    if on_progress and parts:
        on_progress(pace.progress("translating", len(parts), len(parts), tokens, []))
    if not_translated:
        # A paragraph left in another language is no translation: the job fails
        # (after the rest), so a script does not take it for one.
        raise _not_translated(not_translated, target)


def _chunk_budget(
    engine: Engine,
    template: Template,
    values: dict[str, str],
    params: GenerationParams,
    system: str | None,
    overhead: int,
) -> int:
    """Tokens of source text one call may take (`overhead`: the prompt's own)."""
    if params.max_tokens is not None:
        return input_budget(engine, template, values, params, system)
    # A chunk and its translation's bound must fit in the context together.
    growth = translation_bound(1000, values.get("to", "")) / 1000
    budget = int((engine.context_size - overhead - GROWTH_SLACK - 8) / (1 + growth))
    if budget < 32:
        raise EngineError(
            f"the context ({engine.context_size} tokens) is too small to translate with; use a larger --ctx"
        )
    return budget


def _not_translated(paragraphs: list[int], target: str) -> EngineError:
    which = ", ".join(map(str, paragraphs[:5])) + (f" and {len(paragraphs) - 5} more" if len(paragraphs) > 5 else "")
    return EngineError(
        f"paragraph{'s' if len(paragraphs) > 1 else ''} {which} could not be translated into {target}: "
        f"twice the model wrote another language; a larger model does this well (-m {SUGGESTED_MODEL})"
    )


@dataclass(frozen=True)
class _Part:
    """A chunk of a paragraph to translate: the `index`-th of the text's."""

    chunk: Chunk
    paragraph: int  # the paragraph's number in the text, counted from 1
    index: int


def _layout(text: str, budget: int, count_tokens: Callable[[str], int]) -> Iterator[str | _Part]:
    """`text` as what is kept (code, line breaks) and what is translated, in
    order. Paragraph by paragraph: a small model translates a paragraph far
    better than a page (benchmarks/README.md, "Quality"); a paragraph too long
    for the context goes in parts, cut between sentences."""
    paragraphs = parts = 0
    for index, block in enumerate(split_blocks(text)):
        if index:
            yield "\n"  # the line break split_blocks cut at
        body = block.text.strip("\n")
        if not block.translate or not body.strip():
            yield block.text
            continue
        yield block.text[: len(block.text) - len(block.text.lstrip("\n"))]
        for number, paragraph in enumerate(split_paragraphs(body)):
            paragraphs += 1
            if number:
                yield "\n\n"
            if _is_code(paragraph):  # code outside a fence ("def f(x):") stays as it is, like fenced code
                yield paragraph
                continue
            for part, chunk in enumerate(split_counted(paragraph, budget, count_tokens)):
                if part:
                    yield " "
                yield _Part(chunk, paragraphs, parts)
                parts += 1
        yield block.text[len(block.text.rstrip("\n")) :]


def expected_translation(source_tokens: int, target: str, max_tokens: int | None = None) -> int:
    """Tokens a translation of `source_tokens` is expected to take (at most
    `max_tokens`), for an estimate of time."""
    cjk = any(name in target.lower() for name in _CJK_TARGETS)
    expected = round(TYPICAL_GROWTH["cjk" if cjk else "other"] * source_tokens)
    return min(expected, max_tokens) if max_tokens is not None else expected


def _checked_translation(
    meter: Meter,
    messages: list[Message],
    params: GenerationParams,
    source: str,
    guard: RepetitionGuard | None,
    languages: tuple[str, str],
) -> Generator[Event, None, tuple[str, list[str]]]:
    """A chunk's translation, held until checked (a terminal shows it as a
    draft meanwhile) and written again once when it has a problem
    (`translation_problems`), with another seed and more randomness so the
    second try can differ; the one with fewer problems, and its problems."""
    tries: list[tuple[str, list[str]]] = []
    for attempt in range(2):
        attempt_params = params
        attempt_messages = messages
        if attempt:
            meter.forget_reply("")
            seed = None if params.seed is None else params.seed + 1
            attempt_params = replace(params, seed=seed, temperature=max(params.temperature, RETRY_TEMPERATURE))
            last = messages[-1]
            # Before the instruction, not after the text: what follows the text is taken for more of it.
            attempt_messages = [*messages[:-1], Message(last.role, f"{RETRY_INSTRUCTION}\n{last.content}")]
        attempt_guard = copy.deepcopy(guard)  # what the first try said is no repeat for the second
        events = call(meter, attempt_messages, attempt_params, Checks(guard=attempt_guard))
        translation = yield from hold(meter, _strip_surrounding_whitespace(events))
        tries.append((translation, translation_problems(source, translation, *languages)))
        if not tries[-1][1]:
            break
    best = min(tries, key=lambda found: len(found[1]))
    if guard is not None and attempt_guard is not None:
        guard.__dict__.update(copy.deepcopy(attempt_guard).__dict__)
    return best


def _is_code(paragraph: str) -> bool:
    """A paragraph of code lines and nothing written in a language (a table
    is not code: its words are translated)."""
    lines = [line for line in paragraph.splitlines() if line.strip()]
    return bool(lines) and not any(line.lstrip().startswith("|") for line in lines) and not prose_of(paragraph).strip()


def _tag(name: str) -> str:
    """The tag of a language the prompt names ("French" -> "fr"), or ""."""
    if not name:
        return ""
    try:
        return parse_language(name).tag
    except ChatLLMError:
        return ""


# A word of Latin letters, not part of a file name, an address or an identifier.
_LATIN_WORD = re.compile(r"(?<![0-9A-Za-z_@/.\-])[A-Za-z]{3,}(?![0-9A-Za-z_@/\-]|\.[A-Za-z])")
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
# Code, addresses and placeholders ("{query}", "%s"): kept as they are in any language.
_NOT_PROSE = re.compile(r"`[^`]*`|https?://\S+|\S+@\S+|\{[^{}\n]*\}|%[sd]")


def untranslated_fragments(source: str, translation: str) -> list[str]:
    """Words of the source left as they were in a translation into another
    script: Chinese characters in an English translation of Chinese ("human
    客服"), or a lower-case English word of the source in a Chinese
    translation ("quieter"; names, acronyms and code may stay as they are)."""
    source_cjk = bool(_CJK_RUN.search(source))
    prose = _NOT_PROSE.sub(" ", translation)
    translation_cjk = len("".join(_CJK_RUN.findall(prose))) > len(prose) / 4
    if source_cjk and not translation_cjk:
        return list(dict.fromkeys(_CJK_RUN.findall(prose)))
    if translation_cjk and not source_cjk:
        lower = {word for word in _LATIN_WORD.findall(_NOT_PROSE.sub(" ", source)) if word.islower()}
        return list(dict.fromkeys(word for word in _LATIN_WORD.findall(prose) if word in lower))
    return []


def _other_language(source: str, translation: str, target_tag: str) -> bool:
    """Whether `translation` is not in the target language: written in
    another script than the target's, or a language CLD2 tells apart that
    shares most of its words with the source (a copy). A short French
    sentence can pass for English with CLD2, so its word alone does not decide."""
    found = detect_language(translation)
    if found is None or found.tag.split("-")[0] == target_tag.split("-")[0]:
        return False
    prose = _NOT_PROSE.sub(" ", translation)
    cjk_target = target_tag.split("-")[0] in ("zh", "ja", "ko")
    if cjk_target != (len("".join(_CJK_RUN.findall(prose))) > len(prose) / 4):
        return True
    words = {w.lower() for w in re.findall(r"\w+", prose)}
    shared = words & {w.lower() for w in re.findall(r"\w+", source)}
    return bool(words) and len(shared) >= len(words) / 2


def translation_problems(source: str, translation: str, source_tag: str, target_tag: str) -> list[str]:
    """What is wrong with `translation` of `source`, each named: empty, not in
    the target language, numbers missing or added (jobs/numbers.py), words left
    untranslated."""
    if not translation.strip():
        return ["no translation"]
    problems = []
    if target_tag and _other_language(source, translation, target_tag):
        problems.append("not in the asked language")
    if not problems:
        problems += number_problems(source, translation, source_tag, target_tag)
        left = untranslated_fragments(source, translation)
        if left:
            problems.append(f"left untranslated: {', '.join(left[:5])}")
    return problems


def _strip_surrounding_whitespace(events: Events) -> Events:
    """The reply's text without leading or trailing whitespace, still streaming
    (trailing whitespace is held back until more text follows it)."""
    started = False
    held = ""
    try:
        for event in events:
            if type(event) is not Text:
                yield event
                continue
            piece = event.text
            if not started:
                piece = piece.lstrip()
                if not piece:
                    continue
                started = True
            text = held + piece
            stripped = text.rstrip()
            held = text[len(stripped) :]
            if stripped:
                yield Text(stripped)
    finally:
        events.close()


class TranslationJob(TaskJob):
    """`chatllm translate`: from the input's language unless --from says which."""

    def fill_values(self, given: dict[str, str]) -> None:
        if not given.get("from") and self.detected:
            self.values["from"] = self.detected.name

    def hint(self, fit: ModelFit) -> str | None:
        return fit.for_translation()

    def reply(self, meter: Meter) -> Events:
        return translate(meter, self._template, self.values, self.text, self.params, self.system, self.setup.progress)


def prepare(setup: Setup) -> TranslationJob:
    given = {"to": parse_language(setup.values["to"]).name}
    if setup.values.get("source_language"):
        given["from"] = parse_language(setup.values["source_language"]).name
    return TranslationJob(setup, load_template("translate"), given)
