"""The table of jobs: what every generating command is, in one place.

Each entry names a job, its help, its own options and the module that plans
and runs it (`prepare(setup) -> Job`, imported only when the command runs).
The command line (cli/commands.py builds one typer command per entry), early
model loading (cli/early_load.py), shell completion, `--dry-run` and `serve`'s
template models all read this table. Options are declared as plain data, so
reading them costs no typer import (early loading reads them before typer is
imported at all).

A new job is an entry here, a module in jobs/ with `prepare` (and `served`
when `serve` offers its templates, or `serving(options)` when `serve` takes
options for them), and a template in prompts/.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatllm.jobs.job import Job, ServedJob, Setup
from chatllm.jobs.options import OUTPUT_PANEL, PARALLEL_ITEMS, SHARED, TOOL_OPTIONS, Option

if TYPE_CHECKING:
    from chatllm.templates import Template


@dataclass(frozen=True)
class JobSpec:
    """One job: a command of the same name.

    `module` holds `prepare(setup) -> Job` and, when `serves` names template
    kinds, `served(template, values, persona_for) -> Served`. `prose`: its
    replies are text a terminal shows as Markdown (else data: one plain reply
    per line). `conversation`: a person talks to it turn by turn.
    `streams_parts`: its text streams part by part as a long input is worked
    through (a translation), which is progress enough on a terminal.
    `serve_options`: what `serve` takes for the templates it serves (ask's
    --docs); the module's `serving(options) -> ServedJob` makes the job ready
    with them once, as the server starts; given none of them, `serve` does not
    offer its templates."""

    name: str
    help: str
    module: str
    options: tuple[Option, ...] = ()
    prose: bool = True
    conversation: bool = False
    streams_parts: bool = False
    serves: tuple[str, ...] = ()
    serve_options: tuple[Option, ...] = ()

    def prepare(self, setup: Setup) -> Job:
        job: Job = importlib.import_module(self.module).prepare(setup)
        return job

    def offered(self, options: Mapping[str, Any]) -> bool:
        """Whether `serve`, given `options`, offers this job's templates."""
        return bool(self.serves) and (not self.serve_options or any(options.get(o.name) for o in self.serve_options))

    def serving(self, options: Mapping[str, Any]) -> ServedJob:
        """The job as `serve` offers it, given serve's values of `serve_options`."""
        module = importlib.import_module(self.module)
        if self.serve_options:
            job: ServedJob = module.serving(options)
            return job
        return ServedJob(module.served)


FILES = Option("files", (), "Files to read ('-' for stdin); stdin when none.", Path, many=True, show_default=False)
SYSTEM = Option("system", ("--system", "-s"), "Replace the template's system prompt.")
SCHEMA = Option(
    "schema",
    ("--schema",),
    "The reply is JSON matching this schema: a JSON Schema file, inline JSON, or fields such as 'name, age int'.",
    panel=OUTPUT_PANEL,
)
VARIABLES = Option("variable", ("--var", "-v"), "Template variable as key=value (repeatable).", many=True)
TEMPLATE = Option(
    "template",
    ("--template", "-t"),
    "A template that declares the labels or the schema (e.g. sentiment).",
    complete="templates",
)

DOCS = Option(
    "docs",
    ("--docs",),
    "Files and folders the 'ask' model answers from (repeatable); without it, 'ask' is not served.",
    Path,
    many=True,
    show_default=False,
    metavar="PATH",
)

JOBS: tuple[JobSpec, ...] = (
    JobSpec(
        "chat",
        "Talk with a model: a REPL on a terminal; in a pipe, each input line is one turn.",
        "chatllm.jobs.conversation",
        (
            Option(
                "persona",
                ("--persona", "-p"),
                "Persona template to talk to (e.g. support).",
                default="chat",
                complete="personas",
            ),
            Option("system", ("--system", "-s"), "Replace the persona's system prompt."),
            Option(
                "kb",
                ("--kb",),
                "Knowledge file the persona answers from, instead of its own (repeatable); +FILE adds to its own.",
                many=True,
            ),
            Option(
                "knowledge_mode",
                ("--knowledge",),
                "How the persona's knowledge reaches the model: whole (all of it, in the system prompt), search (the "
                "passages found for each message), or auto (by its size and the model's).",
                default="auto",
                choices=("auto", "whole", "search"),
            ),
            Option("variable", ("--var", "-v"), "Persona variable as key=value (repeatable).", many=True),
            Option(
                "schema",
                ("--schema",),
                "Every reply is JSON matching this schema: a JSON Schema file, inline JSON, or fields such as "
                "'name, age int'.",
                panel=OUTPUT_PANEL,
            ),
            Option("resume_last", ("--continue", "-c"), "Continue the last saved chat.", bool, False),
            Option(
                "conversation",
                ("--conversation",),
                "Continue the saved conversation with this ID (see `chatllm logs list`).",
                int,
                complete="conversations",
            ),
            *TOOL_OPTIONS,
        ),
        conversation=True,
        serves=("persona",),
    ),
    JobSpec(
        "summarize",
        "Summarize files or stdin; long input is summarized in parts, then combined.",
        "chatllm.jobs.summarize",
        (
            FILES,
            Option(
                "length",
                ("--length",),
                "How long the summary is.",
                default="medium",
                choices=("short", "medium", "long"),
            ),
            Option(
                "format",
                ("--format",),
                "Prose or a bullet list.",
                default="paragraph",
                choices=("paragraph", "bullets"),
            ),
            Option("lang", ("--lang",), "Language of the summary (default: the input's).", complete="languages"),
            SYSTEM,
            PARALLEL_ITEMS,
        ),
    ),
    JobSpec(
        "translate",
        "Translate files or stdin, keeping paragraphs, lists and code blocks in place.",
        "chatllm.jobs.translate",
        (
            FILES,
            Option(
                "to",
                ("--to", "-t"),
                "Target language: a code or a name (fr, French, zh-Hant, 中文).",
                required=True,
                complete="languages",
            ),
            Option("source_language", ("--from", "-f"), "Source language (default: detected).", complete="languages"),
            SYSTEM,
        ),
        streams_parts=True,
    ),
    JobSpec(
        "run",
        "Run any task template on files or stdin.",
        "chatllm.jobs.task",
        (
            Option(
                "template",
                (),
                "Template name (see `chatllm templates list`) or a path to a YAML file.",
                required=True,
                complete="templates",
            ),
            FILES,
            VARIABLES,
            SYSTEM,
            SCHEMA,
            *TOOL_OPTIONS,
        ),
        serves=("task",),
    ),
    JobSpec(
        "classify",
        "Label each input line (or each file) with exactly one of the labels.\n\n"
        "The label is chosen by the model's own probabilities; --json adds them.",
        "chatllm.jobs.classify",
        (
            FILES,
            Option("labels", ("--labels", "-l"), "The labels, separated by commas (any text, Chinese included)."),
            Option("labels_file", ("--labels-file",), "A file with one label per line.", Path),
            TEMPLATE,
            Option("per_file", ("--per-file",), "Label each file as a whole instead of each line.", bool, False),
            Option("multi", ("--multi",), "Allow several labels per item.", bool, False),
            Option("system", ("--system", "-s"), "Replace the instruction (the system prompt)."),
        ),
        prose=False,
    ),
    JobSpec(
        "extract",
        "Pull fields out of each input as JSON matching a schema.",
        "chatllm.jobs.extract",
        (
            FILES,
            Option(
                "schema",
                ("--schema",),
                "A JSON Schema file, inline JSON, or fields such as 'name, age int, tags list, city: where they live'.",
            ),
            TEMPLATE,
            Option(
                "jsonl",
                ("--jsonl",),
                "Each input line is one input; print one compact JSON document per line.",
                bool,
                False,
            ),
            Option("system", ("--system", "-s"), "Replace the instruction (the system prompt)."),
            PARALLEL_ITEMS,
        ),
        prose=False,
    ),
    JobSpec(
        "ask",
        "Answer a question from your documents (text, Markdown, reStructuredText, HTML, PDF), citing its sources.\n\n"
        "A folder is indexed once, in the cache folder, and then only its changed files again.",
        "chatllm.jobs.ask",
        (
            Option("question", (), "The question, in any language.", required=True, show_default=False),
            Option(
                "paths",
                (),
                "Files and folders to answer from ('-' for stdin); stdin when none.",
                Path,
                many=True,
                show_default=False,
            ),
            Option(
                "allow_general",
                ("--allow-general",),
                "When the documents do not answer, say so and answer from the model's general knowledge.",
                bool,
                False,
            ),
        ),
        serves=("ask",),
        serve_options=(DOCS,),
    ),
)


def job(name: str) -> JobSpec | None:
    return next((spec for spec in JOBS if spec.name == name), None)


def generating_commands() -> frozenset[str]:
    """The commands that load a model: every job."""
    return frozenset(spec.name for spec in JOBS)


def serving(template: Template) -> JobSpec | None:
    """The job that serves `template` as a model: the job of its name, if that
    job serves templates at all, else the one serving its kind."""
    own = job(template.name)
    if own is not None and own.serves:
        return own
    return next((spec for spec in JOBS if template.kind in spec.serves), None)


def option_of(command: str, name: str) -> Option | None:
    """A job's option (or a shared one) by its name or a flag without dashes."""
    spec = job(command)
    if spec is None:
        return None
    for option in (*spec.options, *SHARED):
        words = {option.name, *(flag.lstrip("-").split("/")[0] for flag in option.flags)}
        if name in words or name.replace("-", "_") in words:
            return option
    return None
