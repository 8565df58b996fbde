"""What a job is (the interface every entry of jobs/table.py implements): the
Setup it is planned from, the Plan of its first call (--dry-run), and the Job
that runs; a Conversation is a Job a person talks to; Served is how `serve`
applies a job's templates, and ServedJob the job as a server offers it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chatllm.engine.base import GenerationParams, Message
    from chatllm.jobs.pacing import ProgressCallback
    from chatllm.reply.meter import Meter
    from chatllm.reply.pipeline import Events, ReplyRequest
    from chatllm.templates import Template


@dataclass(frozen=True)
class ModelInfo:
    """What is known of the model before it is loaded (for --dry-run, without
    resolving it at all): its name, its file when it is here, and whether a
    server runs it (which then checks schemas itself)."""

    name: str | None = None
    path: Path | None = None
    remote: bool = False


@dataclass(frozen=True)
class Setup:
    """What a job is given to plan its run, before any model is loaded.

    `values`: its own options by name; `sampling`: the sampling options given
    (None: not given); `given`: the options given on the command line (not
    defaults); `hints`: whether to say when a bigger model would do better;
    `log`: whether the run is saved to history; `progress`: told where a
    long input's parts stand as they are worked through (jobs/pacing.py);
    `ask_tool`: asks the user whether a tool call may run (None: there is
    no terminal to ask on; jobs/tooling.py); `closing`: what the run closes
    when it ends, such as the MCP servers a job started."""

    values: Mapping[str, Any]
    sampling: Mapping[str, Any] = field(default_factory=dict)
    repetition: str | None = None
    model: ModelInfo = ModelInfo()
    given: frozenset[str] = frozenset()
    hints: bool = True
    log: bool = False
    progress: ProgressCallback | None = None
    ask_tool: Callable[[str, dict[str, Any]], bool] | None = None
    closing: ExitStack = field(default_factory=ExitStack)


@dataclass(frozen=True)
class Plan:
    """What a job sends first: the messages, the settings and the schema (with
    the grammar a local model is constrained by). It is what --dry-run prints."""

    messages: Sequence[Message]
    params: GenerationParams
    schema: dict | None = None
    grammar: str | None = None


class Job(Protocol):
    """A job ready to run: planned from its Setup, before the model is loaded."""

    # The name --json, history and --dry-run give the run (the template's).
    template: str
    # The repetition guard's mode for its replies (jobs/repetition.py).
    repetition: str
    # What history keeps of a one-shot run (prompt, variables, params); None
    # for a job that keeps its own (a conversation, turn by turn).
    record: dict[str, Any] | None

    def plan(self) -> Plan: ...

    def run(self, meter: Meter) -> Events:
        """The run's events: each reply's text and the others, each ending with
        its Finish (reply/events.py)."""
        ...


class Conversation(Job, Protocol):
    """A job a person talks to, turn by turn: on a terminal the REPL drives
    `session`, elsewhere `run` reads one turn per line."""

    def session(self, engine: Any) -> tuple[Any, list[str]]:
        """The chat session on `engine`, and the notices to show before the first turn."""
        ...


@dataclass(frozen=True)
class Served:
    """How `serve` applies a template to a conversation: its system prompt,
    what the newest user message becomes, and the persona whose stages the
    reply goes through (None for a task template). `respond`: a job that makes
    the whole reply itself (ask: its passages, its checks, its sources), given
    the meter and the request; None: the pipeline's reply to the messages."""

    system: str
    render_user: Callable[[str], str]
    persona: Any = None
    respond: Callable[[Meter, ReplyRequest], Events] | None = None


# A job's `served(template, values, persona_for)`: one of its templates applied
# to a request; `persona_for(template, values)` is the server's persona, built
# once per template and values.
ServedFunction = Callable[["Template", dict[str, str], Callable[..., Any]], Served]


@dataclass(frozen=True)
class ServedJob:
    """A job as `serve` offers it, made once when the server starts: `served`
    applies its templates; `notes` are said as the server starts (ask: the
    files it skipped)."""

    served: ServedFunction
    notes: tuple[str, ...] = ()
