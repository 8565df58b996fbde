"""One typer command per entry of the job table (jobs/table.py): the job's own
options, then the shared ones; the command parses them and hands them to
the one way every job runs (running.run_job)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import typer

from chatllm.cli.options import SHARED_PARAMETERS, parameter, plain, run_options
from chatllm.jobs import table
from chatllm.jobs.table import JobSpec


def register(app: typer.Typer) -> None:
    for spec in table.JOBS:
        app.command(spec.name, help=spec.help)(_command(spec))


def _command(spec: JobSpec) -> Callable[..., None]:
    def command(click_context: typer.Context, **values: Any) -> None:
        from chatllm.cli import running
        from chatllm.inputs import reading_limit

        options = run_options(values)
        given = _given(click_context)
        with reading_limit(options.max_input_size):  # every input the job reads, bounded
            running.run_job(spec, options, {name: plain(value) for name, value in values.items()}, given)

    # (--ctx is an option: the context needs another name)
    context = inspect.Parameter("click_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    parameters = [context, *(parameter(option) for option in spec.options), *SHARED_PARAMETERS]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__name__ = command.__qualname__ = spec.name
    command.__doc__ = spec.help
    return command


def _given(ctx: typer.Context) -> frozenset[str]:
    """The options given on the command line or by their environment
    variable, not left to a default."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.add(name)
    return frozenset(given)
