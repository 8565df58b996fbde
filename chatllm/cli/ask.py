"""`chatllm ask`: a question answered from the user's documents (jobs/ask.py).

The command only parses, reads standard input, shows the indexing progress and
renders: everything else is the job's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from chatllm.cli.options import RunOptions, generation_options
from chatllm.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    @generation_options
    def ask(
        options: RunOptions,
        question: Annotated[str, typer.Argument(help="The question, in any language.", show_default=False)],
        paths: Annotated[
            Optional[list[Path]],
            typer.Argument(
                help="Files and folders to answer from ('-' for stdin); stdin when none.", show_default=False
            ),
        ] = None,
        allow_general: Annotated[
            bool,
            typer.Option(
                "--allow-general",
                help="When the documents do not answer, say so and answer from the model's general knowledge.",
            ),
        ] = False,
    ) -> None:
        """Answer a question from your documents (text, Markdown, reStructuredText, HTML, PDF), citing its sources.

        A folder is indexed once, in the cache folder, and then only its changed files again.
        """
        from chatllm.cli import running
        from chatllm.jobs.ask import Ask, checked_question
        from chatllm.jobs.model_fit import is_tiny
        from chatllm.jobs.prompting import repetition_mode
        from chatllm.render import notice

        checked_question(question)
        files = [path for path in paths or [] if str(path) != "-"]
        stdin_text = _stdin() if not files or len(files) < len(paths or []) else None
        config = running.settings()
        if options.dry_run:
            job = Ask.open(question, files, stdin_text, allow_general=allow_general)
            params = job.params(**options.sampling())
            running.print_dry_run(job.messages(job.passages(None)), params, "ask", options.model)
            return
        with running.loading_model(options, config) as loading:
            tiny = is_tiny(loading.model.path)
            with running.map_progress(True, "indexing the documents") as progress:
                job = Ask.open(
                    question,
                    files,
                    stdin_text,
                    progress,
                    tiny_model=tiny,
                    allow_general=allow_general,
                    sources=not options.json,  # --json has them as data
                )
            for note in job.collection.notes:
                notice(note)
            params = job.params(**options.sampling())
            running.run_generation(
                options,
                config,
                "ask",
                lambda meter: job.run(meter, params),
                loading.model,
                loading.engine(),
                record={"prompt": question, "variables": {"paths": [str(p) for p in paths or []]}, "params": params},
                repetition=repetition_mode(job.template, options.repetition, tiny_model=tiny),
                extra_json=job.json_fields,
            )


def _stdin() -> str:
    """The documents piped in; an error on a terminal, where none can be."""
    from chatllm.inputs import read_stream

    if sys.stdin.isatty():
        raise InputError('no documents: name files or folders, or pipe text in (cat notes.md | chatllm ask "…")')
    text = read_stream(sys.stdin.buffer, "standard input")
    if not text.strip():
        raise InputError("the documents on standard input are empty")
    return text
