"""The REPL's slash commands as data: names, usage and help, parsing a typed
line, and completion while typing. What each command does lives in repl.py."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SlashCommand:
    name: str  # "/save"
    usage: str  # "/save FILE"
    help: str
    aliases: tuple[str, ...] = ()


COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("/help", "/help", "show the commands and keys"),
    SlashCommand("/system", "/system [TEXT]", "show the system prompt, or replace it with TEXT"),
    SlashCommand("/retry", "/retry", "generate the last reply again"),
    SlashCommand("/reset", "/reset", "forget the conversation (the system prompt stays)"),
    SlashCommand("/save", "/save FILE", "save the conversation as Markdown (or JSON for a .json file)"),
    SlashCommand("/exit", "/exit", "leave chatllm (also /quit, or Ctrl-D)", aliases=("/quit", "/bye")),
)

KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Alt-Enter or Esc Enter", "insert a new line"),
    ('"""', 'start a multi-line message; end it with """ and Enter'),
    ("Ctrl-C", "stop the reply, or clear the line"),
    ("Ctrl-D", "leave (on an empty line)"),
    ("Up / Down, Ctrl-R", "earlier messages (kept between sessions)"),
    ("Ctrl-X Ctrl-E", "edit the message in $EDITOR"),
)

# Text a user types to send a message that starts with "/" ("//etc" sends "/etc").
LITERAL_SLASH = "//"


@dataclass(frozen=True)
class SlashLine:
    """A typed line that starts with "/": the command it names (None when no
    command has that name), the name as typed, and the rest of the line."""

    command: SlashCommand | None
    typed: str
    argument: str


def is_slash_command(text: str) -> bool:
    return text.startswith("/") and not text.startswith(LITERAL_SLASH)


def parse(text: str) -> SlashLine:
    typed, _, argument = text.strip().partition(" ")
    lowered = typed.lower()
    command = next((c for c in COMMANDS if lowered == c.name or lowered in c.aliases), None)
    return SlashLine(command, typed, argument.strip())


def closest(typed: str) -> str | None:
    """The command name a mistyped one most likely meant."""
    names = [c.name for c in COMMANDS] + [a for c in COMMANDS for a in c.aliases]
    matches = difflib.get_close_matches(typed.lower(), names, n=1, cutoff=0.6)
    return matches[0] if matches else None


def help_text() -> str:
    width = max(len(c.usage) for c in COMMANDS)
    key_width = max(len(key) for key, _ in KEYS)
    lines = ["Commands:"]
    lines += [f"  {c.usage.ljust(width)}  {c.help}" for c in COMMANDS]
    lines += ["", "Keys:"]
    lines += [f"  {key.ljust(key_width)}  {what}" for key, what in KEYS]
    lines += ["", f"Start a message with {LITERAL_SLASH} to send a literal /."]
    return "\n".join(lines)


def make_completer():
    """A prompt-toolkit completer: command names after "/", file names after "/save "."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    paths = PathCompleter(expanduser=True)

    class SlashCompleter(Completer):
        def get_completions(self, document: Document, complete_event) -> Iterable[Completion]:
            text = document.text_before_cursor
            if not is_slash_command(text) or "\n" in text:
                return
            if " " not in text:
                for command in COMMANDS:
                    if command.name.startswith(text.lower()):
                        yield Completion(command.name, start_position=-len(text), display_meta=command.help)
                return
            typed, _, argument = text.partition(" ")
            if typed.lower() == "/save":
                yield from paths.get_completions(Document(argument.lstrip()), complete_event)

    return SlashCompleter()
