"""`chatllm chat`: the interactive REPL on a terminal, one turn per line in a pipe."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from enum import Enum
from typing import Annotated, Optional

import typer

from chatllm.cli import completion
from chatllm.cli.options import RunOptions, generation_options
from chatllm.cli.tasks import parse_variables, structure_for
from chatllm.errors import HistoryError, InputError, UsageError


class KnowledgeMode(str, Enum):
    auto = "auto"
    whole = "whole"
    search = "search"


def register(app: typer.Typer) -> None:
    @app.command()
    @generation_options
    def chat(
        options: RunOptions,
        persona: Annotated[
            str,
            typer.Option(
                "--persona",
                "-p",
                help="Persona template to talk to (e.g. support).",
                autocompletion=completion.persona_names,
            ),
        ] = "chat",
        system: Annotated[
            Optional[str], typer.Option("--system", "-s", help="Replace the persona's system prompt.")
        ] = None,
        kb: Annotated[
            Optional[list[str]],
            typer.Option(
                "--kb",
                help="Knowledge file the persona answers from, instead of its own (repeatable); +FILE adds to its own.",
            ),
        ] = None,
        knowledge_mode: Annotated[
            KnowledgeMode,
            typer.Option(
                "--knowledge",
                help="How the persona's knowledge reaches the model: whole (all of it, in the system prompt), search (the passages found for each message), or auto (by its size and the model's).",
            ),
        ] = KnowledgeMode.auto,
        variable: Annotated[
            Optional[list[str]], typer.Option("--var", "-v", help="Persona variable as key=value (repeatable).")
        ] = None,
        schema: Annotated[
            Optional[str],
            typer.Option(
                "--schema",
                help="Every reply is JSON matching this schema: a JSON Schema file, inline JSON, or fields such as 'name, age int'.",
                rich_help_panel="Output",
            ),
        ] = None,
        resume_last: Annotated[bool, typer.Option("--continue", "-c", help="Continue the last saved chat.")] = False,
        conversation: Annotated[
            Optional[int],
            typer.Option(
                "--conversation",
                help="Continue the saved conversation with this ID (see `chatllm logs list`).",
                autocompletion=completion.conversation_ids,
            ),
        ] = None,
        click_context: typer.Context = None,  # type: ignore[assignment]  # typer passes it: tells a given --persona from the default
    ) -> None:
        """Talk with a model: a REPL on a terminal; in a pipe, each input line is one turn."""
        from chatllm.cli import running
        from chatllm.config.settings import persona_judges_dir
        from chatllm.jobs.chat import ChatSession
        from chatllm.jobs.model_fit import ModelFit, is_tiny
        from chatllm.jobs.persona import build_persona, choose_knowledge
        from chatllm.jobs.prompting import generation_params, repetition_mode
        from chatllm.render import notice
        from chatllm.templates import load_template

        config = running.settings()
        resumed = _resumed(resume_last, conversation)
        if resumed is not None and resumed.template and not _given(click_context, "persona"):
            persona, system = resumed.template, system or resumed.system
        template = load_template(persona)
        values = template.resolve_variables(parse_variables(variable))
        knowledge = choose_knowledge(template, kb or [])  # a bad --kb fails before the model loads
        params = generation_params(template, options.sampling())

        structure = structure_for(options, schema, template.schema)
        if structure is not None:
            from chatllm.engine.grammar import json_schema_text

            params = replace(params, json_schema=json_schema_text(structure))
        if options.dry_run:
            persona_ = build_persona(
                template,
                values,
                None,
                knowledge,
                system,
                mode=KnowledgeMode(knowledge_mode).value,
                tiny_model=is_tiny(running.local_model_path(options, config)),
            )
            session = ChatSession(None, persona_, params)  # type: ignore[arg-type]  # messages() needs no engine
            session.restore(resumed.turns() if resumed else [])
            running.print_dry_run(session.messages(), params, template.name, options.model, schema=structure)
            return
        with running.loading_model(options, config) as loading:
            model = loading.model
            recorder = None
            if options.log and config.log:
                from chatllm.history.recording import ConversationRecorder

                recorder = ConversationRecorder(
                    model=model.name,
                    template=template.name,
                    params=params,
                    variables=values,
                    conversation_id=resumed.id if resumed else None,
                    resumed_turns=len(resumed.turns()) if resumed else 0,
                )
            interactive = sys.stdin.isatty() and sys.stdout.isatty() and not options.json
            if interactive:
                from chatllm.cli.repl import run_repl

                importlib.import_module("prompt_toolkit")  # while the model loads: the two overlap
            engine = loading.engine()
            running.prepare_engine(options, engine)
            fit = ModelFit(model.path, enabled=config.hints)
            # Each reply of a schema is constrained by it; a guard cutting it would break the JSON.
            repetition = (
                "off"
                if structure is not None
                else repetition_mode(template, options.repetition, tiny_model=is_tiny(model.path))
            )
            persona_ = build_persona(
                template,
                values,
                engine,
                knowledge,
                system,
                mode=KnowledgeMode(knowledge_mode).value,
                tiny_model=is_tiny(model.path),
                judge_cache=persona_judges_dir(),
            )
            session = ChatSession(engine, persona_, params, on_turn=recorder, repetition=repetition, fit=fit)
            hint = fit.for_knowledge(persona_.retrieves)
            if hint:
                notice(hint)
            if resumed is not None:
                session.restore(resumed.turns())
                count = len(session.turns)
                notice(f"Continuing conversation {resumed.id} ({count} earlier turn{'' if count == 1 else 's'}).")
                if resumed.model and resumed.model != model.name and not _given(click_context, "model"):
                    notice(f"It was with {resumed.model}; this session uses {model.name} (-m picks the model).")
            if interactive:
                run_repl(session, options, config, model)
            else:
                _chat_lines(session, options, config, model)


def _resumed(resume_last: bool, conversation_id: int | None):
    """The saved conversation --continue or --conversation asks for, or None."""
    if not resume_last and conversation_id is None:
        return None
    from chatllm.history import store as history

    if resume_last and conversation_id is not None:
        raise UsageError("use --continue or --conversation ID, not both")
    if resume_last:
        conversation_id = history.last_conversation_id()
        if conversation_id is None:
            raise HistoryError("there is no saved chat to continue yet")
    assert conversation_id is not None  # --conversation ID, or the last one found above
    return history.load_conversation(conversation_id)


def _given(ctx, name: str) -> bool:
    """Whether option `name` was given on the command line (not a default)."""
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _chat_lines(session, options: RunOptions, config, model) -> None:
    """Each stdin line is a user turn; replies go to stdout as plain text, a blank
    line between them, so scripts can drive a conversation."""
    from chatllm.render import Printer

    printer = Printer(
        model.name,
        session.persona.name,
        json=options.json,
        stats=options.stats,
        show_reasoning=options.show_reasoning,
        markdown=False,
        between="\n",  # a blank line tells replies apart
    )
    for line in sys.stdin:
        text = line.rstrip("\n")
        if text.strip():
            printer.show(session.send(text))
    if not printer.replies:
        raise InputError("no input: type messages on a terminal, or pipe lines in (one turn per line)")
