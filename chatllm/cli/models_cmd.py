"""`chatllm models pull|list|show|rm|default|catalog`: getting and managing models.

The logic lives in chatllm.hub.resolve (Hub, cache), chatllm.hub.catalog (aliases) and
chatllm.hub.listing (what list/show print); these commands parse and print.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from chatllm.cli import completion
from chatllm.cli.interaction import can_ask, confirm
from chatllm.errors import UsageError

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="Alias (qwen2.5:1.5b), org/repo, org/repo:QUANT, org/repo/file.gguf, or hf:… of those.",
        autocompletion=completion.model_references,
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Download, list, inspect and remove GGUF models.", no_args_is_help=True)
    app.add_typer(models, name="models")
    models.command("pull")(models_pull)
    models.command("list")(models_list)
    models.command("show")(models_show)
    models.command("rm")(models_rm)
    models.command("default")(models_default)
    models.command("catalog")(models_catalog)


def models_pull(
    reference: ModelArgument,
    quant: Annotated[
        Optional[str],
        typer.Option("--quant", "-q", help="Quantization to download, e.g. Q8_0 (default: Q4_K_M or the closest)."),
    ] = None,
) -> None:
    """Download a model from the Hugging Face Hub (resumable, sha256-verified) and print its path."""
    from chatllm.cli.download_progress import stderr_progress
    from chatllm.hub import resolve as hub
    from chatllm.render import notice

    result = hub.pull_model(reference, quant=quant, progress=stderr_progress(), notify=notice)
    if not result.downloaded:
        sys.stderr.write(f"{result.model.reference} is up to date.\n")
    typer.echo(str(result.model.path))


def models_list(as_json: JsonOption = False) -> None:
    """Downloaded models: alias, repo, file, quantization, size, context length, parameters."""
    from chatllm.hub import listing as model_listing

    rows = model_listing.local_models()
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    if not rows:
        sys.stderr.write(
            "No models downloaded yet; try `chatllm models pull qwen2.5:0.5b` (see `chatllm models catalog`).\n"
        )
        return
    _print_table(
        ("MODEL", "REPO", "FILE", "QUANT", "SIZE", "CONTEXT", "PARAMS"),
        [row.table_cells() for row in rows],
    )


def models_show(reference: ModelArgument, as_json: JsonOption = False) -> None:
    """Facts from a model's GGUF header: architecture, context length, license, chat template."""
    from chatllm.hub import listing as model_listing

    details = model_listing.model_details(reference)
    if as_json:
        typer.echo(json.dumps(details.as_json(), indent=2))
        return
    for label, value in details.lines():
        typer.echo(f"{label + ':':<15}{value}")
    if details.info.chat_template:
        typer.echo("chat template:")
        for line in details.info.chat_template.strip().splitlines():
            typer.echo(f"  {line}")


def models_rm(
    reference: ModelArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a downloaded model from the cache (all quantizations for a bare org/repo)."""
    from chatllm.hub import listing as model_listing
    from chatllm.hub.download import format_bytes

    doomed = model_listing.models_to_remove(reference)
    names = ", ".join(f"{m.repo}/{m.variant.first.path}" for m in doomed)
    size = format_bytes(sum(m.size_on_disk() for m in doomed))
    if not yes:
        if not can_ask():
            raise UsageError(f"this would delete {names} ({size}); add --yes to delete without asking")
        if not confirm(f"Delete {names} ({size})?", default=False):
            raise typer.Exit(1)
    freed = model_listing.remove_models(doomed)
    sys.stderr.write(f"Deleted {names}; {format_bytes(freed)} freed.\n")


def models_default(
    reference: Annotated[
        Optional[str],
        typer.Argument(
            help="Model to use when -m is not given; omit to show the current one.",
            autocompletion=completion.model_references,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Set (or show) the model commands use when -m is not given."""
    from chatllm.hub import listing as model_listing

    if reference is None:
        typer.echo(model_listing.current_default_model())
        return
    path = model_listing.set_default_model(reference)
    sys.stderr.write(f"Default model set to {reference} in {path}.\n")


def models_catalog(as_json: JsonOption = False) -> None:
    """Well-known models you can pull by alias, with sizes and descriptions."""
    from chatllm.hub import listing as model_listing

    rows = model_listing.catalog_rows()
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    _print_table(("ALIAS", "SIZE", "PULLED", "REPO", "DESCRIPTION"), [row.table_cells() for row in rows])


def _print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns aligned with spaces on stdout: the same on a terminal and in a
    pipe (never wrapped or cut), so `awk '{print $1}'` works."""
    from chatllm.cli.tables import print_table

    print_table(headers, rows, fit_terminal=False)
