"""`chatllm run`: any task template on files or stdin, in one call; and what
every task-template job shares (summarize and translate are TaskJobs that
split long input themselves, jobs/summarize.py and jobs/translate.py).

A TaskJob is planned before the model loads (the template, its variables,
the input read, its language detected, the sampling settings merged), so
--dry-run prints exactly what the first call would send, and a bad input or
schema fails before any model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatllm import inputs
from chatllm.errors import InputError, TemplateError, UsageError
from chatllm.jobs.extract import complete_json
from chatllm.jobs.job import Plan, Served, Setup
from chatllm.jobs.model_fit import ModelFit, is_tiny
from chatllm.jobs.prompting import generation_params, input_budget, repetition_mode, task_messages
from chatllm.jobs.structured import grammar_for, structure_for
from chatllm.jobs.tooling import check_tools, offering, open_tools
from chatllm.languages import Language, detect_language
from chatllm.reply.events import Notice, Text
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Checks, Events, answer, finished
from chatllm.reply.tool_loop import prompt_messages
from chatllm.templates import Template, load_template


class TaskJob:
    """A task template's reply to the input (files or stdin)."""

    def __init__(self, setup: Setup, template: Template, given: dict[str, str], schema: str | None = None) -> None:
        self.setup = setup
        self._template = template
        self.template = template.name
        self.system: str | None = setup.values.get("system")
        self.values = template.resolve_variables(given)
        self.structure = structure_for(schema, template.schema, local=not setup.model.remote)
        files: list[Path] = list(setup.values.get("files") or [])
        self.text = inputs.read_input(files, required=template.input == "required").text
        self.detected: Language | None = detect_language(self.text) if self.text.strip() else None
        self.fill_values(given)
        self.params = generation_params(template, setup.sampling)
        self.repetition = repetition_mode(template, setup.repetition, tiny_model=is_tiny(setup.model.path))
        self.tools = open_tools(setup, template)
        check_tools(self.tools, self.structure)
        self.params = offering(self.params, self.tools, setup.values.get("tool_choice"))
        self._plan = self.first_call()
        self.record: dict[str, Any] | None = {"prompt": self.text, "variables": self.values, "params": self.params}

    def fill_values(self, given: dict[str, str]) -> None:
        """Variables the job fills in from the input (a summary's language)."""

    def first_call(self) -> Plan:
        """What the first call sends (the values may take what the job works
        out before it, such as a summary's length)."""
        messages = prompt_messages(task_messages(self._template, self.values, self.text, self.system), self.params)
        grammar = grammar_for(self.structure) if self.structure is not None and not self.setup.model.remote else None
        return Plan(messages, self.params, self.structure, grammar)

    def plan(self) -> Plan:
        return self._plan

    def hint(self, fit: ModelFit) -> str | None:
        """What to say when the model is too small for this input."""
        detected = self.detected
        return fit.for_language(detected.tag if detected else None, detected.name if detected else "")

    def run(self, meter: Meter) -> Events:
        hint = self.hint(ModelFit(self.setup.model.path, enabled=self.setup.hints))
        if hint:
            yield Notice(hint)
        yield from finished(meter, self.reply(meter))

    def reply(self, meter: Meter) -> Events:
        """The reply, in one call: the input must fit the context (summarize
        and translate split long input themselves)."""
        engine, template = meter.engine, self._template
        check_tools(self.tools, self.structure, engine)
        budget = input_budget(engine, template, self.values, self.params, self.system)
        used = engine.count_tokens(self.text)
        if used > budget:
            raise InputError(
                f"the input is {used} tokens but template '{template.name}' can take {budget} with this context; "
                "use a larger --ctx (summarize and translate split long input themselves)"
            )
        messages = task_messages(template, self.values, self.text, self.system)
        if self.structure is not None:
            document = complete_json(meter, messages, self.structure, self.params)
            yield Text(json.dumps(document, ensure_ascii=False, indent=2))
            return
        yield from answer(meter, messages, self.params, Checks(source=self.text), self.tools)


def prepare(setup: Setup) -> TaskJob:
    """`chatllm run TEMPLATE`."""
    template = load_template(setup.values["template"])
    if template.kind == "persona":
        raise TemplateError(f"'{template.name}' is a persona; talk to it with `chatllm chat --persona {template.name}`")
    return TaskJob(setup, template, parse_variables(setup.values.get("variable")), setup.values.get("schema"))


def served(template: Template, values: dict[str, str], persona_for: Callable[..., Any]) -> Served:
    """A task template as a `serve` model: its system prompt, and the newest
    user message rendered through its prompt."""
    return Served(template.render_system(values), lambda text: template.render_prompt(values, text))


def parse_variables(pairs: list[str] | None) -> dict[str, str]:
    """-v key=value pairs."""
    values = {}
    for pair in pairs or []:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"'{pair}' is not key=value (e.g. -v length=short)")
        values[key.strip()] = value
    return values
