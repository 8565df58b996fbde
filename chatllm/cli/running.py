"""The one way every job runs (jobs/table.py): settings, the model loaded in
the background while the job plans its run, --dry-run, the engine's options,
the events shown by a renderer, --stats, and the run saved to history."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from chatllm import engine
from chatllm.cli import early_load
from chatllm.cli.approval import ask_on_terminal
from chatllm.cli.interaction import hub_interaction
from chatllm.cli.options import RunOptions
from chatllm.cli.parts_progress import parts_progress
from chatllm.cli.repl import run_repl
from chatllm.config.settings import Settings, load_settings
from chatllm.engine import chat_template_text
from chatllm.engine import engine_options as from_settings
from chatllm.engine.base import Engine, EngineOptions
from chatllm.hub.models import ResolvedModel, is_remote_reference, resolve_model
from chatllm.jobs.job import Job, ModelInfo, Setup
from chatllm.jobs.options import sequences_for
from chatllm.jobs.pacing import ProgressCallback
from chatllm.jobs.table import JobSpec
from chatllm.render import Printer, dry_run_json, notice, print_stats
from chatllm.reply.meter import Meter


def settings() -> Settings:
    return load_settings()


def engine_options(options: RunOptions, config: Settings) -> EngineOptions:
    return from_settings(
        config, ctx=options.ctx, gpu_layers=options.gpu_layers, seed=options.seed, verbose=options.verbose
    )


def resolve(options: RunOptions, config: Settings) -> ResolvedModel:
    return resolve_model(
        options.model, default=config.default_model, allow_download=options.pull, interaction=hub_interaction()
    )


def local_model_path(options: RunOptions, config: Settings) -> Path | None:
    """The model file when the model is the embedded one or a local .gguf path,
    found without any network or question (for --dry-run); else None."""
    wanted = options.model or config.default_model
    if wanted not in (None, "embedded") and not (wanted.endswith(".gguf") and Path(wanted).is_file()):
        return None
    try:
        return resolve(options, config).path
    except Exception:
        return None


def open_model(options: RunOptions, config: Settings, sequences: int | None = None) -> tuple[ResolvedModel, Engine]:
    """The model and its engine; with `sequences`, one that generates that many
    replies at once for callers on any thread (engine/batched.py)."""
    model = resolve(options, config)
    wanted = engine_options(options, config)
    if sequences is not None:
        wanted = dataclasses.replace(wanted, sequences=sequences)
    return model, engine.open_engine(model, wanted)


class ModelLoading:
    """A model being loaded on a background thread: llama.cpp's load runs outside
    the GIL, so it overlaps with what the command does meanwhile (reading its
    input, importing the REPL, preparing the prompt; a local model's context is
    still being made while the prompt is templated and tokenized)."""

    def __init__(self, model: ResolvedModel, future) -> None:
        self.model = model
        self._future = future

    def engine(self) -> Engine:
        """The engine once it can tokenize; waits for that and raises the load's
        error."""
        return self._future.result()


@contextmanager
def loading_model(options: RunOptions, config: Settings, sequences: int | None = None) -> Iterator[ModelLoading]:
    """Resolve the model now (a bad name fails before any input is read), load
    it in the background, and close the engine on the way out, whatever happened.
    `sequences`: an engine that decodes that many replies at once (--parallel)."""
    model = resolve(options, config)
    wanted = dataclasses.replace(engine_options(options, config), sequences=sequences)
    future = early_load.take(model, wanted)  # begun before the command line was parsed
    if future is None:
        future = engine.open_engine_in_background(model, wanted, "chatllm-load")
    try:
        yield ModelLoading(model, future)
    finally:
        if future.exception() is None:  # waits: never leave a half-loaded model behind
            future.result().close()


def run_job(spec: JobSpec, options: RunOptions, values: dict[str, Any], given: frozenset[str]) -> None:
    """Plan the job (while its model loads), then print its plan (--dry-run)
    or run it: a conversation on a terminal in the REPL, any other run's
    events through a Printer."""
    config = settings()
    closing = ExitStack()  # what the job opens for its run (MCP servers), closed with it
    # A tool call is asked about on a terminal; in a pipe there is no one to ask.
    ask = ask_on_terminal if sys.stdin.isatty() and sys.stderr.isatty() else None

    def setup(model: ModelInfo, progress: ProgressCallback | None = None) -> Setup:
        log = options.log and config.log
        sampling, repetition, hints = options.sampling(), options.repetition, config.hints
        return Setup(values, sampling, repetition, model, given, hints, log, progress, ask, closing)

    with closing:
        if options.dry_run:
            job = spec.prepare(setup(dry_run_model(options, config)))
            sys.stdout.write(dry_run_json(job.plan(), job.template, options.model) + "\n")
            return
        run_model(spec, options, config, setup, sequences_for(values))


def run_model(
    spec: JobSpec, options: RunOptions, config: Settings, setup: Callable[..., Setup], sequences: int | None
) -> None:
    """Plan the job while its model loads, then run it: a conversation on a
    terminal in the REPL, any other run's events through a Printer."""
    # A job whose text streams part by part (a translation) is progress enough on a terminal.
    live = spec.streams_parts and sys.stdout.isatty() and not options.json
    with loading_model(options, config, sequences) as loading, parts_progress(output_is_live=live) as progress:
        resolved = loading.model
        job = spec.prepare(setup(ModelInfo(resolved.name, resolved.path, resolved.remote_url is not None), progress))
        in_repl = spec.conversation and sys.stdin.isatty() and sys.stdout.isatty() and not options.json
        if in_repl:
            importlib.import_module("prompt_toolkit")  # while the model loads: the two overlap
        engine = loading.engine()
        prepare_engine(options, engine)
        if in_repl:
            session, notices = job.session(engine)  # type: ignore[attr-defined]  # a Conversation
            for line in notices:
                notice(line)
            run_repl(session, options, config, resolved)
        else:
            show(spec, job, options, config, resolved, engine)


def show(spec: JobSpec, job: Job, options: RunOptions, config: Settings, model: ResolvedModel, engine: Engine) -> None:
    """Run `job` on `engine`, its events shown the way the options ask; --stats
    and history for the whole run (a conversation's, turn by turn)."""
    printer = Printer(
        model.name,
        job.template,
        json=options.json,
        stats=options.stats and spec.conversation,
        show_reasoning=options.show_reasoning,
        # Prose is Markdown on a terminal; data, and a conversation a script drives, plain.
        markdown=None if spec.prose and not spec.conversation else False,
        theme=config.theme,
        between="\n" if spec.conversation else "",  # a blank line tells turns apart
    )
    printer.open()
    meter = Meter(engine, repetition=job.repetition, drafts=printer.live)
    replies = printer.show(job.run(meter))
    stats = meter.stats()
    if options.stats and not spec.conversation:
        print_stats(stats)
    if job.record is not None and options.log and config.log:
        text = "\n".join(reply.text for reply in replies)
        tools = [step for reply in replies for step in reply.tools]
        record_run(model, job.template, {**job.record, "reasoning": meter.reasoning, "tools": tools}, text, stats)


def dry_run_model(options: RunOptions, config: Settings) -> ModelInfo:
    """What --dry-run knows of the model without resolving a remote or Hub one."""
    wanted = options.model or config.default_model
    return ModelInfo(wanted, local_model_path(options, config), is_remote_reference(wanted))


def prepare_engine(options: RunOptions, engine: Engine) -> None:
    """What the options ask of a loaded engine: its chat template (--chat-template),
    and the notes a user should read (a model without a chat template, --think
    on a model that cannot switch)."""
    if options.chat_template:
        if not engine.supports_chat_template:
            notice("--chat-template does nothing for a model on a server: the server applies its own.")
        else:
            engine.use_chat_template(chat_template_text(options.chat_template))
    elif not engine.has_chat_template:
        notice(
            f"{engine.model_name} has no chat template: it is probably a base model, not an instruct one, and may "
            "just continue or echo the prompt. Prompts use ChatML; use an instruct model, or --chat-template plain."
        )
    note_thinking_switch(options, engine)


def note_thinking_switch(options: RunOptions, engine: Engine) -> None:
    """--think/--no-think on a model whose chat template cannot switch thinking:
    a dim note, not an error (the option does nothing there)."""
    if options.think is not None and not engine.thinking_switch:
        notice(
            f"{engine.model_name}'s chat template has no thinking switch: --{'' if options.think else 'no-'}think changes nothing."
        )


def record_run(model: ResolvedModel, template_name: str, record: dict, text: str, stats) -> None:
    """Save a one-shot run to history (`record` holds prompt, variables, params)."""
    from chatllm.history.recording import record_run

    record_run(model=model.name, template=template_name, output=text, stats=stats, **record)
