"""`chatllm logs list|show|export|rm`: the saved chats and runs."""

from __future__ import annotations

import json
import json as json_module
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from typing import Annotated, Optional

import typer

from chatllm.cli import completion

IdArgument = Annotated[
    int,
    typer.Argument(
        help="Conversation ID (see `chatllm logs list`).",
        autocompletion=completion.conversation_ids,
        show_default=False,
    ),
]


class ExportFormat(str, Enum):
    md = "md"
    json = "json"


def register(app: typer.Typer) -> None:
    logs = typer.Typer(help="Saved chats and runs: list, show, export, remove.", no_args_is_help=True)
    app.add_typer(logs, name="logs")
    logs.command("list")(logs_list)
    logs.command("show")(logs_show)
    logs.command("export")(logs_export)
    logs.command("rm")(logs_rm)


def logs_list(
    number: Annotated[int, typer.Option("-n", "--number", min=1, help="How many to show, newest first.")] = 20,
    search: Annotated[
        Optional[str],
        typer.Option("--search", help="Only conversations whose text, title, model or template contains this."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON array instead of a table.")] = False,
) -> None:
    """Saved conversations, newest first: ID, when, template, model, first words."""
    from chatllm.history.store import recent_conversations

    rows = recent_conversations(limit=number, search=search)
    if json:
        typer.echo(json_module.dumps([asdict(row) for row in rows], ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("No saved conversations match." if search else "No saved conversations yet.", err=True)
        return
    from chatllm.cli.tables import print_table

    # One line per conversation: cut to the terminal's width on a terminal,
    # whole in a pipe (so `chatllm logs list | grep` finds everything).
    print_table(
        ("id", "when", "template", "model", "first words"),
        [(str(row.id), local_time(row.updated), row.template or "", row.model or "", row.title) for row in rows],
    )


def logs_show(conversation_id: IdArgument) -> None:
    """A conversation: its settings, then every message."""
    from chatllm.history.store import load_conversation

    typer.echo(to_text(load_conversation(conversation_id)), nl=False)


def logs_export(
    conversation_id: IdArgument,
    format: Annotated[
        ExportFormat, typer.Option("--format", help="md: a Markdown transcript; json: everything saved.")
    ] = ExportFormat.md,
) -> None:
    """Print a conversation as Markdown or JSON (redirect it to a file)."""
    from chatllm.history.store import load_conversation

    conversation = load_conversation(conversation_id)
    typer.echo(to_json(conversation) if format is ExportFormat.json else to_markdown(conversation), nl=False)


def logs_rm(
    conversation_ids: Annotated[
        list[int],
        typer.Argument(
            help="Conversation IDs to remove.", autocompletion=completion.conversation_ids, show_default=False
        ),
    ],
) -> None:
    """Remove conversations from the history."""
    from chatllm.history.store import delete_conversation

    for conversation_id in conversation_ids:
        delete_conversation(conversation_id)
        typer.echo(f"Removed conversation {conversation_id}.", err=True)


def local_time(stamp: str) -> str:
    """An ISO UTC timestamp as local 'YYYY-MM-DD HH:MM'."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def _settings_line(conversation) -> str:
    parts = [
        f"{conversation.kind} with {conversation.template or '?'}",
        f"model {conversation.model or '?'}",
        f"started {local_time(conversation.created)}",
    ]
    params = {k: v for k, v in conversation.params.items() if v not in (None, [], ())}
    if params:
        parts.append(", ".join(f"{k}={v}" for k, v in params.items()))
    return "; ".join(parts)


def to_text(conversation) -> str:
    """`logs show`: a header line, the system prompt, then each message."""
    lines = [f"Conversation {conversation.id}: {_settings_line(conversation)}"]
    if conversation.variables:
        lines.append("variables: " + ", ".join(f"{k}={v}" for k, v in conversation.variables.items()))
    if conversation.system:
        lines += ["", "[system]", conversation.system]
    for message in conversation.messages:
        mark = " (interrupted)" if message.interrupted else ""
        lines += ["", f"[{message.role}]{mark}", *_tool_lines(message), message.content]
    return "\n".join(lines) + "\n"


def _tool_lines(message) -> list[str]:
    """The tools a reply called on its way, a line per call and per result."""
    from chatllm.reply.tool_loop import steps_from_json, transcript_lines

    return transcript_lines(steps_from_json(message.tools)) if message.tools else []


def to_markdown(conversation) -> str:
    """The same layout as a chat's /save transcript."""
    from chatllm.jobs.chat import INTERRUPTED_MARK

    lines = [f"# Conversation with {conversation.template or 'a model'}", "", f"_{_settings_line(conversation)}_", ""]
    if conversation.system:
        lines += ["## System", "", conversation.system, ""]
    for message in conversation.messages:
        lines += [
            f"## {message.role.capitalize()}",
            "",
            *(f"_{line.strip()}_  " for line in _tool_lines(message)),
            message.content + (INTERRUPTED_MARK if message.interrupted else ""),
            "",
        ]
    return "\n".join(lines)


def to_json(conversation) -> str:
    """Everything saved; messages use OpenAI's names (role, content, usage)."""
    data = asdict(conversation)
    data["messages"] = [
        {key: value for key, value in message.items() if key != "index" and value is not None}
        for message in data["messages"]
    ]
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
