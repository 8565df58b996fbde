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
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from chatllm.config.settings import persona_judges_dir
from chatllm.engine.base import Engine, GenerationParams, GenerationStats, Message, Stream, generation_params
from chatllm.engine.grammar import json_schema_text, schema_to_gbnf
from chatllm.engine.reasoning import Reasoning
from chatllm.errors import ChatLLMError
from chatllm.jobs.chat import Persona
from chatllm.jobs.metering import Meter
from chatllm.jobs.persona import build_persona
from chatllm.jobs.persona_reply import PersonaTurn
from chatllm.jobs.prompting import default_repetition
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


@dataclass(frozen=True)
class ChatRequest:
    """A request ready for the engine: template applied, settings merged."""

    model: str  # the name the client asked for, echoed in the reply
    messages: list[Message]
    params: GenerationParams
    stream: bool
    include_usage: bool
    repetition: str = "loops"  # the repetition guard's mode (jobs/repetition.py)
    # A persona's reply goes through its stages (jobs/persona_reply.py); the
    # question is the customer's last message as they wrote it.
    persona: Persona | None = None
    question: str = ""


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
        concurrent: bool = False,
        capacity: Capacity | None = None,
    ) -> None:
        """`tiny_model`: the model is too small to read long knowledge well
        (persona knowledge is then searched; jobs/persona.py). `api_key`: the
        key every request but /health must carry."""
        self.engine = engine
        self.api_key = api_key or None
        self.tiny_model = tiny_model
        self.model_name = model_name
        self.defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
        self.aliases = {model_name, engine.model_name, *aliases}
        self.templates = {t.name: t for t in (templates if templates is not None else load_templates())}
        self.lock = threading.Lock()
        self.concurrent = concurrent
        self.capacity = capacity or Capacity(1, 64)
        self.metrics = ServeMetrics(self.slot_states, self.waiting, lambda: self.capacity.in_flight)
        self.hangups = HangupWatch(self._abandon)
        # Set when the server shuts down: a running reply ends at its next piece.
        self.stopping = threading.Event()
        self.created = int(time.time())
        self._local = threading.local()  # each handler thread's last reply
        self.personas = PersonaCache()
        # One persona built at a time: requests that arrive together for a new
        # one wait for the first to build it (indexing, the judge's calibration).
        self._building = threading.Lock()

    @property
    def last_stats(self) -> GenerationStats:
        """What the last reply this thread streamed described once it ended
        (usage, timings, finish)."""
        return getattr(self._local, "stats", None) or GenerationStats()

    def turn(self) -> AbstractContextManager[Any]:
        """What a request holds while it is prepared and answered."""
        return contextlib.nullcontext() if self.concurrent else self.lock

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
            raise RequestError(
                400,
                f"model '{request.model}' does not exist; this server has: {', '.join(self.model_ids())}",
                code="model_not_found",
            )
        settings = dict(template.defaults) if template else {}
        settings.update(self.defaults)
        settings.update(request.overrides)
        cap = self.defaults.get("max_tokens")
        if cap is not None:  # `serve --max-tokens` caps every reply, as llama-server's --n-predict does
            settings["max_tokens"] = min(settings.get("max_tokens") or cap, cap)
        messages = request.messages
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        persona = None
        persona_key = (template.name if template else "", tuple(sorted(request.variables.items())))
        if template is not None:
            messages, persona = self._apply_template(template, request.variables, messages, persona_key)
        repetition = request.repetition or str(settings.get("repetition") or default_repetition(self.tiny_model))
        params = generation_params(settings)
        schema = request.schema if request.schema is not None else (template.schema if template is not None else None)
        if schema is not None:
            try:
                schema_to_gbnf(json_schema_text(schema))  # a schema no grammar can express is the client's error
            except ChatLLMError as error:
                raise RequestError(400, str(error), code="invalid_value") from None
            params = replace(params, json_schema=json_schema_text(schema), max_tokens=params.max_tokens or 1024)
            repetition = "off"  # the schema bounds the reply's form; a guard cutting it would break the JSON
        self._check_fits(messages)
        if persona is not None:  # only a request that passed every check is remembered
            self.personas.put(persona_key, persona)
        return ChatRequest(
            request.model,
            messages,
            params,
            request.stream,
            request.include_usage,
            repetition,
            # A reply under a schema is the schema's: no persona stage may change it.
            persona if schema is None else None,
            question,
        )

    def _apply_template(
        self, template: Template, given: dict[str, str], messages: list[Message], persona_key: tuple
    ) -> tuple[list[Message], Persona | None]:
        """The messages with the template applied, and the persona if it is one."""
        persona = None
        try:
            values = template.resolve_variables(given)
            if template.kind == "persona":
                # Indexing a persona's knowledge costs time, so each persona is
                # kept per set of variable values (see PersonaCache).
                persona = self.personas.get(persona_key) or self._build_persona(template, values, persona_key)
                system, render_user = persona.system, persona.render_user
            else:
                system = template.render_system(values)
                render_user = lambda text: template.render_prompt(values, text)  # noqa: E731
            messages = list(messages)
            # Only the newest user turn goes through the template; earlier turns were answered already.
            last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
            if last_user is not None:
                messages[last_user] = Message("user", render_user(messages[last_user].content))
        except ChatLLMError as error:
            raise RequestError(400, str(error)) from None
        # One system message: the template's, then the client's own instructions.
        own = [m.content for m in messages if m.role == "system"]
        rest = [m for m in messages if m.role != "system"]
        system = "\n\n".join(text for text in (system, *own) if text)
        return ([Message("system", system)] if system else []) + rest, persona

    def _build_persona(self, template: Template, values: dict[str, str], key: tuple) -> Persona:
        with self._building:
            return self.personas.get(key) or build_persona(
                template, values, self.engine, tiny_model=self.tiny_model, judge_cache=persona_judges_dir()
            )

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

    def start(self, request: ChatRequest) -> Stream:
        """The reply's pieces. An engine that fails before the first piece
        raises here, so the caller can still answer with an HTTP error (a
        prompt too long for the context was refused by `prepare`)."""
        # A reasoning model's thinking bypasses the guards: only the answer is
        # guarded and grounded; thinking goes out as reasoning_content.
        thoughts: list[str] = []
        meter = Meter(self.engine, repetition=request.repetition, on_reasoning=thoughts.append)
        if request.persona is not None:
            pieces = PersonaTurn(request.persona, request.question).reply(meter, request.messages, request.params)
        else:
            pieces = meter.stream(request.messages, request.params)
        pieces = self._recording(_with_thoughts(pieces, thoughts), meter)
        try:
            first = next(pieces, None)
        except ChatLLMError as error:
            raise RequestError(500, str(error), kind="server_error") from None
        return _chain(first, pieces, self.stopping)

    def _recording(self, pieces: Stream, meter: Meter) -> Stream:
        """`pieces`; once they end, `last_stats` describes the reply they made."""
        try:
            yield from pieces
        finally:
            pieces.close()
            self._local.stats = stats = meter.stats()
            self.metrics.reply(stats)


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


def load_templates() -> list[Template]:
    """Every template that loads; a broken user template is reported and skipped."""
    found = []
    for name in template_names():
        try:
            found.append(load_template(name))
        except ChatLLMError as error:
            sys.stderr.write(f"Warning: not serving template '{name}': {error}\n")
    return found


def _with_thoughts(answer: Stream, thoughts: list[str]) -> Stream:
    """The answer's pieces with the thinking put aside meanwhile yielded first,
    as `Reasoning`: thinking streams as it comes, before the answer it precedes."""
    try:
        for piece in answer:
            while thoughts:
                yield Reasoning(thoughts.pop(0))
            yield piece
        while thoughts:
            yield Reasoning(thoughts.pop(0))
    finally:
        answer.close()


def _chain(first: str | None, rest: Stream, stopping: threading.Event) -> Stream:
    try:
        if first is not None:
            yield first
            for piece in rest:
                if stopping.is_set():
                    break
                yield piece
    finally:
        rest.close()
