"""The `chatllm` command: the typer app, global flags, and the error edge.

This is the only place that turns a ChatLLMError into `Error: ...` on stderr and
an exit code, and Ctrl-C into exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Annotated, NoReturn, Optional

import typer
from typer._click import exceptions as click

from chatllm import __version__
from chatllm.cli import commands, config_cmd, doctor, logs, models_cmd, serve, templates_cmd
from chatllm.errors import ChatLLMError

app = typer.Typer(
    name="chatllm",
    help="Local large language models in your shell: chat, summarize, translate, and customer-service personas.",
    no_args_is_help=True,
    # Panels and colours on a terminal; in a pipe, click's plain help, which is
    # easier to grep and does not wait ~90 ms for typer's rich formatting to import.
    rich_markup_mode="rich" if sys.stdout.isatty() else None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"chatllm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    if debug:
        os.environ["CHATLLM_DEBUG"] = "1"
    # click runs this before it parses the subcommand's options, so defaults
    # set here (`commands:` in config.yaml) reach every command's options.
    # `chatllm config` is spared: it must work to repair a broken file.
    if ctx.invoked_subcommand != "config" and not ctx.resilient_parsing:
        from chatllm.cli.command_defaults import apply_command_defaults

        apply_command_defaults(ctx)


def _register_commands() -> None:
    for module in (commands, templates_cmd, models_cmd, logs, config_cmd, doctor, serve):
        module.register(app)


_register_commands()


def _fail(message: str, exit_code: int) -> NoReturn:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(exit_code)


class _CtrlC:
    """Whether Ctrl-C was pressed. typer turns a KeyboardInterrupt raised in a
    command into a silent exit code 130; this tells that apart from a command
    that returned 130, so the user still reads one line saying why it stopped."""

    pressed = False

    @classmethod
    def watch(cls) -> None:
        # A shell that runs chatllm in the background has SIGINT ignored: left so.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, cls._on_sigint)

    @classmethod
    def _on_sigint(cls, signum: int, frame: object) -> None:
        cls.pressed = True
        raise KeyboardInterrupt


def _interrupted() -> NoReturn:
    sys.stderr.write("\nInterrupted.\n")
    sys.stderr.flush()
    raise SystemExit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `chatllm` script."""
    debug = "--debug" in (argv if argv is not None else sys.argv) or os.environ.get("CHATLLM_DEBUG") == "1"
    _CtrlC.watch()
    try:
        result = app(args=argv, prog_name="chatllm", standalone_mode=False)
    except ChatLLMError as error:
        if debug:
            traceback.print_exc()
        _fail(str(error), error.exit_code)
    except click.NoArgsIsHelpError:
        # `chatllm` alone, or `chatllm models`: typer has printed the help.
        raise SystemExit(0) from None
    except click.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        _fail(f"{error.format_message()}{hint}", 2)
    except click.ClickException as error:
        _fail(error.format_message(), error.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # typer >= 0.24 has its own Abort (click.exceptions lacks it)
        _interrupted()
    except BrokenPipeError:
        # The reader went away (`chatllm ... | head`): not an error for us.
        _quiet_broken_pipe()
        raise SystemExit(0) from None
    except Exception as error:
        if debug:
            raise
        _fail(
            f"internal error: {type(error).__name__}: {error} (a bug in chatllm; rerun with --debug for the traceback)",
            1,
        )
    if result == 130 and _CtrlC.pressed:
        _interrupted()
    raise SystemExit(result if isinstance(result, int) else 0)


def _quiet_broken_pipe() -> None:
    # Python would complain again while flushing stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
