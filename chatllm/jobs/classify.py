"""Classifying short texts into a fixed set of labels.

Each item is one user turn after a fixed instruction naming the labels, so the
engine reuses the instruction's evaluated prefix from item to item (and from
run to run, through the prefix-state cache): an item costs its own tokens only.

On a local model the label is chosen by the model's own log-probabilities:
every label is scored as the whole reply (engine `score`), so the answer is
always exactly one of the labels, and the probabilities are the softmax of
those scores. `calibrate` takes out the model's preference for a label whatever
the text says, measured on a content-free input (Zhao et al., "Calibrate
Before Use", 2021); it is off because on the embedded model it made labels
less accurate (72 labelled items: 36% against 46%; benchmarks/README.md,
"Structured output").
Where the engine cannot score (a remote server), the reply is constrained to
the labels by a JSON Schema enum instead, and no probabilities are reported.
`multi` lets an item take several labels: generated under a schema whose
items are the labels, on every backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.grammar import json_schema_text
from chatllm.errors import EngineError, UsageError
from chatllm.inputs import read_file
from chatllm.jobs.items import input_items
from chatllm.jobs.job import Plan, Setup
from chatllm.jobs.prompting import generation_params
from chatllm.jobs.structured import grammar_for
from chatllm.reply.events import Finish, Text
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, Events, complete
from chatllm.templates import Template, load_template

CONTENT_FREE = "N/A"
DEFAULT_INSTRUCTION = "Classify the text into exactly one of these labels: {labels}. Reply with the label only."
MULTI_INSTRUCTION = "Classify the text with every label that applies, from: {labels}. Reply with a JSON list of labels."


@dataclass(frozen=True)
class Classification:
    text: str  # the item
    labels: tuple[str, ...]  # the chosen label, or several with multi
    probabilities: dict[str, float] | None = None  # by the model's scores, when it has them

    def as_json(self) -> dict:
        return {
            "input": self.text,
            "label": self.labels[0] if len(self.labels) == 1 else None,
            "labels": list(self.labels),
            "probabilities": self.probabilities,
        }


def parse_labels(text: str | None = None, lines: Sequence[str] = ()) -> tuple[str, ...]:
    """Labels from `--labels a,b,c` or the lines of a labels file. Raises
    UsageError for an empty set or a label given twice."""
    raw = [p.strip() for p in text.split(",")] if text is not None else [line.strip() for line in lines]
    labels = tuple(label for label in raw if label)
    if not labels:
        raise UsageError(
            "no labels: give --labels a,b,c, a --labels-file with one label per line, or a template with labels"
        )
    seen: set[str] = set()
    for label in labels:
        if label.casefold() in seen:
            raise UsageError(f"the label '{label}' is given twice")
        seen.add(label.casefold())
    return labels


def instruction_for(labels: Sequence[str], multi: bool, given: str = "") -> str:
    """The system prompt: the one given, else one naming the labels."""
    return given or (MULTI_INSTRUCTION if multi else DEFAULT_INSTRUCTION).format(labels=", ".join(labels))


def item_messages(instruction: str, text: str) -> list[Message]:
    """One item's prompt: the fixed instruction, then the item (so the
    instruction's evaluated prefix is reused from item to item)."""
    return [Message("system", instruction), Message("user", text)]


def labels_schema(labels: Sequence[str], multi: bool) -> dict:
    if multi:
        return {"type": "array", "items": {"enum": list(labels)}, "uniqueItems": True, "minItems": 1}
    return {"enum": list(labels)}


@dataclass
class Classifier:
    meter: Meter
    labels: tuple[str, ...]
    params: GenerationParams
    instruction: str = ""  # the system prompt; default: one naming the labels
    multi: bool = False
    calibrate: bool = False
    _calibration: list[float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.instruction = instruction_for(self.labels, self.multi, self.instruction)
        engine = self.meter.engine
        needed = engine.count_prompt_tokens(self._messages("")) + sum(
            engine.count_tokens(label) + 2 for label in self.labels
        )
        if needed >= engine.context_size:
            raise UsageError(
                f"the labels and the instruction take about {needed} tokens, more than the "
                f"{engine.context_size}-token context; use fewer labels or a larger --ctx"
            )

    def _messages(self, text: str) -> list[Message]:
        return item_messages(self.instruction, text)

    def classify(self, items: Sequence[str]) -> Iterator[Classification]:
        for item in items:
            yield self.classify_one(item)

    def classify_one(self, text: str) -> Classification:
        engine = self.meter.engine
        if not self.multi and engine.supports_scoring:
            return self._by_scores(text)
        return self._by_schema(text)

    def _scores(self, text: str) -> list[float]:
        scores = self.meter.score(self._messages(text), self.labels)
        if not self.calibrate:
            return scores
        if self._calibration is None:
            self._calibration = self.meter.score(self._messages(CONTENT_FREE), self.labels)
        return [s - c for s, c in zip(scores, self._calibration)]

    def _by_scores(self, text: str) -> Classification:
        scores = self._scores(text)
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        probabilities = {label: round(w / total, 4) for label, w in zip(self.labels, weights)}
        best = self.labels[scores.index(top)]
        return Classification(text, (best,), probabilities)

    def _by_schema(self, text: str) -> Classification:
        schema = labels_schema(self.labels, self.multi)
        params = replace(
            self.params,
            json_schema=json_schema_text(schema),
            grammar=None,
            think=False,
            max_tokens=self.params.max_tokens or 16 + 8 * len(self.labels),
        )
        reply = complete(self.meter, self._messages(text), params, Checks(repetition="off")).strip()
        try:
            answer = json.loads(reply)
        except json.JSONDecodeError:
            raise EngineError(f"the model's answer is not one of the labels: {reply[:80]!r}") from None
        chosen = tuple(answer) if isinstance(answer, list) else (answer,)
        if not chosen or any(label not in self.labels for label in chosen):
            raise EngineError(f"the model's answer is not one of the labels: {reply[:80]!r}")
        return Classification(text, chosen)


class ClassifyJob:
    """`chatllm classify`: one reply per item, its label(s); --json adds the
    probabilities (Finish.fields)."""

    def __init__(self, setup: Setup) -> None:
        values = setup.values
        chosen = load_template(values["template"]) if values.get("template") else None
        self.labels = _label_set(values.get("labels"), values.get("labels_file"), chosen)
        self.multi = bool(values.get("multi"))
        given = values.get("system")
        if given is None:
            given = chosen.render_system({}) if chosen is not None else ""
        self.instruction = instruction_for(self.labels, self.multi, given)
        self.items = input_items(list(values.get("files") or []), whole=bool(values.get("per_file")))
        defaults = {} if chosen is not None else {"temperature": 0.0}  # deterministic unless asked
        self.params = generation_params(chosen, defaults, setup.sampling)
        self.template = chosen.name if chosen is not None else "classify"
        self.repetition = "off"  # a label is not prose; its form is the schema's or the scores'
        self.local = not setup.model.remote
        variables = {"labels": ", ".join(self.labels)}
        self.record: dict[str, Any] | None = {
            "prompt": "\n".join(self.items),
            "variables": variables,
            "params": self.params,
        }

    def plan(self) -> Plan:
        schema = labels_schema(self.labels, self.multi)
        grammar = grammar_for(schema) if self.local else None
        return Plan(item_messages(self.instruction, self.items[0]), self.params, schema, grammar)

    def run(self, meter: Meter) -> Events:
        classifier = Classifier(meter, self.labels, self.params, self.instruction, self.multi)
        for result in classifier.classify(self.items):
            stats = meter.engine.last_stats
            fields = result.as_json()
            if self.multi:  # --json gives several labels as a JSON list
                fields = {"text": json.dumps(list(result.labels), ensure_ascii=False), **fields}
            yield Text(", ".join(result.labels))
            yield Finish(stats.finish_reason, stats, fields)


def _label_set(labels: str | None, labels_file: Path | None, template: Template | None) -> tuple[str, ...]:
    if labels is not None and labels_file is not None:
        raise UsageError("give --labels or --labels-file, not both")
    if labels is not None:
        return parse_labels(labels)
    if labels_file is not None:
        return parse_labels(lines=read_file(labels_file).splitlines())
    if template is not None and template.labels:
        return template.labels
    return parse_labels("")


def prepare(setup: Setup) -> ClassifyJob:
    return ClassifyJob(setup)
