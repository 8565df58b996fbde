"""`chatllm serve`'s service: requests in, replies out; no HTTP here
(server/http.py serves it, server/openai_json.py shapes its answers).

Every template and persona is also
a model name: asking for `support` prepends the support persona's system prompt
(with its knowledge) to the conversation, renders the last user message through
the template's prompt, and applies the template's generation defaults.
Precedence of sampling settings: template defaults < `chatllm serve` options <
the request's own `temperature`, `max_tokens`, `seed`, `stop`, `top_p`.
Template variables come from an optional `"variables": {...}` object in the
request body (the OpenAI SDKs send it with `extra_body`).

Each job that serves templates (jobs/table.py `serves`) is made ready once,
as the server starts, with the options `serve` takes for it (`served_jobs`:
ask's --docs are read and indexed then); a job that makes its own reply
(`Served.respond`: ask's passages, checks and sources) makes it instead of
the pipeline's one call.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from chatllm.config.settings import persona_judges_dir
from chatllm.engine.base import Engine, Message
from chatllm.errors import ChatLLMError
from chatllm.jobs.chat import Persona
from chatllm.jobs.job import Served, ServedJob
from chatllm.jobs.persona import build_persona
from chatllm.jobs.prompting import generation_params, repetition_mode
from chatllm.jobs.structured import check_grammar, constrained
from chatllm.jobs.table import JOBS, serving
from chatllm.reply.events import Event, Finish
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Events, ReplyRequest, reply
from chatllm.server.capacity import Capacity
from chatllm.server.hangups import HangupWatch
from chatllm.server.metrics import ServeMetrics
from chatllm.server.requests import RequestError, parse_chat_request
from chatllm.templates import Template, load_template, template_names


@runtime_checkable
class SlotView(Protocol):
    """An engine with slots (engine/batched.py): what they do, and a way to
    drop the request a thread waits on."""

    def slot_states(self) -> list[str]: ...

    def abandon(self, thread: int) -> None: ...

    def expecting(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class ChatRequest:
    """A request ready for the engine: template applied, settings merged."""

    model: str  # the name the client asked for, echoed in the reply
    reply: ReplyRequest
    stream: bool
    include_usage: bool
    repetition: str = "loops"  # the repetition guard's mode (jobs/repetition.py)
    # A job that makes the whole reply itself (Served.respond); None: the pipeline's reply.
    respond: Callable[[Meter, ReplyRequest], Events] | None = None


class ChatService:
    """The served model and templates. Each request holds a place in `capacity`
    and `turn()` around `prepare` and the whole of `start`'s iterator: an
    engine that serves one request at a time takes them in turn, a
    `concurrent` one (engine/batched.py) takes them all at once."""

    def __init__(
        self,
        engine: Engine,
        model_name: str,
        defaults: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        templates: list[Template] | None = None,
        tiny_model: bool = False,
        api_key: str | None = None,
        jobs: Mapping[str, ServedJob] | None = None,
        concurrent: bool = False,
        capacity: Capacity | None = None,
    ) -> None:
        """`tiny_model`: the model is too small to read long knowledge well
        (persona knowledge is then searched; jobs/persona.py). `api_key`: the
        key every request but /health must carry. `jobs`: the jobs served, by
        name (`served_jobs`; by default those that need no options)."""
        self.engine = engine
        self.api_key = api_key or None
        self.tiny_model = tiny_model
        self.model_name = model_name
        self.defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
        self.aliases = {model_name, engine.model_name, *aliases}
        self.jobs = dict(jobs) if jobs is not None else served_jobs({})
        found = templates if templates is not None else load_templates()
        self.templates = {t.name: t for t in found if _served_by(t) in self.jobs}
        # Templates of a job serve was not given the options for (ask without --docs).
        self.unserved = {t.name: serving(t) for t in found if t.name not in self.templates}
        self.lock = threading.Lock()
        self.concurrent = concurrent
        self.capacity = capacity or Capacity(1, 64)
        self.metrics = ServeMetrics(self.slot_states, self.waiting, lambda: self.capacity.in_flight)
        self.hangups = HangupWatch(self._abandon)
        # Set when the server shuts down: a running reply ends at its next piece.
        self.stopping = threading.Event()
        self.created = int(time.time())
        self.personas = PersonaCache()
        # One persona built at a time: requests that arrive together for a new
        # one wait for the first to build it (indexing, the judge's calibration).
        self._building = threading.Lock()

    def turn(self) -> AbstractContextManager[Any]:
        """What a request holds while it is prepared and answered."""
        return contextlib.nullcontext() if self.concurrent else self.lock

    def arriving(self) -> AbstractContextManager[Any]:
        """Held from a request's admission on: an engine with slots prefills
        requests that arrive together in one batch (engine/scheduler.py)."""
        return self.engine.expecting() if isinstance(self.engine, SlotView) else contextlib.nullcontext()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is being answered; False after `timeout_s`
        (the lock is then held for good: the server is stopping)."""
        deadline = time.monotonic() + timeout_s
        if not self.lock.acquire(timeout=timeout_s):
            return False
        while self.capacity.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)  # the replies end at their next piece (see `stopping`)
        return self.capacity.in_flight == 0

    def slot_states(self) -> list[str]:
        """Each slot's state (idle, prefill, generating), for /health and /metrics."""
        if isinstance(self.engine, SlotView):
            return self.engine.slot_states()
        # An engine without slots of its own: the first requests in are the ones answered.
        busy = min(self.capacity.in_flight, self.capacity.parallel)
        return ["generating"] * busy + ["idle"] * (self.capacity.parallel - busy)

    def _abandon(self, thread: int) -> None:
        """The client of the request `thread` answers has gone."""
        if isinstance(self.engine, SlotView):
            self.engine.abandon(thread)

    def waiting(self) -> int:
        """Requests admitted but not yet in a slot."""
        busy = sum(state != "idle" for state in self.slot_states())
        return max(0, self.capacity.in_flight - busy)

    def model_ids(self) -> list[str]:
        return [self.model_name, *(name for name in self.templates if name != self.model_name)]

    def model_entry(self, model_id: str) -> dict[str, Any] | None:
        if model_id in self.aliases:
            kind, description = "model", f"{self.engine.model_name} without a template"
        elif model_id in self.templates:
            template = self.templates[model_id]
            kind, description = template.kind, template.description
        else:
            return None
        return {
            "id": model_id,
            "object": "model",
            "created": self.created,
            "owned_by": "chatllm",
            # vLLM's field: OpenAI-compatible clients (chatllm's included) read the context from it.
            "max_model_len": self.engine.context_size,
            "chatllm": {"kind": kind, "description": description},
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_entry(name) for name in self.model_ids()]}

    def prepare(self, body: Any) -> ChatRequest:
        """Validate a chat completion request and apply its template. Raises
        RequestError (an HTTP status and an OpenAI-style error)."""
        request = parse_chat_request(body, default_model=self.model_name)
        if request.model in self.aliases:
            template = None
        elif request.model in self.templates:
            template = self.templates[request.model]
        else:
            raise RequestError(400, self._not_served(request.model), code="model_not_found")
        messages = request.messages
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        persona, respond = None, None
        offered = request.overrides.get("tools") or () if request.overrides.get("tool_choice") != "none" else ()
        tool_names = tuple(tool.name for tool in offered)
        persona_key = (template.name if template else "", tuple(sorted(request.variables.items())), tool_names)
        if template is not None:
            messages, served = self._apply_template(template, request.variables, messages, persona_key, tool_names)
            persona, respond = served.persona, served.respond
        # Template defaults < `chatllm serve` options < the request's own values.
        params = generation_params(template, self.defaults, request.overrides)
        cap = self.defaults.get("max_tokens")
        if cap is not None:  # `serve --max-tokens` caps every reply, as llama-server's --n-predict does
            params = replace(params, max_tokens=min(params.max_tokens or cap, cap))
        repetition = repetition_mode(
            template, request.repetition, self.defaults.get("repetition"), tiny_model=self.tiny_model
        )
        schema = request.schema if request.schema is not None else (template.schema if template is not None else None)
        if schema is not None and respond is not None:
            raise RequestError(400, f"model '{request.model}' answers in its own form and takes no response_format")
        if schema is not None and params.tools and params.tool_choice != "none":
            raise RequestError(400, "'response_format' and 'tools' do not go together", code="invalid_value")
        if schema is not None:
            try:  # a schema no grammar can express is the client's error
                check_grammar(schema, local=self.engine.supports_grammar)
            except ChatLLMError as error:
                raise RequestError(400, str(error), code="invalid_value") from None
            params = constrained(params, schema, max_tokens=1024)
            repetition = "off"  # the schema bounds the reply's form; a guard cutting it would break the JSON
        self._check_fits(messages)
        if persona is not None:  # only a request that passed every check is remembered
            self.personas.put(persona_key, persona)
        # A reply under a schema is the schema's: no persona stage may change it.
        reply = ReplyRequest(messages, params, persona if schema is None else None, question)
        return ChatRequest(request.model, reply, request.stream, request.include_usage, repetition, respond)

    def _not_served(self, model: str) -> str:
        """Why `model` is not a model here: a template whose job `serve` was
        not given the options for (ask without --docs), or no such name."""
        spec = self.unserved.get(model)
        if spec is not None and spec.serve_options:
            flags = " or ".join(option.flags[0] for option in spec.serve_options)
            return f"model '{model}' is served only when chatllm serve is given {flags}"
        return f"model '{model}' does not exist; this server has: {', '.join(self.model_ids())}"

    def _apply_template(
        self,
        template: Template,
        given: dict[str, str],
        messages: list[Message],
        persona_key: tuple,
        tool_names: tuple[str, ...] = (),
    ) -> tuple[list[Message], Served]:
        """The messages with the template applied as the job serving it says
        (jobs/table.py), and how it is served (the persona, if it is one)."""
        job = self.jobs.get(_served_by(template) or "")
        if job is None:  # the templates listed are those of the jobs served
            raise RequestError(400, f"template '{template.name}' cannot be served")

        def persona_for(template: Template, values: dict[str, str]) -> Persona:
            # Indexing a persona's knowledge costs time, so each persona is
            # kept per set of variable values (see PersonaCache).
            found = self.personas.get(persona_key)
            if found is not None:
                return found
            with self._building:
                return self.personas.get(persona_key) or build_persona(
                    template,
                    values,
                    self.engine,
                    tiny_model=self.tiny_model,
                    judge_cache=persona_judges_dir(),
                    tool_names=tool_names,
                )

        try:
            served = job.served(template, template.resolve_variables(given), persona_for)
            messages = list(messages)
            # Only the newest user turn goes through the template; earlier turns were answered already.
            last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
            if last_user is not None:
                messages[last_user] = Message("user", served.render_user(messages[last_user].content))
        except ChatLLMError as error:
            raise RequestError(400, str(error)) from None
        # One system message: the template's, then the client's own instructions.
        own = [m.content for m in messages if m.role == "system"]
        rest = [m for m in messages if m.role != "system"]
        system = "\n\n".join(text for text in (served.system, *own) if text)
        return ([Message("system", system)] if system else []) + rest, served

    def _check_fits(self, messages: list[Message]) -> None:
        try:
            prompt_tokens = self.engine.count_prompt_tokens(messages)
        except ChatLLMError as error:  # e.g. a chat template that rejects the roles' order
            raise RequestError(400, str(error)) from None
        if prompt_tokens >= self.engine.context_size:
            raise RequestError(
                400,
                f"the prompt takes {prompt_tokens} tokens but the context holds {self.engine.context_size}",
                code="context_length_exceeded",
            )

    def start(self, request: ChatRequest) -> Events:
        """The reply's events (reply/events.py), ending with its `Finish`. An
        engine that fails before the first event raises here, so the caller
        can still answer with an HTTP error (a prompt too long for the context
        was refused by `prepare`)."""
        meter = Meter(self.engine, request.repetition)
        events = request.respond(meter, request.reply) if request.respond else reply(meter, request.reply)
        try:
            first = next(events, None)
        except ChatLLMError as error:
            raise RequestError(500, str(error), kind="server_error") from None
        return self._counted(_chain(first, events, self.stopping))

    def _counted(self, events: Events) -> Events:
        """`events`; the reply's figures go to /metrics when its Finish passes."""
        try:
            for event in events:
                if type(event) is Finish:
                    self.metrics.reply(event.stats)
                yield event
        finally:
            events.close()


class PersonaCache:
    """The personas last used, per template and variable values, least recently
    used first. Bounded: every distinct set of variables a client sends is
    another persona, and its texts hold the variables' values several times."""

    # A server usually plays a few personas (one per company, say); 16 keeps
    # those warm without letting clients grow the server's memory.
    MAX_ENTRIES = 16

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, Persona] = OrderedDict()
        self._lock = threading.Lock()  # requests on several threads at once (serve --parallel)

    def get(self, key: tuple) -> Persona | None:
        with self._lock:
            persona = self._entries.get(key)
            if persona is not None:
                self._entries.move_to_end(key)
            return persona

    def put(self, key: tuple, persona: Persona) -> None:
        with self._lock:
            self._entries[key] = persona
            self._entries.move_to_end(key)
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def served_jobs(options: Mapping[str, Any]) -> dict[str, ServedJob]:
    """Each job `serve` offers, by name, made ready with serve's `options` (the
    table's serve_options: ask's --docs, read and indexed now). Raises
    ChatLLMError for an option that cannot be used (a PATH that does not exist)."""
    return {spec.name: spec.serving(options) for spec in JOBS if spec.offered(options)}


def _served_by(template: Template) -> str | None:
    job = serving(template)
    return job.name if job is not None else None


def load_templates() -> list[Template]:
    """Every template that loads and that a job serves (jobs/table.py); a
    broken user template is reported and skipped."""
    found = []
    for name in template_names():
        try:
            template = load_template(name)
        except ChatLLMError as error:
            sys.stderr.write(f"Warning: not serving template '{name}': {error}\n")
            continue
        if serving(template) is not None:
            found.append(template)
    return found


def _chain(first: Event | None, rest: Events, stopping: threading.Event) -> Events:
    """`first` and the rest, until the server shuts down."""
    try:
        if first is not None:
            yield first
            for event in rest:
                if stopping.is_set():
                    break
                yield event
    finally:
        rest.close()
