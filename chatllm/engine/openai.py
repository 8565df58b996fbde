"""The remote backend: any OpenAI-compatible server (llama.cpp's llama-server,
llama-cpp-python's server, vLLM, Ollama, `chatllm serve`) over HTTP with httpx.

What callers can rely on:

* `stream` POSTs `/chat/completions` with `stream: true` and yields the content
  of each SSE chunk; the HTTP response is closed when the iterator ends or is
  closed early (finish_reason "interrupted"), so the server stops generating.
* Every failure (refused connection, timeout, HTTP 4xx/5xx, malformed stream,
  a stream that ends without `data: [DONE]`) is a one-line `EngineError`.
* `last_stats.usage` is the server's own usage chunk (`stream_options:
  {include_usage: true}`, dropped automatically for servers that reject it).
  Servers that send no usage get an estimate: prompt tokens as
  `count_prompt_tokens` gives them, completion tokens as the number of content
  chunks (llama.cpp-based servers send one token per chunk).
* Rates come from llama-server's `timings` object when it sends one; otherwise
  they are measured here, so they include network and queueing time.
* `count_tokens` asks the server's tokenizer (llama-server and vLLM `/tokenize`,
  llama-cpp-python `/extras/tokenize`); a server without one gets an estimate of
  four characters a token. `count_prompt_tokens` adds 5 tokens per message for
  the chat template's role markers (ChatML's `<|im_start|>role\\n ... <|im_end|>\\n`)
  and 3 for the reply's opening: the template itself stays on the server.
* `context_size` is the server's (llama-server `/props`, vLLM's `max_model_len`,
  a `meta.n_ctx` in `/models`), capped by `--ctx`/`ctx` when those are smaller;
  without one from the server, `--ctx`/`ctx`, else 4096.

Environment: `CHATLLM_API_KEY` (else `OPENAI_API_KEY`) is sent as a Bearer
token; `CHATLLM_REMOTE_TIMEOUT` is how many seconds the server may stay silent
(default 300; connecting has 5 s).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from chatllm.engine.base import (
    Capabilities,
    EngineOptions,
    EngineStream,
    GenerationParams,
    GenerationStats,
    Message,
    Timings,
    sampling_settings,
)
from chatllm.engine.openai_stream import ReplyReader, error_message, one_line, parse_event, sse_events
from chatllm.engine.reasoning import ThinkSplitter, may_think
from chatllm.errors import EngineError
from chatllm.hub.models import ResolvedModel
from chatllm.reply.events import Reasoning, ToolCall

DEFAULT_CONTEXT = 4096
CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 300.0
TIMEOUT_VARIABLE = "CHATLLM_REMOTE_TIMEOUT"
API_KEY_VARIABLES = ("CHATLLM_API_KEY", "OPENAI_API_KEY")
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 5
REPLY_OPENING_TOKENS = 3
_TOKEN_CACHE_SIZE = 4096
_DEFAULTS = GenerationParams()
_ALWAYS_SENT = ("temperature", "top_p")


def read_timeout_from_environment() -> float:
    value = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_READ_TIMEOUT_S
    try:
        seconds = float(value)
        if seconds <= 0:
            raise ValueError
    except ValueError:
        raise EngineError(f"{TIMEOUT_VARIABLE} must be a number of seconds, not {value!r}") from None
    return seconds


def api_key_from_environment() -> str | None:
    return next((os.environ[name] for name in API_KEY_VARIABLES if os.environ.get(name)), None)


class OpenAIEngine(Capabilities):
    """A model on an OpenAI-compatible server. One stream at a time per engine.
    A JSON Schema goes to the server as `response_format`, not as a local grammar."""

    can_stream = True
    supports_tools = True  # passed through: the server's template and parser make the calls
    base_url: str

    identity: str | None = None  # the weights are on the server

    def __init__(
        self,
        model: ResolvedModel,
        options: EngineOptions,
        *,
        read_timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if model.remote_url is None:
            raise EngineError(f"'{model.reference}' is not a remote model (use openai:MODEL@http://host:port/v1)")
        self.base_url = model.remote_url.rstrip("/")
        parts = urlsplit(self.base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        # llama-server's /props and /tokenize live beside /v1, not under it.
        self.root_url = self.base_url[: -len("/v1")] if parts.path.endswith("/v1") else origin
        self.read_timeout = read_timeout if read_timeout is not None else read_timeout_from_environment()
        headers = {"Accept": "application/json"}
        key = api_key_from_environment()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.read_timeout, connect=CONNECT_TIMEOUT_S),
            transport=transport,
        )
        self._seed = options.seed
        self._send_stream_options = True
        self._response_format = "json_schema"  # how this server takes a schema (see _body)
        self._tokenizer: str | None = None  # URL of the server's tokenizer, "" for none
        self._token_counts: dict[str, int] = {}
        self.last_stats = GenerationStats()
        started = time.perf_counter()
        try:
            self.model_name, served_context = self._discover(model.remote_model)
        except BaseException:
            self._client.close()
            raise
        self.load_s = time.perf_counter() - started
        self.last_stats.timings.load_s = self.load_s
        limits = [size for size in (served_context, options.n_ctx) if size]
        self.context_size = min(limits) if limits else DEFAULT_CONTEXT

    # ---- HTTP ----------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from None

    def _transport_error(self, error: httpx.HTTPError) -> EngineError:
        where = self.base_url
        if isinstance(error, httpx.ConnectTimeout):
            return EngineError(f"cannot connect to {where}: no answer within {CONNECT_TIMEOUT_S:g} s")
        if isinstance(error, httpx.ConnectError):
            reason = str(error)
            if "refused" in reason.lower():
                reason = "connection refused (is the server running?)"
            return EngineError(f"cannot connect to {where}: {one_line(reason)}")
        if isinstance(error, httpx.ReadTimeout):
            return EngineError(
                f"the server at {where} sent nothing for {self.read_timeout:g} s; "
                f"set {TIMEOUT_VARIABLE}=SECONDS to wait longer"
            )
        if isinstance(error, httpx.TimeoutException):
            return EngineError(f"the server at {where} timed out ({type(error).__name__})")
        if isinstance(error, httpx.RemoteProtocolError):
            return EngineError(f"the server at {where} broke off the connection mid-reply ({one_line(str(error))})")
        return EngineError(f"request to {where} failed: {one_line(str(error)) or type(error).__name__}")

    def _status_error(self, response: httpx.Response) -> EngineError:
        message = error_message(response.text)
        hint = ""
        if response.status_code in (401, 403):
            hint = f"; set {' or '.join(API_KEY_VARIABLES)} to the server's API key"
        elif response.status_code == 404 and not self.base_url.endswith("/v1"):
            hint = "; most servers want the URL to end in /v1 (openai:MODEL@http://host:port/v1)"
        return EngineError(
            f"the server at {self.base_url} answered HTTP {response.status_code} "
            f"{response.reason_phrase}: {message}{hint}"
        )

    def _get_json(self, url: str) -> Any | None:
        """The JSON at `url`, or None when the server does not have that endpoint.
        Refused connections, timeouts and auth failures raise."""
        response = self._request("GET", url)
        if response.status_code in (401, 403):
            raise self._status_error(response)
        if response.status_code >= 400:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    # ---- model and context ---------------------------------------------------

    def _discover(self, wanted: str | None) -> tuple[str, int | None]:
        """The model name to send and the context the server reports (if any)."""
        listing = self._get_json(f"{self.base_url}/models")
        entries = (
            [e for e in (listing or {}).get("data", []) if isinstance(e, dict)] if isinstance(listing, dict) else []
        )
        if not wanted:
            if not entries or not isinstance(entries[0].get("id"), str):
                raise EngineError(
                    f"the server at {self.base_url} lists no models; name one: openai:MODEL@{self.base_url}"
                )
            wanted = entries[0]["id"]
        entry = next((e for e in entries if e.get("id") == wanted), entries[0] if len(entries) == 1 else {})
        context = _context_from_entry(entry)
        if context is None:
            props = self._get_json(f"{self.root_url}/props")
            if isinstance(props, dict):
                settings = props.get("default_generation_settings")
                context = _positive_int(props.get("n_ctx")) or (
                    _positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
                )
        return wanted, context

    # ---- tokens --------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the server's tokenizer, or ceil(chars / 4) when the
        server has none."""
        if not text:
            return 0
        known = self._token_counts.get(text)
        if known is not None:
            return known
        count = self._remote_count(text)
        if count is None:
            count = (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
        if len(self._token_counts) >= _TOKEN_CACHE_SIZE:
            self._token_counts.clear()
        self._token_counts[text] = count
        return count

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """An estimate: contents by the server's tokenizer plus the role markers of
        a typical chat template (the template is applied on the server)."""
        return sum(self.count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages) + REPLY_OPENING_TOKENS

    def _remote_count(self, text: str) -> int | None:
        if self._tokenizer == "":
            return None
        candidates = (
            [self._tokenizer] if self._tokenizer else [f"{self.root_url}/tokenize", f"{self.root_url}/extras/tokenize"]
        )
        # One body for every known tokenizer endpoint: llama-server reads `content`,
        # vLLM `prompt`, llama-cpp-python `input`; each ignores the others' fields.
        body = {"content": text, "prompt": text, "input": text, "model": self.model_name, "add_special_tokens": False}
        for url in candidates:
            response = self._request("POST", url, json=body)
            if response.status_code >= 400:
                if self._tokenizer:  # it worked before: a real failure
                    raise self._status_error(response)
                continue
            try:
                data = response.json()
            except ValueError:
                continue
            count = data.get("count") if isinstance(data, dict) else None
            tokens = data.get("tokens") if isinstance(data, dict) else None
            if isinstance(count, int):
                self._tokenizer = url
                return count
            if isinstance(tokens, list):
                self._tokenizer = url
                return len(tokens)
        self._tokenizer = ""
        return None

    # ---- generation ----------------------------------------------------------

    def _body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [_message_json(m) for m in messages],
            "stream": True,
        }
        if self._send_stream_options:
            body["stream_options"] = {"include_usage": True}
        params = replace(params, seed=params.seed if params.seed is not None else self._seed)
        for setting in sampling_settings():
            value = getattr(params, setting.name)
            # Only what differs from llama.cpp's defaults (strict servers reject
            # fields they do not know), but always temperature and top_p: chatllm's
            # defaults for those are not every server's.
            if value is not None and (setting.name in _ALWAYS_SENT or value != getattr(_DEFAULTS, setting.name)):
                body[setting.name] = value
        if params.stop:
            body["stop"] = list(params.stop)
        if params.json_schema and self._response_format == "json_schema":  # OpenAI's; llama-server and vLLM take it too
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": json.loads(params.json_schema), "strict": True},
            }
        elif params.json_schema and self._response_format == "json_object":  # llama-cpp-python's server
            body["response_format"] = {"type": "json_object", "schema": json.loads(params.json_schema)}
        if params.grammar:  # llama-server's own field for a raw GBNF grammar
            body["grammar"] = params.grammar
        if params.think is not None:  # Qwen3-style templates on llama-server and vLLM read this
            body["chat_template_kwargs"] = {"enable_thinking": params.think}
        if params.tools:  # passed through: the server's template and parser make the calls
            body["tools"] = [{"type": "function", "function": tool.function()} for tool in params.tools]
            choice = params.tool_choice
            named = {"type": "function", "function": {"name": choice}}
            body["tool_choice"] = choice if choice in ("auto", "none", "required") else named
            if not params.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        return body

    def _open_stream(self, messages: Sequence[Message], params: GenerationParams) -> httpx.Response:
        """The streaming response, status checked. Servers that reject
        `stream_options` are asked once more without it."""
        while True:
            body = self._body(messages, params)
            request = self._client.build_request(
                "POST", f"{self.base_url}/chat/completions", json=body, headers={"Accept": "text/event-stream"}
            )
            try:
                response = self._client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise self._transport_error(error) from None
            if response.status_code < 400:
                return response
            try:
                response.read()
            except httpx.HTTPError as error:
                raise self._transport_error(error) from None
            finally:
                response.close()
            if self._send_stream_options and response.status_code in (400, 422) and "stream_options" in response.text:
                self._send_stream_options = False
                continue
            if (
                "response_format" in body
                and response.status_code in (400, 422, 500)
                and "response_format" in response.text
            ):
                # Each server has its own form: OpenAI's json_schema, llama-cpp-python's
                # json_object with a schema; with neither, the reply is still validated.
                self._response_format = "json_object" if self._response_format == "json_schema" else "none"
                continue
            raise self._status_error(response)

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream:
        """Yield the reply's text as the server streams it: the answer as `str`,
        thinking as `Reasoning` pieces (sent apart, or inline `<think>` tags).
        Raises EngineError (on the first `next`) if the server cannot be
        reached or refuses the request."""
        pieces = self._stream(messages, params)
        if params.json_schema:
            return pieces
        # A reasoning model's template may open <think> on the server: then the
        # start of its reply is held until a tag says which it is.
        splitter = ThinkSplitter(None if may_think(self.model_name) and params.think is not False else False)
        return self._split(pieces, splitter)

    def _split(self, pieces: EngineStream, splitter: ThinkSplitter) -> EngineStream:
        try:
            for piece in pieces:
                if type(piece) is str:
                    yield from splitter.feed(piece)
                else:  # thinking sent apart, a tool call
                    yield piece
            yield from splitter.finish()
            self.last_stats.thinking_unclosed = splitter.unclosed
        finally:
            pieces.close()

    def _stream(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream:
        stats = GenerationStats(timings=Timings(load_s=self.load_s))
        self.last_stats = stats
        reader = ReplyReader(stats)
        completed = False
        try:
            response = self._open_stream(messages, params)
            try:
                for event in self._events(response):
                    text = reader.text_of(event)
                    if reader.reasoning:
                        yield Reasoning(reader.reasoning)
                        reader.reasoning = ""
                    if text:
                        yield text
                for call_id, name, arguments in reader.calls():
                    yield ToolCall(call_id, name, arguments)
            finally:
                response.close()  # on early close too: the server sees the disconnect and stops
            completed = True
        except GeneratorExit:
            stats.finish_reason = "interrupted"
            raise
        except httpx.HTTPError as error:
            raise self._transport_error(error) from None
        finally:
            # Only a finished reply is worth asking the server's tokenizer about.
            reader.finish(
                self.count_prompt_tokens(messages)
                if completed and not reader.usage_seen
                else _estimate_prompt(messages)
            )

    def _events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # A server that ignores `stream` and answers with one completion.
            response.read()
            yield parse_event(response.text, self.base_url)
            return
        yield from sse_events(response.iter_lines(), self.base_url)

    def close(self) -> None:
        self._client.close()


# ---- plain helpers ----------------------------------------------------------------


def _message_json(message: Message) -> dict[str, Any]:
    """A message as OpenAI's API takes it, tool calls and results included."""
    data = message.openai_json()
    if message.tool_calls:  # no content beside calls is null, as OpenAI sends it
        data["content"] = message.content or None
    return data


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _context_from_entry(entry: dict[str, Any]) -> int | None:
    meta = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
    for value in (entry.get("max_model_len"), entry.get("context_length"), meta.get("n_ctx"), meta.get("n_ctx_train")):
        size = _positive_int(value)
        if size:
            return size
    return None


def _estimate_prompt(messages: Sequence[Message]) -> int:
    chars = sum(len(m.content) for m in messages)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(messages) + REPLY_OPENING_TOKENS
