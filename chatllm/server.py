"""`chatllm serve`: an OpenAI-compatible HTTP API over one loaded engine.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`
(with and without `stream`), `GET /health`. Every template and persona is also
a model name: asking for `support` prepends the support persona's system prompt
(with its knowledge) to the conversation, renders the last user message through
the template's prompt, and applies the template's generation defaults.
Precedence of sampling settings: template defaults < `chatllm serve` options <
the request's own `temperature`, `max_tokens`, `seed`, `stop`, `top_p`.
Template variables come from an optional `"variables": {...}` object in the
request body (the OpenAI SDKs send it with `extra_body`).

Built on the standard library (`http.server`): the engine serves one reply at
a time anyway (a llama.cpp context is not thread-safe), so requests take turns
on one lock and an async framework would buy nothing.
"""

from __future__ import annotations

import hmac
import json
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

from chatllm.engine.base import Engine, GenerationStats, Message, generation_params
from chatllm.errors import ChatLLMError
from chatllm.engine.reasoning import Reasoning
from chatllm.jobs.chat import Persona
from chatllm.jobs.grounding import GroundingFilter, grounded
from chatllm.jobs.repetition import RepetitionGuard, guarded
from chatllm.server_requests import RequestError, parse_chat_request
from chatllm.templates import Template, load_template, template_names

MAX_BODY_BYTES = 32 * 1024 * 1024


class ServeError(ChatLLMError):
    """The server cannot start (e.g. the port is taken)."""


@dataclass(frozen=True)
class ChatRequest:
    """A request ready for the engine: template applied, settings merged."""

    model: str  # the name the client asked for, echoed in the reply
    messages: list[Message]
    params: GenerationParams
    stream: bool
    include_usage: bool
    repetition: str = "loops"  # the repetition guard's mode (jobs/repetition.py)
    # A persona's knowledge and the conversation: the numbers a reply may state
    # (jobs/grounding.py), and what it says when nothing of its reply is left.
    facts: str | None = None
    fallback: str = ""


# ---- the service: requests in, replies out; no HTTP here ------------------------


class ChatService:
    """The served model and templates. Callers hold `lock` around `prepare` and the
    whole of `start`'s iterator: the engine serves one request at a time."""

    def __init__(self, engine: Engine, model_name: str, defaults: dict[str, Any] | None = None,
                 aliases: tuple[str, ...] = (), templates: list[Template] | None = None, tiny_model: bool = False,
                 api_key: str | None = None) -> None:
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
        # Set when the server shuts down: a running reply ends at its next piece.
        self.stopping = threading.Event()
        self.created = int(time.time())
        self._personas: dict[tuple, Any] = {}

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
            "id": model_id, "object": "model", "created": self.created, "owned_by": "chatllm",
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
                400, f"model '{request.model}' does not exist; this server has: {', '.join(self.model_ids())}",
                code="model_not_found",
            )
        settings = dict(template.defaults) if template else {}
        settings.update(self.defaults)
        settings.update(request.overrides)
        messages = request.messages
        persona = None
        if template is not None:
            messages, persona = self._apply_template(template, request.variables, messages)
        repetition = request.repetition or str(settings.get("repetition", "loops"))
        params = generation_params(settings)
        schema = request.schema if request.schema is not None else (template.schema if template is not None else None)
        if schema is not None:
            from dataclasses import replace

            from chatllm.engine.grammar import json_schema_text, schema_to_gbnf

            try:
                schema_to_gbnf(json_schema_text(schema))  # a schema no grammar can express is the client's error
            except ChatLLMError as error:
                raise RequestError(400, str(error), code="invalid_value") from None
            params = replace(params, json_schema=json_schema_text(schema), max_tokens=params.max_tokens or 1024)
            repetition = "off"  # the schema bounds the reply's form; a guard cutting it would break the JSON
        facts = None
        if persona is not None and persona.facts is not None and schema is None:
            facts = "\n".join([persona.facts, *(m.content for m in messages if m.role == "user")])
        return ChatRequest(request.model, messages, params, request.stream, request.include_usage,
                           repetition, facts, persona.fallback if persona is not None else "")

    def _apply_template(self, template: Template, given: dict[str, str],
                        messages: list[Message]) -> tuple[list[Message], Persona | None]:
        """The messages with the template applied, and the persona if it is one."""
        persona = None
        try:
            values = template.resolve_variables(given)
            if template.kind == "persona":
                persona = self._persona(template, values)
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

    def _persona(self, template: Template, values: dict[str, str]) -> Persona:
        # Indexing a persona's knowledge costs time, so each persona is built once
        # per set of variable values.
        from chatllm.jobs.persona import build_persona

        key = (template.name, tuple(sorted(values.items())))
        if key not in self._personas:
            self._personas[key] = build_persona(template, values, self.engine, tiny_model=self.tiny_model)
        return self._personas[key]

    def start(self, request: ChatRequest) -> Iterator[str]:
        """The reply's pieces. Anything wrong with the prompt (too long for the
        context, refused by the engine) raises here, before any piece, so the
        caller can still answer with an HTTP error."""
        try:
            prompt_tokens = self.engine.count_prompt_tokens(request.messages)
        except ChatLLMError as error:  # e.g. a chat template that rejects the roles' order
            raise RequestError(400, str(error)) from None
        if prompt_tokens >= self.engine.context_size:
            raise RequestError(
                400, f"the prompt takes {prompt_tokens} tokens but the context holds {self.engine.context_size}",
                code="context_length_exceeded",
            )
        engine = self.engine
        # A reasoning model's thinking bypasses the guards: only the answer is
        # guarded and grounded; thinking goes out as reasoning_content.
        thoughts: list[str] = []
        pieces = _answers(engine.stream(request.messages, request.params), thoughts)
        if request.repetition != "off":

            def tripped(rule: str) -> None:
                engine.last_stats.finish_reason = "repetition"

            pieces = guarded(pieces, RepetitionGuard(mode=request.repetition), on_trip=tripped)
        if request.facts is not None:
            pieces = grounded(pieces, GroundingFilter(request.facts), request.fallback)
        pieces = _with_thoughts(pieces, thoughts)
        try:
            first = next(pieces, None)
        except ChatLLMError as error:
            raise RequestError(500, str(error), kind="server_error") from None
        return _chain(first, pieces, self.stopping)


def load_templates() -> list[Template]:
    """Every template that loads; a broken user template is reported and skipped."""
    found = []
    for name in template_names():
        try:
            found.append(load_template(name))
        except ChatLLMError as error:
            sys.stderr.write(f"Warning: not serving template '{name}': {error}\n")
    return found


def _answers(pieces: Iterator[str], thoughts: list[str]) -> Iterator[str]:
    """The answer's pieces; `Reasoning` pieces are put in `thoughts` instead."""
    try:
        for piece in pieces:
            if isinstance(piece, Reasoning):
                thoughts.append(piece)
            else:
                yield piece
    finally:
        pieces.close()


def _with_thoughts(answer: Iterator[str], thoughts: list[str]) -> Iterator[str]:
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


def _chain(first: str | None, rest: Iterator[str], stopping: threading.Event) -> Iterator[str]:
    try:
        if first is not None:
            yield first
            for piece in rest:
                if stopping.is_set():
                    break
                yield piece
    finally:
        rest.close()


# ---- OpenAI's JSON shapes ---------------------------------------------------------


def usage_json(stats: GenerationStats) -> dict[str, Any]:
    usage = stats.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def timings_json(stats: GenerationStats) -> dict[str, Any]:
    """llama-server's `timings` object, which chatllm's remote engine reads."""
    usage, timings = stats.usage, stats.timings
    return {
        "prompt_n": usage.prompt_tokens - usage.cached_prompt_tokens,
        "cache_n": usage.cached_prompt_tokens,
        "prompt_per_second": round(timings.prefill_tokens_per_s, 2),
        "predicted_n": usage.completion_tokens,
        "predicted_per_second": round(timings.decode_tokens_per_s, 2),
    }


def _finish(stats: GenerationStats) -> str:
    """OpenAI's finish_reason, or chatllm's "repetition" (DESIGN.md: the same
    names in --json, history and here)."""
    return stats.finish_reason if stats.finish_reason in ("length", "repetition") else "stop"


def completion_json(reply_id: str, created: int, model: str, text: str, stats: GenerationStats,
                    reasoning: str = "") -> dict[str, Any]:
    return {
        "id": reply_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                             **({"reasoning_content": reasoning} if reasoning else {})}, "logprobs": None,
                     "finish_reason": _finish(stats)}],
        "usage": usage_json(stats), "timings": timings_json(stats),
    }


def chunk_json(reply_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


# ---- HTTP -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for plain replies; streams close the connection
    server_version = "chatllm"
    server: "ChatHTTPServer"

    def _authorized(self, path: str) -> bool:
        """Every endpoint but /health needs `Authorization: Bearer KEY` when the
        server has a key (compared in constant time; the key is never logged).
        Answers 401 itself when it is missing or wrong."""
        key = self.server.service.api_key
        if key is None or path == "/health":
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return True
        self._send_error(RequestError(401, "a valid API key is needed: send 'Authorization: Bearer KEY'",
                                      kind="authentication_error", code="invalid_api_key"))
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        service = self.server.service
        if not self._authorized(path):
            return
        if path == "/v1/models":
            self._send_json(200, service.models())
        elif path.startswith("/v1/models/"):
            entry = service.model_entry(path.removeprefix("/v1/models/"))
            if entry is None:
                self._send_error(RequestError(404, f"model '{path.removeprefix('/v1/models/')}' does not exist", code="model_not_found"))
            else:
                self._send_json(200, entry)
        elif path == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_error(RequestError(404, f"no such endpoint: GET {path or '/'}", kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized(path):
            self.close_connection = True  # the body was not read
            return
        try:
            body = self._read_json()
            if path != "/v1/chat/completions":
                raise RequestError(404, f"no such endpoint: POST {path or '/'}", kind="not_found_error")
            self._chat(body)
        except RequestError as error:
            self._send_error(error)
        except ConnectionError:  # the client hung up; the engine was already stopped
            self.close_connection = True
        except ChatLLMError as error:  # the engine failed mid-reply
            self._send_error(RequestError(500, str(error), kind="server_error"))
        except Exception as error:  # a bug: answer 500 and keep serving
            self.log_error("internal error: %r", error)
            self._send_error(RequestError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error"))

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(411, "the request needs a Content-Length header")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(413, f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the request body is not valid JSON: {error}") from None

    def _chat(self, body: Any) -> None:
        service = self.server.service
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        with service.lock:
            request = service.prepare(body)
            pieces = service.start(request)
            try:
                if not request.stream:
                    parts = list(pieces)
                    text = "".join(p for p in parts if not isinstance(p, Reasoning))
                    thinking = "".join(p for p in parts if isinstance(p, Reasoning))
                    if service.stopping.is_set():
                        raise RequestError(503, "the server is shutting down; this reply was cut short", kind="server_error")
                    self._send_json(200, completion_json(reply_id, created, request.model, text, service.engine.last_stats,
                                                         thinking))
                    return
                self._stream(pieces, request, reply_id, created)
            finally:
                pieces.close()

    def _stream(self, pieces: Iterator[str], request: ChatRequest, reply_id: str, created: int) -> None:
        service = self.server.service
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        extra = {"usage": None} if request.include_usage else {}

        def send(event: dict[str, Any] | str) -> None:
            data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
            self.wfile.write(f"data: {data}\n\n".encode("utf-8"))
            self.wfile.flush()

        send({**chunk_json(reply_id, created, request.model, {"role": "assistant", "content": ""}), **extra})
        try:
            for piece in pieces:
                field = "reasoning_content" if isinstance(piece, Reasoning) else "content"
                send({**chunk_json(reply_id, created, request.model, {field: str(piece)}), **extra})
        except ChatLLMError as error:  # headers are gone: report it the way llama-server does
            send({"error": {"message": str(error), "type": "server_error"}})
            return
        if service.stopping.is_set():
            return  # no [DONE]: the client learns the reply was cut short
        stats = service.engine.last_stats
        send({**chunk_json(reply_id, created, request.model, {}, _finish(stats)), **extra})
        if request.include_usage:
            send({"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": request.model,
                  "choices": [], "usage": usage_json(stats), "timings": timings_json(stats)})
        send("[DONE]")

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        self._send_json(error.status, error.payload())

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class ChatHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that never hangs up does not keep chatllm alive
    service: ChatService


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    import ipaddress

    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> ChatHTTPServer:
    """A listening server (port 0 picks a free one); set `.service` before `run`."""
    try:
        return ChatHTTPServer((host, port), _Handler)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def base_url(server: ChatHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/v1"


def run(server: ChatHTTPServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly and return."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.server_close()
        # Free the engine once the running reply (if any) has stopped; one stuck
        # in a long prefill is left to the process exit rather than freed under it.
        server.service.stopping.set()
        if server.service.lock.acquire(timeout=10):
            server.service.engine.close()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
