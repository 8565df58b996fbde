"""`chatllm classify` and `chatllm extract`: output valid by construction."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from chatllm.cli import completion
from chatllm.cli.options import RunOptions, generation_options
from chatllm.cli.tasks import structure_for
from chatllm.engine.base import Message, generation_params
from chatllm.errors import InputError, UsageError

FilesArgument = Annotated[
    Optional[list[Path]], typer.Argument(help="Files to read ('-' for stdin); stdin when none.", show_default=False)
]
TemplateOption = Annotated[
    Optional[str],
    typer.Option(
        "--template",
        "-t",
        help="A template that declares the labels or the schema (e.g. sentiment).",
        autocompletion=completion.template_names,
    ),
]
SystemOption = Annotated[
    Optional[str], typer.Option("--system", "-s", help="Replace the instruction (the system prompt).")
]


def _items(files: list[Path] | None, whole: bool) -> list[str]:
    """Each non-empty line of the input, or each file whole (stdin as one)."""
    from chatllm.inputs import read_file, read_input

    if whole:
        texts = [read_file(path) for path in files] if files else [read_input([]).text]
        items = [text.strip() for text in texts if text.strip()]
    else:
        items = [line.strip() for line in read_input(files or []).text.splitlines() if line.strip()]
    if not items:
        raise InputError("the input has no text to work on")
    return items


def _dry_run(options: RunOptions, template_name: str, messages, params, schema) -> None:
    """--dry-run: the messages, and the schema and grammar that would constrain the reply."""
    from chatllm.cli.running import print_dry_run

    print_dry_run(messages, params, template_name, options.model, schema=schema)


def register(app: typer.Typer) -> None:
    @app.command()
    @generation_options
    def classify(
        options: RunOptions,
        files: FilesArgument = None,
        labels: Annotated[
            Optional[str],
            typer.Option("--labels", "-l", help="The labels, separated by commas (any text, Chinese included)."),
        ] = None,
        labels_file: Annotated[
            Optional[Path], typer.Option("--labels-file", help="A file with one label per line.")
        ] = None,
        template: TemplateOption = None,
        per_file: Annotated[
            bool, typer.Option("--per-file", help="Label each file as a whole instead of each line.")
        ] = False,
        multi: Annotated[bool, typer.Option("--multi", help="Allow several labels per item.")] = False,
        system: SystemOption = None,
    ) -> None:
        """Label each input line (or each file) with exactly one of the labels.

        The label is chosen by the model's own probabilities; --json adds them.
        """
        from chatllm.cli import running
        from chatllm.inputs import read_file
        from chatllm.jobs.classify import Classifier, labels_schema, parse_labels
        from chatllm.jobs.prompting import generation_params
        from chatllm.templates import load_template

        chosen = load_template(template) if template else None
        if labels is not None and labels_file is not None:
            raise UsageError("give --labels or --labels-file, not both")
        if labels is not None:
            label_set = parse_labels(labels)
        elif labels_file is not None:
            label_set = parse_labels(lines=read_file(labels_file).splitlines())
        elif chosen is not None and chosen.labels:
            label_set = chosen.labels
        else:
            label_set = parse_labels("")
        instruction = system if system is not None else (chosen.render_system({}) if chosen is not None else "")
        items = _items(files, per_file)
        params = generation_params(chosen, options.sampling()) if chosen else generation_params_plain(options)
        name = chosen.name if chosen else "classify"
        config = running.settings()
        if options.dry_run:
            from chatllm.engine.fake import FakeEngine
            from chatllm.reply.meter import Meter

            preview = Classifier(Meter(FakeEngine(context_size=1 << 20)), label_set, params, instruction, multi)
            _dry_run(options, name, preview._messages(items[0]), params, labels_schema(label_set, multi))
            return
        from chatllm.render import result_json
        from chatllm.reply.meter import Meter

        with running.loading_model(options, config) as loading:
            engine = loading.engine()
            running.prepare_engine(options, engine)
            meter = Meter(engine)
            classifier = Classifier(meter, label_set, params, instruction, multi)
            lines = []
            for result in classifier.classify(items):
                shown = ", ".join(result.labels)
                lines.append(shown)
                if options.json:
                    stats = engine.last_stats
                    payload = json.loads(
                        result_json(
                            json.dumps(list(result.labels), ensure_ascii=False) if multi else shown,
                            loading.model.name,
                            name,
                            stats,
                        )
                    )
                    payload.update(result.as_json())
                    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
                else:
                    sys.stdout.write(shown + "\n")
                sys.stdout.flush()
            running.finish_run(
                options,
                config,
                loading.model,
                name,
                {"prompt": "\n".join(items), "variables": {"labels": ", ".join(label_set)}, "params": params},
                "\n".join(lines),
                meter,
            )

    @app.command()
    @generation_options
    def extract(
        options: RunOptions,
        files: FilesArgument = None,
        schema: Annotated[
            Optional[str],
            typer.Option(
                "--schema",
                help="A JSON Schema file, inline JSON, or fields such as 'name, age int, tags list, city: where they live'.",
            ),
        ] = None,
        template: TemplateOption = None,
        jsonl: Annotated[
            bool,
            typer.Option("--jsonl", help="Each input line is one input; print one compact JSON document per line."),
        ] = False,
        system: SystemOption = None,
    ) -> None:
        """Pull fields out of each input as JSON matching a schema."""
        from chatllm.cli import running
        from chatllm.jobs.extract import DEFAULT_INSTRUCTION, describe_fields
        from chatllm.jobs.extract import extract as run_extract
        from chatllm.templates import load_template

        chosen = load_template(template) if template else None

        the_schema = structure_for(options, schema, chosen.schema if chosen is not None else None)
        if the_schema is None:
            raise UsageError(
                "give --schema (a JSON Schema file, inline JSON, or fields such as 'name, age int'), or a template with a schema"
            )
        instruction = system or (chosen.render_system({}) if chosen is not None and chosen.system.strip() else None)
        items = _items(files, whole=not jsonl)
        params = generation_params_plain(options) if chosen is None else _template_params(chosen, options)
        name = chosen.name if chosen else "extract"
        config = running.settings()
        if options.dry_run:
            messages = [
                Message("system", instruction or DEFAULT_INSTRUCTION.format(fields=describe_fields(the_schema))),
                Message("user", items[0]),
            ]
            _dry_run(options, name, messages, params, the_schema)
            return
        from chatllm.render import result_json
        from chatllm.reply.meter import Meter

        with running.loading_model(options, config) as loading:
            meter = Meter(loading.engine())
            running.prepare_engine(options, meter.engine)
            outputs = []
            for item in items:
                document = run_extract(meter, the_schema, item, params, instruction)
                text = json.dumps(document, ensure_ascii=False, indent=None if jsonl or options.json else 2)
                outputs.append(text)
                if options.json:
                    text = result_json(text, loading.model.name, name, meter.engine.last_stats)
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            running.finish_run(
                options,
                config,
                loading.model,
                name,
                {"prompt": "\n\n".join(items), "variables": {}, "params": params},
                "\n".join(outputs),
                meter,
            )


def generation_params_plain(options: RunOptions):
    """Sampling for a job without a template: deterministic unless asked."""
    settings = {"temperature": 0.0, **{k: v for k, v in options.sampling().items() if v is not None}}
    return generation_params(settings)


def _template_params(template, options: RunOptions):
    from chatllm.jobs.prompting import generation_params

    return generation_params(template, options.sampling())
