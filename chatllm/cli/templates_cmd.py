"""`chatllm templates list|show|path`: what templates exist and where they come from."""

from __future__ import annotations

from typing import Annotated

import typer

from chatllm.cli import completion
from chatllm.errors import TemplateError


def register(app: typer.Typer) -> None:
    templates = typer.Typer(help="List and inspect prompt templates and personas.", no_args_is_help=True)
    app.add_typer(templates, name="templates")

    @templates.command("list")
    def list_templates() -> None:
        """Every template: name, kind, source (built-in or user) and description."""
        from chatllm.cli.tables import print_table
        from chatllm.templates import load_template_file, template_files

        rows: list[tuple[str, str, str, str]] = []
        for name, (path, source) in sorted(template_files().items()):
            try:
                template = load_template_file(path, source)
                rows.append((name, template.kind, source, template.description))
            except TemplateError as error:
                rows.append((name, "?", source, f"invalid: {error}"))
        print_table(("name", "kind", "source", "description"), rows)

    @templates.command("show")
    def show(
        name: Annotated[str, typer.Argument(help="Template name or path.", autocompletion=completion.template_names)],
    ) -> None:
        """A template's source, variables and the file it comes from."""
        from chatllm.templates import load_template

        template = load_template(name)
        typer.echo(f"# {template.name} ({template.kind}, {template.source}): {template.path}")
        for variable in template.variables:
            detail = "required" if variable.required else f"default: {variable.default!r}"
            if variable.choices:
                detail += f"; one of: {', '.join(variable.choices)}"
            typer.echo(f"#   {variable.name}: {variable.description} ({detail})")
        typer.echo(template.path.read_text(encoding="utf-8"), nl=False)

    @templates.command("path")
    def path() -> None:
        """The folders templates are loaded from (user templates override built-ins)."""
        from chatllm.templates import builtin_dir, user_dir

        typer.echo(f"built-in: {builtin_dir()}")
        typer.echo(f"user:     {user_dir()}")
