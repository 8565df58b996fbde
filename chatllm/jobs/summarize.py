"""Summarizing text of any length, always shorter than the text.

Input that fits the context is summarized in one call. Longer input
is split at paragraph and sentence boundaries by token count, each part is
summarized (map), and the parts' summaries are summarized together (reduce),
repeating the reduce while the summaries still do not fit. Nothing is truncated.

Each call asks for a length relative to what it summarizes, in words or
characters the model can keep (`asked_length`); its token bound is a safety
net above that, unless the user gave --max-tokens. A reply that is no summary
is written again once, and fails the job the second time (`summary_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, replace

from chatllm.engine.base import GenerationParams, Message
from chatllm.errors import ChatLLMError, EngineError
from chatllm.jobs.chunking import Chunk, split_counted
from chatllm.jobs.concurrent_items import run_items, width
from chatllm.jobs.job import Plan, Setup
from chatllm.jobs.model_fit import SUGGESTED_MODEL
from chatllm.jobs.pacing import Call, Pace, ProgressCallback
from chatllm.jobs.prompting import input_budget, task_messages
from chatllm.jobs.task import TaskJob
from chatllm.languages import detect_language, parse_language
from chatllm.reply.events import Event, Text
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, Events, call, collect, hold
from chatllm.templates import Template, load_template

# Beyond this many characters a text cannot fit any context (that would take
# over 32 characters a token in 131,072 tokens): it is not counted whole before
# it is split, since splitting counts it anyway (for 16 MiB, seconds saved).
SURELY_LONG_CHARACTERS = 32 * 131_072

# --length: (share of the input's tokens, floor, ceiling): the length a
# summary is asked to have. The floor lets a short text still get a sentence
# or two; the ceiling keeps the summary of a long report a summary.
LENGTHS = {"short": (0.15, 32, 128), "medium": (0.3, 64, 256), "long": (0.5, 128, 512)}
# The prompt asks for that length in words (characters for Chinese and
# Japanese), counted at the input's own tokens per word, so the model is told a
# length it can keep. The token bound is a safety net above it, which a model
# that keeps to the length never meets: measured on Qwen2.5-Coder-1.5B, a bound
# equal to the length asked for cut 7 of 22 summaries of the evaluation set
# (benchmarks/README.md, "Quality"); a summary still never takes more than
# MOST_OF_INPUT of its input.
SAFETY_FACTOR = 3.0
SAFETY_SLACK = 32
MOST_OF_INPUT = 0.75
# Tokens per word (per character, for CJK) when the input is in another script
# than the summary, so its own count does not apply.
TOKENS_PER_WORD = 1.4
TOKENS_PER_CJK_CHARACTER = 1.2
_WORD = re.compile(r"[^\W\d_]+|\d+")
_LETTERS = re.compile(r"[^\W\d_]+")
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_CHARACTER_LANGUAGES = ("zh", "ja")
# A summary of fewer different words says nothing ("谢谢。 谢谢。 谢谢 P.P.A."
# has one and a half: two CJK characters, or two single letters, count as one).
FEWEST_DISTINCT_WORDS = 2
# A summary this much of which is lines of its text, word for word, is a copy.
COPIED_SHARE = 0.8
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)、])\s+|^\s*\|")
_SENTENCE_END = re.compile(r"[.!?。！？…)）]$")
# Below this many tokens a text leaves its summary no room for a whole sentence.
SHORTEST_SUMMARIZED = 48
# Added to the prompt of a summary's second try.
RETRY_INSTRUCTION = "Write complete sentences in your own words; do not copy lines of the text."


def summary_bound(length: str, input_tokens: int) -> int:
    """The length in tokens a summary of `input_tokens` tokens is asked to have."""
    share, floor, ceiling = LENGTHS.get(length, LENGTHS["medium"])
    bound = min(max(round(share * input_tokens), floor), ceiling)
    return max(8, min(bound, int(MOST_OF_INPUT * input_tokens)))


def summary_limit(length: str, input_tokens: int) -> int:
    """The token bound of a summary when --max-tokens is not given: a safety net."""
    net = round(SAFETY_FACTOR * summary_bound(length, input_tokens)) + SAFETY_SLACK
    return max(8, min(net, int(MOST_OF_INPUT * input_tokens)))


@dataclass(frozen=True)
class AskedLength:
    count: int  # how many of `unit` the prompt asks for
    unit: str  # "words" or "characters"
    max_tokens: int


def asked_length(
    length: str, text: str, input_tokens: int, language_tag: str | None, max_tokens: int | None
) -> AskedLength:
    """What a summary of `text` is asked for: --max-tokens, else the length
    for --length, in the words (or characters) of the summary's language."""
    target = max_tokens if max_tokens is not None else summary_bound(length, input_tokens)
    characters = (language_tag or "").split("-")[0] in _CHARACTER_LANGUAGES
    cjk = len(_CJK_CHAR.findall(text))
    words = len(_WORD.findall(_CJK_CHAR.sub(" ", text)))
    if characters:
        per_unit = input_tokens / cjk if cjk > words else TOKENS_PER_CJK_CHARACTER
    else:
        per_unit = input_tokens / words if words >= cjk and words else TOKENS_PER_WORD
    count = max(5, round(target / max(per_unit, 0.5)))
    limit = max_tokens if max_tokens is not None else summary_limit(length, input_tokens)
    return AskedLength(count, "characters" if characters else "words", limit)


def prompt_values(template: Template, values: dict[str, str], asked: AskedLength) -> dict[str, str]:
    """`values` with the length the prompt asks for, for a template that takes it."""
    given = {"words": str(asked.count), "unit": asked.unit}
    return {**values, **{k: v for k, v in given.items() if template.variable(k)}}


def summary_language(values: dict[str, str]) -> str | None:
    """The tag of the language the summary is written in (its `lang` value is
    a name, as the prompt says it), or None when it is not known."""
    name = values.get("lang", "").split(" (")[0].strip()
    if not name:
        return None
    try:
        return parse_language(name).tag
    except ChatLLMError:
        return None


def bounded(
    template: Template, values: dict[str, str], params: GenerationParams, text: str, tokens: int
) -> tuple[GenerationParams, dict[str, str]]:
    """The params and values for summarizing `text` (`tokens` tokens long): the
    length the prompt asks for, and the token bound above it."""
    asked = asked_length(values.get("length", "medium"), text, tokens, summary_language(values), params.max_tokens)
    return replace(params, max_tokens=asked.max_tokens), prompt_values(template, values, asked)


def summarize(
    meter: Meter,
    template: Template,
    values: dict[str, str],
    text: str,
    params: GenerationParams,
    system: str | None = None,
    on_progress: ProgressCallback | None = None,
    parallel: int = 1,
) -> Events:
    # The final summary may state only numbers of the original text.
    summary = _Summary(meter, template, values, params, system, on_progress, facts=text, parallel=parallel)
    text, size, whole = yield from summary.shrunk(text)
    yield from summary.final(text, size, whole)


@dataclass
class _Summary:
    meter: Meter
    template: Template
    values: dict[str, str]
    params: GenerationParams
    system: str | None
    on_progress: ProgressCallback | None
    facts: str
    parallel: int = 1  # map steps at once (--parallel)

    def messages(self, values: dict[str, str], text: str) -> list[Message]:
        return task_messages(self.template, values, text, self.system)

    def shrunk(self, text: str) -> Generator[Event, None, tuple[str, int, int]]:
        """`text`, or the summaries of its parts summarized again, until it
        fits one call (map-reduce); its size in tokens, and the whole text's."""
        engine, template, pace = self.meter.engine, self.template, Pace(self.meter)
        # A text too long for any context is not counted whole: splitting counts it.
        counted = len(text) <= SURELY_LONG_CHARACTERS
        whole = engine.count_tokens(text) if counted else len(text) // 4
        final_params, final_values = bounded(template, self.values, self.params, text, whole)
        budget = input_budget(engine, template, final_values, final_params, self.system)
        size, doing = whole, "summarizing"
        while size > budget:
            parts = split_counted(text, budget, engine.count_tokens)
            if not counted:
                whole = size = sum(part.tokens for part in parts)
                counted = True
            if len(parts) == 1:  # it fits after all (a text of very long tokens)
                text, size = parts[0]
                break
            overhead = engine.count_prompt_tokens(self.messages(final_values, ""))
            length = self.values.get("length", "medium")
            calls = planned_calls(parts, budget, overhead, self.params.max_tokens, length)
            summaries = yield from self.map_step(parts, pace, doing, size, calls)
            doing = "combining the summaries"
            combined = "\n\n".join(s for s in summaries if s)
            combined_size = engine.count_tokens(combined)
            if combined_size >= size:
                # The model is not shrinking the text: stop rather than loop forever.
                raise EngineError(
                    "the partial summaries are no shorter than the text; try --length short or a larger --ctx"
                )
            text, size = combined, combined_size
        return text, size, whole

    def tell(self, pace: Pace, doing: str, done: int, total: int, tokens: int, calls: list[Call]) -> None:
        """Where the map steps stand, for a progress display."""
        if self.on_progress is not None:
            self.on_progress(pace.progress(doing, done, total, tokens, calls))

    def map_step(
        self, parts: list[Chunk], pace: Pace, doing: str, size: int, calls: list[Call]
    ) -> Generator[Event, None, list[str]]:
        """Each part's summary, in order; with --parallel, several parts at once
        (jobs/concurrent_items.py), their thinking passed on as each is done."""
        summaries: list[str] = []
        if width(self.meter, self.parallel, len(parts)) == 1:
            for index, part in enumerate(parts):
                self.tell(pace, doing, index, len(parts), size, calls[index:])
                summaries.append((yield from self.part_summary(self.meter, part)))
        else:
            self.tell(pace, doing, 0, len(parts), size, calls)
            for index, done in enumerate(run_items(self.meter, parts, self.part_summary_apart, self.parallel), 1):
                summary, events = done.value
                yield from events
                summaries.append(summary)
                if index < len(parts):
                    self.tell(pace, doing, index, len(parts), size, calls[index:])
        self.tell(pace, doing, len(parts), len(parts), size, calls[len(parts) :])
        return summaries

    def part_summary(self, meter: Meter, part: Chunk) -> Generator[Event, None, str]:
        """A map step. Its summary may state the numbers of its part (checking
        them against the whole text read all of it again for every part)."""
        part_params, part_values = bounded(self.template, self.values, self.params, part.text, part.tokens)
        checks = Checks(facts=part.text)
        summary = yield from collect(
            call(meter, self.messages(part_values, part.text), part_params, checks, visible=False)
        )
        return summary.strip()

    def part_summary_apart(self, meter: Meter, part: Chunk) -> tuple[str, list[Event]]:
        """A map step run beside others: its summary, and the events it sent
        (a reasoning model's thinking), kept to be passed on in order."""
        events: list[Event] = []
        steps = self.part_summary(meter, part)
        while True:
            try:
                events.append(next(steps))
            except StopIteration as end:
                return end.value, events

    def final(self, text: str, size: int, whole: int) -> Events:
        """The summary of `text`, judged before it is shown.

        A small model's reply is sometimes no summary: nothing once repeats and
        invented numbers are taken out, half a sentence, a line of the text
        copied, or another language (benchmarks/README.md, "Quality"). Such a
        reply is written once more with another seed; twice, and the job fails
        rather than print it. The summary is held until it is judged (a
        terminal shows it as a draft meanwhile), since a pipe cannot take back
        what it was given."""
        meter, params = self.meter, self.params
        final_params, final_values = bounded(self.template, self.values, params, text, size)
        messages = self.messages(final_values, text)
        problem, cut_summary = "", ""
        for attempt in range(2):
            attempt_params, attempt_messages = final_params, messages
            if attempt:
                meter.forget_reply(problem)
                attempt_params, attempt_messages = _second_try(final_params, messages)
            checks = Checks(facts=self.facts, drop_cut_fragment=True)
            summary = yield from hold(meter, call(meter, attempt_messages, attempt_params, checks))
            bullets = self.values.get("format") == "bullets"
            problem = summary_problem(summary, self.facts, summary_language(self.values), bullets)
            # The safety net met: the model did not keep to the length it was
            # asked for (on the 1.5B, 2 of 22: a text nearly copied, a long
            # reduce). Its first sentences are whole, but the rest is lost, so
            # it is written once more; a second cut one is still shown.
            if not problem and attempt == 0 and params.max_tokens is None and meter.last_finish_reason == "length":
                problem, cut_summary = "cut at the length bound", summary
            if not problem:
                yield Text(summary.strip())
                return
            if cut_summary and attempt == 1:
                yield Text(cut_summary.strip())
                return
            if params.max_tokens is not None and meter.last_finish_reason == "length" and not summary.strip():
                raise EngineError(
                    f"--max-tokens {params.max_tokens} is too small for one whole sentence of this summary; "
                    f"allow more (e.g. --max-tokens {max(2 * params.max_tokens, 64)}) or leave it out"
                )
        # An empty summary with exit status 0 would pass for a result in a script.
        if params.max_tokens is None and meter.last_finish_reason == "length" and whole < SHORTEST_SUMMARIZED:
            raise EngineError(f"the text is too short to summarize ({whole} tokens): a summary must be shorter than it")
        raise EngineError(
            f"the model wrote no usable summary: twice, its reply was {problem}; "
            f"a larger model does this well (-m {SUGGESTED_MODEL})"
        )


def _second_try(params: GenerationParams, messages: list[Message]) -> tuple[GenerationParams, list[Message]]:
    """Another seed, freer sampling and a word on what went wrong, so the
    second try can differ from the first."""
    seed = None if params.seed is None else params.seed + 1
    last = messages[-1]
    retry = [*messages[:-1], Message(last.role, f"{last.content}\n{RETRY_INSTRUCTION}")]
    return replace(params, seed=seed, temperature=max(params.temperature, 0.6)), retry


def planned_calls(parts: list[Chunk], budget: int, overhead: int, max_tokens: int | None, length: str) -> list[Call]:
    """The calls a summary of `parts` is expected to make, for an estimate of
    its time: one per part, the rounds that summarize their summaries while
    those do not fit together, and the final summary; each summary as long as
    it is asked to be. `overhead` is the prompt's own tokens."""

    def reply_tokens(tokens: int) -> int:
        return max_tokens if max_tokens is not None else summary_bound(length, tokens)

    calls: list[Call] = []
    sizes = [part.tokens for part in parts]
    while True:
        calls += [Call(overhead + size, reply_tokens(size)) for size in sizes]
        combined = sum(reply_tokens(size) for size in sizes)
        if combined <= budget:
            return [*calls, Call(overhead + combined, reply_tokens(combined))]
        count = -(-combined // budget)
        if count >= len(sizes):  # not shrinking: the job stops there and says so
            return calls
        sizes = [combined // count] * count


def _lines(text: str) -> list[str]:
    """A text's lines without list markers and extra white space."""
    lines = (_LIST_MARKER.sub("", line) for line in text.splitlines())
    return [" ".join(line.split()) for line in lines if line.strip()]


def _mostly_copied(summary: str, source: str) -> bool:
    """Most of the summary is lines of the source, word for word (a table or an
    email copied, a title numbered "1."), as the embedded model does."""
    lines = _lines(summary)
    whole = " ".join(" ".join(_lines(source)).split())
    copied = sum(len(line) for line in lines if len(line) >= 8 and line in whole)
    return copied >= COPIED_SHARE * sum(len(line) for line in lines)


def _list_of_fragments(summary: str) -> bool:
    """A list of three or more items, most of them no sentence ("王蕾", "连接池上限的调整")."""
    items = [line for line in summary.splitlines() if _LIST_MARKER.match(line)]
    fragments = [item for item in items if not _SENTENCE_END.search(item.rstrip())]
    return len(items) >= 3 and len(fragments) * 2 > len(items)


def summary_problem(summary: str, source: str, language_tag: str | None, bullets: bool = False) -> str:
    """Why `summary` is no summary of `source` ("" when it is one); `bullets`:
    a list was asked for, so items need not be sentences."""
    text = " ".join(summary.split())
    if not text:
        return "all repeats or invented numbers"
    # Counted without repeats: the embedded model's "谢谢。 谢谢。 谢谢 P.P.A."
    # says one thing three times and is no more a summary than "谢谢".
    words = {word.lower() for word in _WORD.findall(_CJK_CHAR.sub(" ", text))}
    size = sum(1 if len(word) > 1 else 0.5 for word in words) + len(set(_CJK_CHAR.findall(text))) / 2
    if size < FEWEST_DISTINCT_WORDS:
        return f"a fragment ({text!r})"
    if text.endswith((":", "：")):  # "从上下文中，我们可以看到……的回复是：" and then nothing
        return f"an opening with nothing after it ({text[-40:]!r})"
    if len(text) >= 20 and text in " ".join(source.split()):
        return "a copy of a line of the text"
    if _mostly_copied(summary, source):
        return "a copy of lines of the text"
    if not bullets and _list_of_fragments(summary):
        return "a list of fragments, not sentences"
    if not bullets and not _SENTENCE_END.search(text) and not re.search(r"[.!?。！？](?=\s)", text):
        return "no whole sentence"  # "Dear Customer, … Subject: Formal Complaint – Account 5501-…"
    if re.search(r"\bsummari[sz]e the text\b|write the summary in\b", text, re.IGNORECASE):
        return "the instruction written again"
    if language_tag:
        found = detect_language(text)
        if found is not None and found.tag.split("-")[0] != language_tag.split("-")[0]:
            return f"in {found.name}, not in the text's language"
    return ""


class SummaryJob(TaskJob):
    """`chatllm summarize`: the summary in the input's language unless --lang
    says otherwise, as long as --length asks."""

    def fill_values(self, given: dict[str, str]) -> None:
        if not given.get("lang"):
            self.values["lang"] = self.detected.for_prompt() if self.detected else ""

    def first_call(self) -> Plan:
        # The length the prompt asks for, from an estimate of the input's
        # tokens; the job counts them with the model's own tokenizer.
        params, self.values = bounded(self._template, self.values, self.params, self.text, (len(self.text) + 3) // 4)
        return replace(super().first_call(), params=params)

    def reply(self, meter: Meter) -> Events:
        parallel = self.setup.values.get("parallel") or 1
        return summarize(
            meter, self._template, self.values, self.text, self.params, self.system, self.setup.progress, parallel
        )


def prepare(setup: Setup) -> SummaryJob:
    given = {"length": setup.values.get("length") or "medium", "format": setup.values.get("format") or "paragraph"}
    if setup.values.get("lang"):
        given["lang"] = parse_language(setup.values["lang"]).for_prompt()
    return SummaryJob(setup, load_template("summarize"), given)
