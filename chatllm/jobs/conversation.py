"""`chatllm chat`: a conversation with a persona, planned before the model
loads (the persona's template, its knowledge, a saved conversation to
continue) and run turn by turn (jobs/chat.py holds the session itself).

On a terminal the REPL drives the session (cli/repl.py); in a pipe each line
of stdin is one turn (`ChatJob.run`). Persona templates are `serve` models
too (`served`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from chatllm import inputs
from chatllm.config.settings import persona_judges_dir
from chatllm.engine.base import Engine
from chatllm.errors import HistoryError, InputError, UsageError
from chatllm.history import store as history
from chatllm.history.recording import ConversationRecorder
from chatllm.jobs.chat import ChatSession, Persona
from chatllm.jobs.job import Plan, Served, Setup
from chatllm.jobs.model_fit import ModelFit, is_tiny
from chatllm.jobs.persona import build_persona, choose_knowledge
from chatllm.jobs.prompting import generation_params, repetition_mode
from chatllm.jobs.structured import constrained, grammar_for, structure_for
from chatllm.jobs.task import parse_variables
from chatllm.jobs.tooling import check_tools, offering, open_tools
from chatllm.reply.events import Notice
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Events
from chatllm.reply.tool_loop import prompt_messages
from chatllm.templates import Template, load_template


class ChatJob:
    """A conversation: its persona, settings and the turns it continues."""

    def __init__(self, setup: Setup) -> None:
        values = setup.values
        self.setup = setup
        self.resumed = resumed_conversation(bool(values.get("resume_last")), values.get("conversation"))
        persona, self.system = values.get("persona") or "chat", values.get("system")
        if self.resumed is not None and self.resumed.template and "persona" not in setup.given:
            persona, self.system = self.resumed.template, self.system or self.resumed.system
        self._template = load_template(persona)
        self.template = self._template.name
        self.values = self._template.resolve_variables(parse_variables(values.get("variable")))
        self.knowledge = choose_knowledge(self._template, values.get("kb") or [])  # a bad --kb fails now
        self.mode = values.get("knowledge_mode") or "auto"
        self.params = generation_params(self._template, setup.sampling)
        self.structure = structure_for(values.get("schema"), self._template.schema, local=not setup.model.remote)
        self.tiny = is_tiny(setup.model.path)
        if self.structure is not None:
            self.params = constrained(self.params, self.structure)
            # Each reply of a schema is constrained by it; a guard cutting it would break the JSON.
            self.repetition = "off"
        else:
            self.repetition = repetition_mode(self._template, setup.repetition, tiny_model=self.tiny)
        # The persona's own tools go with its own knowledge (the demo shop's order lookup).
        self.tools = open_tools(setup, self._template, template_tools=self.knowledge.template_own)
        check_tools(self.tools, self.structure)
        self.params = offering(self.params, self.tools, values.get("tool_choice"))
        self.record: dict[str, Any] | None = None  # the session records itself, turn by turn

    def persona(self, engine: Engine | None) -> Persona:
        """The persona; without an engine (--dry-run), its size estimated."""
        judges = persona_judges_dir() if engine is not None else None
        return build_persona(
            self._template,
            self.values,
            engine,
            self.knowledge,
            self.system,
            mode=self.mode,
            tiny_model=self.tiny,
            judge_cache=judges,
            tool_names=list(self.tools.tools) if self.tools is not None else (),
        )

    def plan(self) -> Plan:
        session = ChatSession(None, self.persona(None), self.params)  # type: ignore[arg-type]  # messages() needs no engine
        session.restore(self.resumed.turns() if self.resumed is not None else [])
        grammar = grammar_for(self.structure) if self.structure is not None and not self.setup.model.remote else None
        return Plan(prompt_messages(session.messages(), self.params), self.params, self.structure, grammar)

    def session(self, engine: Engine) -> tuple[ChatSession, list[str]]:
        """The session on `engine`, and what to say before its first turn."""
        setup, resumed = self.setup, self.resumed
        recorder = None
        if setup.log:
            recorder = ConversationRecorder(
                model=setup.model.name or engine.model_name,
                template=self.template,
                params=self.params,
                variables=self.values,
                conversation_id=resumed.id if resumed else None,
                resumed_turns=len(resumed.turns()) if resumed else 0,
            )
        fit = ModelFit(setup.model.path, enabled=setup.hints)
        check_tools(self.tools, self.structure, engine)
        persona = self.persona(engine)
        session = ChatSession(
            engine, persona, self.params, on_turn=recorder, repetition=self.repetition, fit=fit, tools=self.tools
        )
        notices = [hint for hint in [fit.for_knowledge(persona.retrieves)] if hint]
        if resumed is not None:
            session.restore(resumed.turns())
            count = len(session.turns)
            notices.append(f"Continuing conversation {resumed.id} ({count} earlier turn{'' if count == 1 else 's'}).")
            model = setup.model.name
            if resumed.model and resumed.model != model and "model" not in setup.given:
                notices.append(f"It was with {resumed.model}; this session uses {model} (-m picks the model).")
        return session, notices

    def run(self, meter: Meter) -> Events:
        """One turn per line of stdin, for scripts (the REPL drives `session` itself)."""
        session, notices = self.session(meter.engine)
        for notice in notices:
            yield Notice(notice)
        replies = 0
        for text in inputs.read_lines(sys.stdin.buffer, "standard input"):
            if text.strip():
                yield from session.send(text)
                replies += 1
        if not replies:
            raise InputError("no input: type messages on a terminal, or pipe lines in (one turn per line)")


def prepare(setup: Setup) -> ChatJob:
    return ChatJob(setup)


def served(template: Template, values: dict[str, str], persona_for: Callable[..., Any]) -> Served:
    """A persona as a `serve` model: its system prompt (with its knowledge),
    the newest message as it renders it, and its stages for the reply."""
    persona = persona_for(template, values)
    return Served(persona.system, persona.render_user, persona)


def resumed_conversation(resume_last: bool, conversation_id: int | None) -> history.Conversation | None:
    """The saved conversation --continue or --conversation asks for, or None."""
    if not resume_last and conversation_id is None:
        return None
    if resume_last and conversation_id is not None:
        raise UsageError("use --continue or --conversation ID, not both")
    if resume_last:
        conversation_id = history.last_conversation_id()
        if conversation_id is None:
            raise HistoryError("there is no saved chat to continue yet")
    assert conversation_id is not None  # --conversation ID, or the last one found above
    return history.load_conversation(conversation_id)
