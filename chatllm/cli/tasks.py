"""One-shot commands: summarize, translate, and run (any task template)."""

from __future__ import annotations

import functools
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from chatllm.cli import completion
from chatllm.cli.options import RunOptions, generation_options
from chatllm.errors import InputError, TemplateError, UsageError
from chatllm.reply.pipeline import Events

FilesArgument = Annotated[
    Optional[list[Path]], typer.Argument(help="Files to read ('-' for stdin); stdin when none.", show_default=False)
]
SystemOption = Annotated[Optional[str], typer.Option("--system", "-s", help="Replace the template's system prompt.")]
SchemaOption = Annotated[
    Optional[str],
    typer.Option(
        "--schema",
        help="The reply is JSON matching this schema: a JSON Schema file, inline JSON, or fields such as 'name, age int'.",
        rich_help_panel="Output",
    ),
]


class Length(str, Enum):
    short = "short"
    medium = "medium"
    long = "long"


class Format(str, Enum):
    paragraph = "paragraph"
    bullets = "bullets"


def _run_task(
    options: RunOptions,
    template_name: str,
    files: list[Path] | None,
    given: dict[str, str],
    system: str | None,
    job_name: str,
    schema: str | None = None,
) -> None:
    from chatllm.cli import running

    config = running.settings()
    if options.dry_run:
        _prepare_and_run(options, config, template_name, files, given, system, job_name, loading=None, schema=schema)
        return
    with running.loading_model(options, config) as loading:
        _prepare_and_run(options, config, template_name, files, given, system, job_name, loading, schema=schema)


def _prepare_and_run(
    options: RunOptions,
    config,
    template_name: str,
    files: list[Path] | None,
    given: dict[str, str],
    system: str | None,
    job_name: str,
    loading,
    schema: str | None = None,
) -> None:
    """Everything before the first token that needs no model, done while the model
    loads; then the job. `loading` is None for --dry-run."""
    from chatllm.cli import running
    from chatllm.inputs import read_input
    from chatllm.jobs.model_fit import ModelFit, is_tiny
    from chatllm.jobs.prompting import generation_params, repetition_mode, task_messages
    from chatllm.languages import detect_language
    from chatllm.render import notice
    from chatllm.templates import load_template

    template = load_template(template_name)
    values = template.resolve_variables(given)
    structure = structure_for(options, schema, template.schema)
    source = read_input(files or [], required=template.input == "required")
    detected = detect_language(source.text) if source.text.strip() else None
    if job_name == "summarize" and not given.get("lang"):
        values["lang"] = detected.for_prompt() if detected else ""
    if job_name == "translate" and not given.get("from") and detected:
        values["from"] = detected.name
    params = generation_params(template, options.sampling())
    if job_name == "summarize":
        # What the summary's prompt asks for; the job sets it again from the
        # model's own token count (this estimate is for --dry-run).
        from chatllm.jobs.summarize import asked_length, prompt_values, summary_language

        estimate = (len(source.text) + 3) // 4
        asked = asked_length(
            values.get("length", "medium"), source.text, estimate, summary_language(values), params.max_tokens
        )
        values = prompt_values(template, values, asked)
    if loading is None:
        running.print_dry_run(
            task_messages(template, values, source.text, system), params, template.name, options.model, schema=structure
        )
        return
    fit = ModelFit(loading.model.path, enabled=config.hints)
    hint = (
        fit.for_translation()
        if job_name == "translate"
        else fit.for_language(detected.tag if detected else None, detected.name if detected else "")
    )
    if hint:
        notice(hint)
    with running.map_progress(enabled=job_name == "summarize") as progress:
        job = functools.partial(_job, job_name, template, values, source.text, params, system, progress, structure)
        running.run_generation(
            options,
            config,
            template.name,
            job,
            loading.model,
            loading.engine(),
            record={"prompt": source.text, "variables": values, "params": params},
            repetition=repetition_mode(template, options.repetition, tiny_model=is_tiny(loading.model.path)),
        )


def structure_for(options: RunOptions, given: str | None, declared: dict | None) -> dict | None:
    """The schema a reply must match: --schema, else the template's, else None.
    Checked now (and turned into a grammar, for a local model), before any
    model loads."""
    from chatllm.jobs.schemas import parse_schema

    schema = parse_schema(given) if given is not None else declared
    if schema is not None and not (options.model or "").startswith("openai:"):
        from chatllm.engine.grammar import json_schema_text, schema_to_gbnf

        schema_to_gbnf(json_schema_text(schema))
    return schema


def _job(job_name: str, template, values, text: str, params, system, progress, structure, meter) -> Events:
    """The text pieces of one task: summarize and translate split long input
    themselves; any other template must fit the context in one call."""
    if job_name == "summarize":
        from chatllm.jobs.summarize import summarize

        return summarize(meter, template, values, text, params, system, on_progress=progress)
    if job_name == "translate":
        from chatllm.jobs.translate import translate

        return translate(meter, template, values, text, params, system)
    from chatllm.jobs.prompting import input_budget, task_messages

    budget = input_budget(meter.engine, template, values, params, system)
    used = meter.engine.count_tokens(text)
    if used > budget:
        raise InputError(
            f"the input is {used} tokens but template '{template.name}' can take {budget} with this context; "
            "use a larger --ctx (summarize and translate split long input themselves)"
        )
    if structure is not None:
        return _json_reply(meter, task_messages(template, values, text, system), structure, params)
    from chatllm.reply.pipeline import Checks, call

    return call(meter, task_messages(template, values, text, system), params, Checks(source=text))


def _json_reply(meter, messages, schema: dict, params) -> Events:
    from chatllm.jobs.extract import complete_json
    from chatllm.reply.events import Text

    yield Text(json.dumps(complete_json(meter, messages, schema, params), ensure_ascii=False, indent=2))


def parse_variables(pairs: list[str] | None) -> dict[str, str]:
    values = {}
    for pair in pairs or []:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"'{pair}' is not key=value (e.g. -v length=short)")
        values[key.strip()] = value
    return values


def register(app: typer.Typer) -> None:
    @app.command()
    @generation_options
    def summarize(
        options: RunOptions,
        files: FilesArgument = None,
        length: Annotated[Length, typer.Option("--length", help="How long the summary is.")] = Length.medium,
        format: Annotated[Format, typer.Option("--format", help="Prose or a bullet list.")] = Format.paragraph,
        lang: Annotated[
            Optional[str],
            typer.Option(
                "--lang",
                help="Language of the summary (default: the input's).",
                autocompletion=completion.language_codes,
            ),
        ] = None,
        system: SystemOption = None,
    ) -> None:
        """Summarize files or stdin; long input is summarized in parts, then combined."""
        given = {"length": length.value, "format": format.value}
        if lang:
            from chatllm.languages import parse_language

            given["lang"] = parse_language(lang).for_prompt()
        _run_task(options, "summarize", files, given, system, "summarize")

    @app.command()
    @generation_options
    def translate(
        options: RunOptions,
        files: FilesArgument = None,
        to: Annotated[
            str,
            typer.Option(
                "--to",
                "-t",
                help="Target language: a code or a name (fr, French, zh-Hant, 中文).",
                autocompletion=completion.language_codes,
            ),
        ] = ...,  # type: ignore[assignment]
        source_language: Annotated[
            Optional[str],
            typer.Option(
                "--from", "-f", help="Source language (default: detected).", autocompletion=completion.language_codes
            ),
        ] = None,
        system: SystemOption = None,
    ) -> None:
        """Translate files or stdin, keeping paragraphs, lists and code blocks in place."""
        from chatllm.languages import parse_language

        given = {"to": parse_language(to).name}
        if source_language:
            given["from"] = parse_language(source_language).name
        _run_task(options, "translate", files, given, system, "translate")

    @app.command()
    @generation_options
    def run(
        options: RunOptions,
        template: Annotated[
            str,
            typer.Argument(
                help="Template name (see `chatllm templates list`) or a path to a YAML file.",
                autocompletion=completion.template_names,
            ),
        ],
        files: FilesArgument = None,
        variable: Annotated[
            Optional[list[str]], typer.Option("--var", "-v", help="Template variable as key=value (repeatable).")
        ] = None,
        system: SystemOption = None,
        schema: SchemaOption = None,
    ) -> None:
        """Run any task template on files or stdin."""
        from chatllm.templates import load_template

        if load_template(template).kind == "persona":
            raise TemplateError(f"'{template}' is a persona; talk to it with `chatllm chat --persona {template}`")
        _run_task(options, template, files, parse_variables(variable), system, "run", schema=schema)
