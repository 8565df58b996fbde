"""The interactive `chatllm chat` on a terminal: a prompt-toolkit line editor
with persistent history, multi-line input and slash commands, and replies
streamed as Markdown by rich.

Ctrl-C while a reply streams stops that reply: what was generated stays in the
conversation, marked as interrupted, and the prompt comes back. Ctrl-C at the
prompt clears the line; Ctrl-D on an empty line leaves.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from chatllm.cli import slash_commands
from chatllm.cli.reply_view import ReplyView, stats_line
from chatllm.config.settings import data_dir
from chatllm.errors import ChatLLMError
from chatllm.private_files import private_file
from chatllm.render import MarkdownSink, PlainSink, ReasoningDisplay, styling_allowed
from chatllm.reply.pipeline import Events

try:
    import termios
except ImportError:  # Windows
    termios = None  # type: ignore[assignment]

BLOCK_QUOTES = '"""'  # opens and closes a multi-line message, as in `ollama run`
HISTORY_FILE = "repl_history"
SYSTEM_LINES_SHOWN = 20


def run_repl(session, options, config, model) -> None:
    """Talk with `session` on this terminal until the user leaves (Ctrl-D, /exit)."""
    Repl(session, options, config, model).run()


def block_is_open(text: str) -> bool:
    """True while `text` is a \"\"\" block that has not been closed yet."""
    stripped = text.strip()
    if not stripped.startswith(BLOCK_QUOTES):
        return False
    return len(stripped) < 2 * len(BLOCK_QUOTES) or not stripped.endswith(BLOCK_QUOTES)


def message_text(text: str) -> str:
    """What the user typed, without surrounding blank space or \"\"\" quotes."""
    stripped = text.strip()
    if stripped.startswith(BLOCK_QUOTES) and not block_is_open(stripped):
        return stripped[len(BLOCK_QUOTES) : -len(BLOCK_QUOTES)].strip("\n").rstrip()
    return stripped


class Repl:
    """One interactive chat. `pt_input`/`pt_output` (prompt-toolkit Input and
    Output) and `out`/`err` let tests drive it without a terminal."""

    def __init__(
        self,
        session,
        options,
        config,
        model,
        *,
        pt_input=None,
        pt_output=None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        history_path: Path | None = None,
    ) -> None:
        self.session = session
        self.options = options
        self.config = config
        self.model_label = Path(model.name).stem if model.name.endswith(".gguf") else model.name
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.markdown = styling_allowed(self.out)
        self.err_color = styling_allowed(self.err)
        self.history_path = history_path or _default_history_path()
        self._context_used: int | None = None
        self._hinted_exit = False
        self._cleared_empty_line = False
        self._spinner: Any = None  # rich's Status while a reply is awaited
        # Words held back for checking show at once on a terminal (Draft events).
        session.drafts = self.markdown
        self.on_terminal = pt_input is None and sys.stdin.isatty()
        self.prompt = self._prompt_session(pt_input, pt_output)

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        self._greet()
        while True:
            try:
                typed = self.prompt.prompt()
            except KeyboardInterrupt:
                if self._cleared_empty_line and not self._hinted_exit:
                    self.notice("(to leave, press Ctrl-D or type /exit)")
                    self._hinted_exit = True
                continue
            except EOFError:
                return
            text = message_text(typed)
            if not text:
                continue
            if slash_commands.is_slash_command(text):
                if not self.run_command(text):
                    return
                continue
            if text.startswith(slash_commands.LITERAL_SLASH):
                text = text[1:]
            self.stream_reply(functools.partial(self.session.send, text))

    def stream_reply(self, start: Callable[[], Events]) -> None:
        """Show the reply whose events `start()` yields as it streams; Ctrl-C
        stops it and keeps what came so far. Errors are shown and the
        conversation goes on."""
        view = ReplyView(self, ReasoningDisplay(self.options.show_reasoning))
        events: Events | None = None
        interrupted = False
        with _typing_hidden(self.on_terminal):
            try:
                events = start()
                with self._waiting():
                    first = next((event for event in events if not view.aside(event)), None)
                view.thinking.done()
                if first is not None:
                    view.show(first)
                    for event in events:
                        if not view.aside(event):
                            view.show(event)
            except KeyboardInterrupt:
                interrupted = True
            except ChatLLMError as error:
                self.error(str(error))
            finally:
                with _sigint_ignored():  # a second Ctrl-C must not cut the clean-up short
                    view.thinking.done()
                    if events is not None:
                        events.close()  # an unfinished turn is kept, marked as interrupted
                    view.close()
        if interrupted:
            self.notice("[interrupted]")
        for note in view.later:
            self.notice(note)
        if self.options.stats and view.finish is not None:
            self.notice(stats_line(view.finish.stats))
        self.out.write("\n")
        self.out.flush()
        self._context_used = None

    # ------------------------------------------------------------ slash commands

    def run_command(self, text: str) -> bool:
        """Do one slash command; False when the user asked to leave."""
        line = slash_commands.parse(text)
        command = line.command
        if command is None:
            guess = slash_commands.closest(line.typed)
            hint = f"did you mean {guess}? " if guess else ""
            self.notice(f"Unknown command {line.typed}: {hint}/help lists the commands.")
            return True
        if command.name == "/exit":
            return False
        if command.name == "/help":
            self.say(slash_commands.help_text())
        elif command.name == "/reset":
            self.session.reset()
            self._context_used = None
            self.notice("Started a new conversation.")
        elif command.name == "/system":
            self._system(line.argument)
        elif command.name == "/save":
            self._save(line.argument)
        elif command.name == "/retry":
            self.stream_reply(self.session.retry)
        return True

    def _system(self, text: str) -> None:
        if text:
            self.session.set_system(text)
            self._context_used = None
            self.notice("System prompt replaced; it applies from the next reply.")
        elif self.session.system:
            lines = self.session.system.rstrip().splitlines()
            self.say("\n".join(lines[:SYSTEM_LINES_SHOWN]))
            if len(lines) > SYSTEM_LINES_SHOWN:  # e.g. a persona's whole knowledge file
                self.notice(f"… {len(lines) - SYSTEM_LINES_SHOWN} more lines (/save FILE writes all of it)")
        else:
            self.notice("There is no system prompt. Set one with /system TEXT.")

    def _save(self, argument: str) -> None:
        if not argument:
            self.notice("Usage: /save FILE (Markdown, or JSON for a .json file)")
            return
        path = Path(argument).expanduser()
        try:
            self.session.save(path)
        except ChatLLMError as error:
            self.error(str(error))
            return
        turns = len(self.session.turns)
        self.notice(f"Saved {turns} turn{'' if turns == 1 else 's'} to {path}")

    # ------------------------------------------------------------ output

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def notice(self, message: str) -> None:
        """A dim line on stderr (trimming notices, [interrupted], confirmations)."""
        if self._spinner is not None:  # print above the spinner, not through it
            from rich.text import Text

            self._spinner.console.print(Text(message, style="dim"))
            return
        self.err.write(f"\x1b[2m{message}\x1b[0m\n" if self.err_color else message + "\n")
        self.err.flush()

    def error(self, message: str) -> None:
        self.err.write(f"\x1b[31mError:\x1b[0m {message}\n" if self.err_color else f"Error: {message}\n")
        self.err.flush()

    def _greet(self) -> None:
        persona = self.session.persona.name
        self.notice(f"Chatting with {self.model_label} as {persona}. Type /help for commands, Ctrl-D to leave.")
        greeting = self.session.persona.greeting.strip()
        if greeting:
            sink = self._open_sink()
            sink.write(greeting)
            sink.close()
            self.out.write("\n")
            self.out.flush()

    def _open_sink(self):
        return MarkdownSink(self.out, theme=self.config.theme) if self.markdown else PlainSink(self.out)

    @contextmanager
    def _waiting(self) -> Iterator[None]:
        """A spinner on the terminal until the first piece of the reply arrives."""
        if not self.markdown:
            yield
            return
        from rich.console import Console
        from rich.status import Status

        self._spinner = Status("", console=Console(file=self.err), spinner="dots")
        self._spinner.start()
        try:
            yield
        finally:
            self._stop_spinner()

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    # ------------------------------------------------------------ prompt

    def _prompt_session(self, pt_input, pt_output):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
        from prompt_toolkit.styles import Style

        style = Style.from_dict(
            {
                "prompt": "bold",
                "continuation": "#888888",
                "placeholder": "#888888",
                "bottom-toolbar": "noreverse #888888",
            }
        )
        return PromptSession(
            [("class:prompt", ">>> ")],
            multiline=True,
            prompt_continuation=lambda width, line_number, wrap_count: [
                ("class:continuation", "... ".rjust(width) if wrap_count == 0 else " " * width)
            ],
            history=self._history(),
            auto_suggest=AutoSuggestFromHistory(),
            completer=slash_commands.make_completer(),
            complete_while_typing=True,
            reserve_space_for_menu=4,
            key_bindings=self._key_bindings(),
            bottom_toolbar=self._toolbar,
            placeholder=self._placeholder,
            enable_open_in_editor=True,
            enable_suspend=True,
            style=style,
            input=pt_input,
            output=pt_output,
        )

    def _history(self):
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        try:
            private_file(self.history_path)  # what was typed: 0600 before prompt_toolkit appends to it
        except OSError as error:
            self.notice(f"Input history will not be kept: cannot write {self.history_path} ({error.strerror}).")
            return InMemoryHistory()
        return FileHistory(str(self.history_path))

    @staticmethod
    def _placeholder():
        from prompt_toolkit.application import get_app

        # Not left behind in the scrollback when the prompt ends on Ctrl-C or Ctrl-D.
        return [] if get_app().is_done else [("class:placeholder", "Send a message (/help for help)")]

    def _key_bindings(self):
        from prompt_toolkit.enums import DEFAULT_BUFFER
        from prompt_toolkit.filters import has_focus
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()
        editing = has_focus(DEFAULT_BUFFER)

        @bindings.add("enter", filter=editing)
        def _send(event) -> None:
            buffer = event.current_buffer
            if block_is_open(buffer.text):
                buffer.newline(copy_margin=False)
            else:
                buffer.validate_and_handle()

        @bindings.add("escape", "enter", filter=editing)
        def _newline(event) -> None:
            event.current_buffer.newline(copy_margin=False)

        @bindings.add("c-c", filter=editing)
        def _clear(event) -> None:
            self._cleared_empty_line = not event.current_buffer.text.strip()
            event.app.exit(exception=KeyboardInterrupt(), style="class:aborting")

        return bindings

    def _toolbar(self) -> str:
        """Model, persona, turns and how full the context is; key hints when they fit."""
        from prompt_toolkit.application import get_app_or_none

        if self._context_used is None:
            try:
                self._context_used = self.session.engine.count_prompt_tokens(self.session.messages())
            except Exception:  # a figure on the toolbar is not worth failing the prompt for
                self._context_used = 0
        turns = len(self.session.turns)
        info = (
            f" {self.model_label} · {self.session.persona.name} · {turns} turn{'' if turns == 1 else 's'}"
            f" · {self._context_used}/{self.session.engine.context_size} tokens"
        )
        hints = "Alt-Enter new line · /help "
        app = get_app_or_none()
        width = app.output.get_size().columns if app is not None else 80
        gap = width - len(info) - len(hints)
        return info + " " * gap + hints if gap >= 2 else info


def _default_history_path() -> Path:
    return data_dir() / HISTORY_FILE


@contextmanager
def _typing_hidden(on_terminal: bool) -> Iterator[None]:
    """While a reply streams, keys typed are not echoed into it but wait, as they
    are, for the next prompt (Ctrl-D included), and Ctrl-C does not make the
    terminal drop output already written, which would garble the live view."""
    if termios is None:  # Windows: its console has no such settings
        on_terminal = False
    if not on_terminal:
        yield
        return

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quiet = list(saved)
    quiet[3] = (quiet[3] & ~(termios.ECHO | termios.ICANON)) | termios.NOFLSH
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
