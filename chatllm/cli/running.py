"""What every generating command does around its job: settings, model, engine,
--dry-run, output, --json, --stats, and saving the run to history."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chatllm import engine
from chatllm.cli import early_load
from chatllm.cli.interaction import hub_interaction
from chatllm.cli.options import RunOptions
from chatllm.config.settings import Settings, load_settings
from chatllm.engine import engine_options as from_settings
from chatllm.engine.base import Engine, EngineOptions, GenerationParams, Message, Stream
from chatllm.engine.grammar import json_schema_text, schema_to_gbnf
from chatllm.errors import UsageError
from chatllm.hub.models import ResolvedModel, resolve_model
from chatllm.inputs import read_file
from chatllm.jobs.metering import Meter
from chatllm.render import CollectingSink, ReasoningDisplay, notice, open_sink, print_stats, result_json, write_all


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


def open_model(options: RunOptions, config: Settings) -> tuple[ResolvedModel, Engine]:
    model = resolve(options, config)
    return model, engine.open_engine(model, engine_options(options, config))


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
def loading_model(options: RunOptions, config: Settings) -> Iterator[ModelLoading]:
    """Resolve the model now (a bad name fails before any input is read), load
    it in the background, and close the engine on the way out, whatever happened."""
    model = resolve(options, config)
    wanted = engine_options(options, config)
    future = early_load.take(model, wanted)  # begun before the command line was parsed
    if future is None:
        future = engine.open_engine_in_background(model, wanted, "chatllm-load")
    try:
        yield ModelLoading(model, future)
    finally:
        if future.exception() is None:  # waits: never leave a half-loaded model behind
            future.result().close()


def print_dry_run(
    messages: Sequence[Message], params: GenerationParams, template: str, model: str | None, schema: dict | None = None
) -> None:
    """The messages and settings a command would send, as JSON; with a schema,
    the schema and the GBNF grammar llama.cpp would be constrained by."""
    payload = {
        "model": model,
        "template": template,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "params": {k: v for k, v in vars(params).items() if v not in (None, ())},
    }
    if schema is not None:
        payload["schema"] = schema
        payload["grammar"] = schema_to_gbnf(json_schema_text(schema))
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def map_progress(
    enabled: bool, description: str = "reading the input in parts"
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for the parts of a long input, or the files of
    a folder being indexed (shown only once there is more than one)."""
    if not enabled:
        yield lambda done, total: None
        return
    progress = task = None

    def update(done: int, total: int) -> None:
        nonlocal progress, task
        if total <= 1:
            return
        if progress is None:  # rich.progress costs ~20 ms to import: only for long input
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress = Progress(
                TextColumn("[dim]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            progress.start()
            task = progress.add_task(description, total=total)
        progress.update(task, completed=done)

    try:
        yield update
    finally:
        if progress is not None:
            progress.stop()


def run_generation(
    options: RunOptions,
    config: Settings,
    template_name: str,
    job: Callable[[Meter], Stream],
    model: ResolvedModel,
    engine: Engine,
    record: dict | None = None,
    repetition: str = "loops",
    extra_json: Callable[[], dict] | None = None,
) -> str:
    """Run `job`, show its text the way the options ask, print stats, save the run.
    `repetition` is the guard's mode (jobs/repetition.py); `extra_json` gives,
    once the job has run, the fields a job adds to --json (e.g. ask's citations)."""
    thinking = ReasoningDisplay(options.show_reasoning)
    prepare_engine(options, engine)
    sink = CollectingSink() if options.json else open_sink(theme=config.theme)
    meter = Meter(engine, repetition=repetition, on_reasoning=thinking.piece, on_draft=sink.draft)
    try:
        text = write_all(_after_thinking(job(meter), thinking), sink)
    finally:
        thinking.done()
        stats = meter.stats()
        note = meter.finish_note()
        if note:
            notice(note)
        if options.stats:
            print_stats(stats)
    if options.json:
        extra = extra_json() if extra_json is not None else None
        sys.stdout.write(result_json(text, model.name, template_name, stats, meter.reasoning, extra) + "\n")
    if options.log and config.log:
        record_run(model, template_name, {**(record or {}), "reasoning": meter.reasoning}, text, stats)
    return text


def _after_thinking(pieces: Stream, thinking: ReasoningDisplay) -> Stream:
    """`pieces`, closing the thinking's display when the answer begins."""
    for piece in pieces:
        thinking.done()
        yield piece


def prepare_engine(options: RunOptions, engine: Engine) -> None:
    """What the options ask of a loaded engine: its chat template (--chat-template),
    and the notes a user should read (a model without a chat template, --think
    on a model that cannot switch)."""
    if options.chat_template:
        if not hasattr(engine, "use_chat_template"):
            notice("--chat-template does nothing for a model on a server: the server applies its own.")
        else:
            engine.use_chat_template(chat_template_text(options.chat_template))
    elif getattr(engine, "has_chat_template", True) is False:
        notice(
            f"{engine.model_name} has no chat template: it is probably a base model, not an instruct one, and may "
            "just continue or echo the prompt. Prompts use ChatML; use an instruct model, or --chat-template plain."
        )
    note_thinking_switch(options, engine)


def chat_template_text(value: str) -> str:
    from chatllm.engine.chat_prompt import BUILTIN_TEMPLATES

    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    text = read_file(Path(value).expanduser())
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise UsageError(f"'{value}' line {error.lineno}: {error.message}") from None
    return text


def note_thinking_switch(options: RunOptions, engine: Engine) -> None:
    """--think/--no-think on a model whose chat template cannot switch thinking:
    a dim note, not an error (the option does nothing there)."""
    if options.think is not None and getattr(engine, "thinking_switch", True) is False:
        notice(
            f"{engine.model_name}'s chat template has no thinking switch: --{'' if options.think else 'no-'}think changes nothing."
        )


def finish_run(
    options: RunOptions,
    config: Settings,
    model: ResolvedModel,
    template_name: str,
    record: dict,
    text: str,
    meter: Meter,
) -> None:
    """After a run whose output is written: --stats, and the run saved to history."""
    stats = meter.stats()
    if options.stats:
        print_stats(stats)
    if options.log and config.log:
        record_run(model, template_name, record, text, stats)


def record_run(model: ResolvedModel, template_name: str, record: dict, text: str, stats) -> None:
    """Save a one-shot run to history (`record` holds prompt, variables, params)."""
    from chatllm.history.recording import record_run

    record_run(model=model.name, template=template_name, output=text, stats=stats, **record)
