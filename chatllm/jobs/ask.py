"""`chatllm ask`: a question answered from the user's documents, with its sources.

    question ─► passages (the collection's BM25 search, jobs/knowledge.py)
             ─► none found: "not in these documents", no model call
             ─► the model's own judgement: do these passages answer it? (jobs/coverage.py)
             ─► the answer: grounded (no number the passages lack, jobs/grounding.py),
                and drawing on the passages (jobs/knowledge_use.py), else "not in
                these documents"
             ─► the sources it drew on, numbered: [1] guide.md › Battery (lines 12-30)

The answer never comes from the model's general knowledge unless asked
(`allow_general`): then the checks that hold it to the passages are off, and
the prompt tells the model to say first that the documents do not answer.

A collection small enough goes to the model whole (the persona's sizes,
jobs/persona.py `knowledge_sizes`): nothing can be missed by the search, and a
question in one language finds its answer in a document in another.

`AskJob` is the command (jobs/table.py): it reads and indexes the documents
while the model loads, and its run's `Finish` carries --json's `citations`
and `answered`. `serving` is `ask` as a `serve` model over `serve --docs`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chatllm.config.settings import ask_cache_dir
from chatllm.engine.base import Engine, GenerationParams, Message
from chatllm.errors import InputError
from chatllm.inputs import read_stream
from chatllm.jobs.coverage import CoverageJudge
from chatllm.jobs.doc_index import Collection, collect
from chatllm.jobs.documents import estimate_tokens
from chatllm.jobs.handover import DECLINES
from chatllm.jobs.job import Plan, Served, ServedJob, Setup
from chatllm.jobs.knowledge import CJK, KnowledgeBase, Passage
from chatllm.jobs.knowledge_use import KnowledgeUse, content_terms
from chatllm.jobs.model_fit import TINY_MODEL_BYTES, is_tiny
from chatllm.jobs.pacing import Progress, ProgressCallback
from chatllm.jobs.persona import customer_language, knowledge_sizes
from chatllm.jobs.prompting import generation_params, repetition_mode, task_messages
from chatllm.reply.events import Finish, Notice, Text
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, Events, ReplyRequest, call, complete, finished
from chatllm.reply.stages import KnowledgeDrawn
from chatllm.templates import CUSTOMER_LANGUAGE_VARIABLE, Template, load_template

JUDGE_QUESTION = "Do the passages above answer this question? Reply yes or no."
# How many passages the search may return before the token budget picks.
SEARCH_LIMIT = 12
# A question's translation for the search is one line.
TRANSLATION_TOKENS = 80
# A reply that says the documents do not answer, in its own words.
NOT_ANSWERED = re.compile(
    r"\b(?:documents?|passages?|texts?|sources?) (?:do(?:es)? not|don['’]t|doesn['’]t) "
    r"(?:answer|say|mention|contain|include|specify|state|provide|cover)|\bnot (?:in|mentioned in) (?:these|the) "
    r"(?:documents?|passages?)|文档(?:中)?(?:没有|未)|(?:没有|未)(?:提到|提及|说明)",
    re.IGNORECASE,
)
_LANGUAGES = {"zh": "Chinese"}


@dataclass(frozen=True)
class Citation:
    path: str
    heading: str
    lines: tuple[int, int] | None

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "heading": self.heading, "lines": list(self.lines) if self.lines else None}

    def render(self, number: int) -> str:
        where = f" › {self.heading}" if self.heading else ""
        lines = ""
        if self.lines:
            first, last = self.lines
            lines = f" (line {first})" if first == last else f" (lines {first}-{last})"
        return f"[{number}] {self.path}{where}{lines}"


@dataclass
class Ask:
    """One question over one collection. `events` streams the answer; then
    `answered`, `citations` and `answer` say what it was. `base`: the
    collection's search index, when one is kept between questions (`serve`)."""

    template: Template
    collection: Collection
    question: str
    allow_general: bool = False
    sources: bool = True  # the numbered sources after the answer (--json and serve have them as data)
    tiny_model: bool = False
    judge_cache: Path | None = None
    base: KnowledgeBase | None = None
    answered: bool = False
    citations: list[Citation] = field(default_factory=list)
    answer: str = ""  # the answer's text, without its sources

    def __post_init__(self) -> None:
        self.question = checked_question(self.question)
        self._base = self.base or KnowledgeBase(self.collection.passages)

    # ------------------------------------------------------------ the plan

    @property
    def not_found(self) -> str:
        values = {CUSTOMER_LANGUAGE_VARIABLE: customer_language(self.question)}
        return self.template.render_text(self.template.fallback, values)

    def values(self) -> dict[str, str]:
        given = {
            "not_found": self.not_found,
            "language": _LANGUAGES.get(customer_language(self.question), ""),
            "general": "yes" if self.allow_general else "",
        }
        return self.template.resolve_variables(given)

    def passages(self, engine: Engine | None, question: str | None = None, *also: str) -> list[Passage]:
        """The passages the model is given for `question` (this one by default,
        and any other wordings of it in `also`): all of them when they fit,
        else the best the search finds."""
        count = engine.count_tokens if engine is not None else _estimate
        sizes = knowledge_sizes(engine.context_size if engine is not None else 4096, self.tiny_model)
        everything = self.collection.passages
        # Estimated first: a large collection is never counted token by token.
        if sum(_estimate(p.text) for p in everything) <= sizes.whole_tokens * 2:
            if sum(count(_render(p)) + 2 for p in everything) <= sizes.whole_tokens:
                return list(everything)
        queries = [question or self.question, *also]
        return self._base.search_each(queries, sizes.retrieved_tokens, count, SEARCH_LIMIT)

    def other_language(self) -> str:
        """The language to translate the question into for the search ("" for
        none): English or Chinese, when some documents are written in the other
        script than the question. BM25 matches words, and CJK bigrams never
        meet English words. Measured on benchmarks/data/quality/ask (1,024
        tokens of passages, the budget of a 4,096-token context): the passages
        held the fact for 26 of 29 answerable questions searched as asked (3 of
        the 4 asked across languages missed), 29 of 29 with a translation of
        the question searched too.
        """
        asked_in_cjk = bool(CJK.search(self.question))
        for passage in self.collection.passages:
            if bool(CJK.search(passage.text)) != asked_in_cjk:
                return "English" if asked_in_cjk else "Chinese"
        return ""

    def translated_question(self, meter: Meter) -> str:
        """The question in the documents' other language, by the model, with
        the translate template; "" where it is not needed, or on a tiny model,
        whose "translations" were not (SmolLM2-135M turned Chinese questions
        into German and French sentences about something else)."""
        target = self.other_language()
        if not target or self.tiny_model:
            return ""
        template = load_template("translate")
        messages = task_messages(template, template.resolve_variables({"to": target}), self.question)
        params = self.params({"temperature": 0.0, "max_tokens": TRANSLATION_TOKENS})
        return complete(meter, messages, replace(params, stop=("\n",))).strip()

    def messages(self, passages: Sequence[Passage], question: str | None = None) -> list[Message]:
        values = self.values()
        context = "\n\n".join(_render(p) for p in passages)
        system = self.template.render_system(values)
        prompt = self.template.render_prompt(values, question or self.question, context=context)
        return [*([Message("system", system)] if system else []), Message("user", prompt)]

    def params(self, *layers: Mapping[str, object]) -> GenerationParams:
        """The template's settings, overlaid with `layers` (the options given)."""
        return generation_params(self.template, *layers)

    # ------------------------------------------------------------ the run

    def events(self, meter: Meter, params: GenerationParams) -> Events:
        """The answer's text, then (with `sources`) its numbered sources."""
        translated = self.translated_question(meter)
        queries = [self.question, *([translated] if translated else [])]
        given = self.passages(meter.engine, *queries)
        # No word of the question (or of its translation) is in any document:
        # nothing to ask the model. Unless the question could not be put in
        # the documents' other language, when only a model that reads both
        # can tell (not a tiny one, see translated_question).
        unmatched = not any(self._base.ranked(query, 1) for query in queries)
        bridged = bool(translated) or self.tiny_model or not self.other_language()
        if (not given or unmatched and bridged) and not self.allow_general:
            meter.add_note("Nothing in the documents matches the question.")
            yield from self._not_answered()
            return
        messages = self.messages(given)
        if not self.allow_general and self._judged_unanswered(meter, messages):
            yield from self._not_answered()
            return
        said: list[str] = []
        for event in self._answer(meter, messages, params, given):
            if type(event) is Text:
                said.append(event.text)
            yield event
        self.answer = "".join(said)
        self.answered = bool(given) and bool(self.answer.strip()) and not _declines(self.answer)
        if self.answered:
            self.citations = cited(given, self.answer, self.question)
            if self.sources and self.citations:
                # Two spaces end a line in Markdown: on a terminal the sources
                # stay one a line instead of running together as a paragraph.
                gap = "\n" if self.answer.endswith("\n") else "\n\n"  # one blank line, however the answer ended
                yield Text(gap + "  \n".join(c.render(n) for n, c in enumerate(self.citations, 1)) + "\n")

    def _not_answered(self) -> Events:
        self.answer = self.not_found
        yield Text(self.not_found)

    def _answer(self, meter: Meter, messages: list[Message], params: GenerationParams, given: list[Passage]) -> Events:
        """The model's answer, grounded in the passages (no number they lack)
        and drawing on them, else "not in these documents"."""
        if self.allow_general:
            return call(meter, messages, params)
        passages = "\n".join(p.heading + "\n" + p.text for p in given)
        checks = Checks(facts=f"{passages}\n{self.question}", fallback=self.not_found)
        drawn = KnowledgeDrawn(KnowledgeUse(passages, self.question, may_ask_back=False), self.not_found)
        return call(meter, messages, params, checks, after=[drawn])

    def _judged_unanswered(self, meter: Meter, messages: list[Message]) -> bool:
        """Whether the model judges that the passages do not answer the question
        (never on a tiny model, which cannot judge: jobs/coverage.py)."""
        if self.tiny_model or not meter.can_score:
            return False
        topics = tuple(dict.fromkeys(p.heading for p in self.collection.passages if p.heading))
        judge = CoverageJudge(
            system=self.template.render_system(self.values()),
            topics=topics,
            model_key=meter.engine.identity,
            cache_dir=self.judge_cache,
            question=JUDGE_QUESTION,
            probe_messages=lambda probe: self.messages(self._probe_passages(meter.engine, probe), probe),
        )
        coverage = judge.judge(meter, messages)
        if coverage is None or coverage.covered:
            return False
        meter.add_note("The passages found do not answer the question (the model's own judgement).")
        return True

    def _probe_passages(self, engine: Engine, probe: str) -> list[Passage]:
        """A calibration question's passages; one nothing matches gets the
        collection's first, as a real question gets near misses."""
        return self.passages(engine, probe) or self.collection.passages[:2]

    def json_fields(self) -> dict[str, Any]:
        """What --json adds: the sources and whether the documents answered;
        and its `text` is the answer alone (the numbered sources are data here)."""
        return {"text": self.answer, "citations": [c.as_json() for c in self.citations], "answered": self.answered}


def answer_events(meter: Meter, ask: Ask, params: GenerationParams) -> Events:
    """`ask`'s answer as a job's events: its `Finish` carries the citations
    and whether the documents answered (Finish.fields)."""
    for event in finished(meter, ask.events(meter, params)):
        if type(event) is Finish:
            event = replace(event, fields={**event.fields, **ask.json_fields()})
        yield event


# ---------------------------------------------------------------- the command


class AskJob:
    """`chatllm ask QUESTION [PATH...]` (jobs/table.py): the documents are
    read and indexed while the model loads, so a bad PATH fails first."""

    template = "ask"

    def __init__(self, setup: Setup) -> None:
        values = setup.values
        question = checked_question(values["question"])  # before any file is read
        paths: list[Path] = list(values.get("paths") or [])
        files = [path for path in paths if str(path) != "-"]
        stdin_text = _stdin() if not files or len(files) < len(paths) else None
        tiny = is_tiny(setup.model.path)
        collection = collect(files, ask_cache_dir() / "index", stdin_text, _indexing(setup.progress))
        self.ask = Ask(
            load_template("ask"),
            collection,
            question,
            allow_general=bool(values.get("allow_general")),
            tiny_model=tiny,
            judge_cache=ask_cache_dir() / "judges",
        )
        self.params = self.ask.params(setup.sampling)
        self.repetition = repetition_mode(self.ask.template, setup.repetition, tiny_model=tiny)
        variables = {"paths": [str(path) for path in paths]}
        self.record: dict[str, Any] | None = {"prompt": question, "variables": variables, "params": self.params}

    def plan(self) -> Plan:
        """The answer's messages with the passages the search finds (counted
        without a model: --dry-run loads none)."""
        return Plan(self.ask.messages(self.ask.passages(None)), self.params)

    def run(self, meter: Meter) -> Events:
        for note in self.ask.collection.notes:
            yield Notice(note)
        yield from answer_events(meter, self.ask, self.params)


def prepare(setup: Setup) -> AskJob:
    return AskJob(setup)


def _stdin() -> str:
    """The documents piped in; an error on a terminal, where none can be."""
    if sys.stdin.isatty():
        raise InputError('no documents: name files or folders, or pipe text in (cat notes.md | chatllm ask "…")')
    text = read_stream(sys.stdin.buffer, "standard input")
    if not text.strip():
        raise InputError("the documents on standard input are empty")
    return text


def _indexing(progress: ProgressCallback | None) -> Callable[[int, int], None] | None:
    """The index's progress (files read of those to read) as the runner shows a job's."""
    if progress is None:
        return None
    return lambda done, total: progress(Progress("indexing the documents", done, total, 0, None, False, unit="file"))


# ---------------------------------------------------------------- serve


def serving(options: Mapping[str, Any]) -> ServedJob:
    """`ask` as a `serve` model over `serve --docs PATH...`, read and indexed
    once as the server starts (a bad PATH stops it there). A request's last
    user message is the question; the reply is the answer alone, and the
    response carries `citations` and `answered` beside it (Finish.fields)."""
    paths = [Path(path) for path in options.get("docs") or []]
    collection = collect(paths, ask_cache_dir() / "index")
    base = KnowledgeBase(collection.passages)  # one search index for every request

    def served(template: Template, values: dict[str, str], persona_for: Callable[..., Any]) -> Served:
        def respond(meter: Meter, request: ReplyRequest) -> Events:
            ask = Ask(
                template,
                collection,
                request.question,
                sources=False,
                tiny_model=(meter.engine.model_bytes or TINY_MODEL_BYTES) < TINY_MODEL_BYTES,
                judge_cache=ask_cache_dir() / "judges",
                base=base,
            )
            return answer_events(meter, ask, request.params)

        return Served("", _served_question, respond=respond)

    return ServedJob(served, tuple(collection.notes))


def _served_question(text: str) -> str:
    if not text.strip():
        raise InputError("the question (the last user message) is empty")
    return text


def checked_question(question: str) -> str:
    if not question.strip():
        raise InputError('the question is empty: chatllm ask "QUESTION" [PATH...]')
    return question.strip()


def cited(given: Sequence[Passage], answer: str, question: str) -> list[Citation]:
    """The passages the answer draws on (words and numbers of theirs it uses
    that the question did not), most used first; all it was given when none
    can be told (an answer in another language than its passages)."""
    said = content_terms(answer) - content_terms(question)
    overlaps = [(len(said & content_terms(p.heading + " " + p.text)), index) for index, p in enumerate(given)]
    best = max((overlap for overlap, _ in overlaps), default=0)
    chosen = [
        given[i] for overlap, i in sorted(overlaps, key=lambda o: (-o[0], o[1])) if overlap and 2 * overlap >= best
    ]
    citations = [Citation(p.source, p.heading, p.lines) for p in (chosen or given)]
    return list(dict.fromkeys(citations))


def _declines(answer: str) -> bool:
    first = answer.strip().split("\n", 1)[0]
    return bool(NOT_ANSWERED.search(first) or DECLINES.search(first))


def _render(passage: Passage) -> str:
    where = f" › {passage.heading}" if passage.heading else ""
    return f"--- {passage.source}{where}\n{passage.text}"


def _estimate(text: str) -> int:
    return estimate_tokens(text)
