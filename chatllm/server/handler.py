"""`chatllm serve`'s request handler: the OpenAI-compatible endpoints on the
standard library's `http.server` (http.py listens and hands it connections).

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`
(with and without `stream`), `GET /health`; with an API key, every endpoint
but /health needs `Authorization: Bearer KEY`.

Before a request gets here it passed the gate (gate.py): the connection
limits, framing, Host, Origin, the key and Content-Type.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from chatllm.errors import ChatLLMError
from chatllm.reply.events import Finish, Reasoning, Text, ToolCall
from chatllm.reply.pipeline import Events
from chatllm.server.capacity import ServerBusy
from chatllm.server.gate import ClientGone, GatedHandler
from chatllm.server.openai_json import (
    chunk_json,
    completion_json,
    finish_reason,
    job_fields,
    timings_json,
    usage_json,
)
from chatllm.server.requests import RequestError
from chatllm.server.service import ChatRequest, ChatService
from chatllm.server.tool_json import tool_call_deltas, tool_calls_json


class Handler(GatedHandler):
    """The endpoints, for requests the gate let through."""

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        service = self.server.service
        if self.admit(path) is None:
            return
        if path == "/v1/models":
            self.send_json(200, service.models())
        elif path.startswith("/v1/models/"):
            name = path.removeprefix("/v1/models/")
            entry = service.model_entry(name)
            if entry is None:
                self.send_request_error(RequestError(404, f"model '{name}' does not exist", code="model_not_found"))
            else:
                self.send_json(200, entry)
        elif path == "/health":
            self.send_json(200, health_json(service))
        elif path == "/metrics":
            data, content_type = service.metrics.text()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_request_error(RequestError(404, f"no such endpoint: GET {path or '/'}", kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        self.status_sent = 0
        length = self.admit(path)
        if length is None:
            return
        try:
            body = self._read_json(length)
            if path != "/v1/chat/completions":
                raise RequestError(404, f"no such endpoint: POST {path or '/'}", kind="not_found_error")
            self._chat(body)
        except ServerBusy as busy:
            self.send_request_error(busy.as_request_error())
        except RequestError as error:
            self.send_request_error(error)
        except (ConnectionError, TimeoutError) as error:  # the client hung up, or stopped reading
            self.log_message("client gone, reply stopped: %s", str(error) or type(error).__name__)
            self.close_connection = True
        except ChatLLMError as error:  # the engine failed mid-reply
            self.send_request_error(RequestError(500, str(error), kind="server_error"))
        except Exception as error:  # a bug: answer 500 and keep serving
            self.log_error("internal error: %r", error)
            self.send_request_error(
                RequestError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error")
            )
        finally:
            if path == "/v1/chat/completions":  # 499: the client left before its answer began
                self.server.service.metrics.answered(self.status_sent or 499)

    def _read_json(self, length: int) -> Any:
        raw = self.read_body(length)
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except RecursionError:
            raise RequestError(400, "the request body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the request body is not valid JSON: {error}") from None

    def _chat(self, body: Any) -> None:
        service = self.server.service
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        started = time.perf_counter()
        # A place among --parallel + --queue (or 503 at once); a client that
        # leaves while its request waits is noticed (hangups.py).
        with (
            service.capacity.admitted(),
            service.hangups.watching(self.connection),
            service.turn(),
            service.arriving(),
        ):
            if self.client_gone():  # it hung up while it waited its turn
                raise ClientGone("the client hung up before its turn")
            request = service.prepare(body)
            events = service.start(request)
            try:
                if request.stream:
                    self._stream(events, request, reply_id, created)
                else:
                    self._complete(events, request, reply_id, created)
            finally:
                events.close()  # stops the engine, whether the reply ended or not
                service.capacity.finished(time.perf_counter() - started)

    def _complete(self, events: Events, request: ChatRequest, reply_id: str, created: int) -> None:
        text, thinking, calls, finish = [], [], [], None
        for event in events:
            if type(event) is Text:
                text.append(event.text)
            elif type(event) is Reasoning:
                thinking.append(event.text)
            elif type(event) is ToolCall:
                calls.append(event)  # the client runs them and sends their results back
            elif type(event) is Finish:
                finish = event
            if self.client_gone():  # as a stream notices when a write fails
                raise ClientGone("the client hung up")
        if finish is None:  # the server is shutting down (service.stopping)
            raise RequestError(503, "the server is shutting down; this reply was cut short", kind="server_error")
        reply = completion_json(
            reply_id,
            created,
            request.model,
            "".join(text),
            finish.stats,
            "".join(thinking),
            finish.fields,
            tool_calls_json(calls),
        )
        self.send_json(200, reply)

    def _stream(self, events: Events, request: ChatRequest, reply_id: str, created: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        extra = {"usage": None} if request.include_usage else {}

        def send(event: dict[str, Any] | str) -> None:
            data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        send({**chunk_json(reply_id, created, request.model, {"role": "assistant", "content": ""}), **extra})
        finish, calls = None, 0
        try:
            for event in events:
                if isinstance(event, Text | Reasoning):
                    field = "content" if type(event) is Text else "reasoning_content"
                    send({**chunk_json(reply_id, created, request.model, {field: event.text}), **extra})
                elif type(event) is ToolCall:  # its id and name, then its arguments, as OpenAI streams them
                    for delta in tool_call_deltas(calls, event):
                        send({**chunk_json(reply_id, created, request.model, delta), **extra})
                    calls += 1
                elif type(event) is Finish:
                    finish = event
        except ChatLLMError as error:  # headers are gone: report it the way llama-server does
            send({"error": {"message": str(error), "type": "server_error"}})
            return
        if finish is None:
            return  # the server is shutting down; no [DONE]: the client learns the reply was cut short
        stats = finish.stats
        reason = "tool_calls" if calls else finish_reason(stats)
        last = chunk_json(reply_id, created, request.model, {}, reason)
        send({**last, **extra, **job_fields(finish.fields)})  # a job's fields come with the finish
        if request.include_usage:
            send(
                {
                    "id": reply_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": request.model,
                    "choices": [],
                    "usage": usage_json(stats),
                    "timings": timings_json(stats),
                }
            )
        send("[DONE]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def health_json(service: ChatService) -> dict[str, Any]:
    """/health: ok, and what each slot is doing, as llama-server's /slots tells."""
    states = service.slot_states()
    return {
        "status": "ok",
        "slots": {"total": len(states), "busy": sum(s != "idle" for s in states), "states": states},
        "requests": {"in_flight": service.capacity.in_flight, "waiting": service.waiting()},
    }
