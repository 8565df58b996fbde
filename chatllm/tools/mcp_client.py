"""MCP servers (`--mcp`, `mcp_servers:`) through the official `mcp` SDK.

A server is a command line started over stdio (`python orders_server.py`) or
an http(s):// URL (streamable HTTP). The SDK is async; chatllm is not: one
event loop runs on a background thread for all servers, and `McpServers` is
its synchronous face. Each server's connection is held open by a task of its
own (the SDK's transports must be entered and left in one task) until
`close`. Tool calls are scheduled on that loop and waited for.

A server that cannot start is one line (ToolError) before anything is asked
of the model; one that dies later turns each call into an error result the
model reads, and the user sees the same line.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from chatllm.tools.declarations import McpServer, Tool, ToolError
from chatllm.tools.execute import Outcome, capped
from chatllm.tools.limits import DEFAULT_TIMEOUT_S

CONNECT_TIMEOUT_S = 20.0


def server_label(spec: str) -> str:
    """How a server is named in messages: its URL or command line, shortened in
    the middle, because the end (the script or the URL's path) tells servers apart."""
    return spec if len(spec) <= 60 else spec[:20] + "..." + spec[-37:]


def _root_cause(error: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio wraps a transport's failure)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _describe(error: BaseException) -> str:
    error = _root_cause(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, FileNotFoundError):
        return f"no such program ({error.filename or text})"
    return text


class _Server:
    """One connection: the SDK's client, held open by `hold` on the loop."""

    def __init__(self, spec: str, cwd: Path | None) -> None:
        self.spec, self.cwd = spec, cwd
        self.label = server_label(spec)
        self.client: Any = None
        self.stop: asyncio.Event | None = None
        self.died: str | None = None
        self.errlog = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")

    def transport(self) -> Any:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        if self.spec.startswith(("http://", "https://")):
            return self.spec  # the SDK's streamable HTTP transport
        argv = self.argv()
        params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=self.cwd)
        return stdio_client(params, errlog=self.errlog)

    def argv(self) -> list[str]:
        """The server's command line as argv. A program named `python` or
        `python3` is the Python chatllm runs on, which has the mcp SDK (a
        demo server then runs wherever chatllm does)."""
        if self.spec.startswith(("http://", "https://")):
            return []
        try:
            argv = shlex.split(self.spec)
        except ValueError as error:
            raise ToolError(f"MCP server '{self.label}': the command line does not parse ({error})") from None
        if not argv:
            raise ToolError("an MCP server is a command line or an http(s):// URL, not empty")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    async def hold(self, ready: Future) -> None:
        from mcp import Client

        self.stop = asyncio.Event()
        try:
            async with Client(self.transport(), raise_exceptions=True) as client:
                self.client = client
                listing = await client.list_tools()
                ready.set_result(listing.tools)
                await self.stop.wait()
        except BaseException as error:  # noqa: BLE001 - reported, never raised into the loop
            message = _describe(error)
            if not ready.done():
                what = "could not be reached" if self.spec.startswith(("http://", "https://")) else "could not start"
                ready.set_exception(ToolError(self._failure(what, message)))
            else:
                self.died = message
        finally:
            self.client = None

    def _failure(self, what: str, message: str) -> str:
        self.errlog.seek(0)
        lines = [line.strip() for line in self.errlog.read().splitlines() if line.strip()]
        said = f" (it said: {lines[-1][:200]})" if lines and not self.spec.startswith("http") else ""
        return f"MCP server '{self.label}' {what}: {message}{said}"


class McpServers:
    """The MCP servers of one session, and their tools."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[_Server] = []
        self._by_tool: dict[str, _Server] = {}

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="chatllm-mcp", daemon=True)
            self._thread.start()
            self._loop = loop
        return self._loop

    def connect(self, declared: McpServer) -> list[Tool]:
        """Start (or reach) one server and list its tools. Raises ToolError in
        one line when it cannot be used."""
        server = _Server(declared.spec, declared.cwd)
        server.argv()  # a command line that does not parse fails here, in one line
        ready: Future = Future()
        asyncio.run_coroutine_threadsafe(server.hold(ready), self._start_loop())
        try:
            listed = ready.result(CONNECT_TIMEOUT_S)
        except FutureTimeout:
            self._stop(server)
            raise ToolError(
                f"MCP server '{server.label}' did not answer within {CONNECT_TIMEOUT_S:g} s; is it an MCP server?"
            ) from None
        self._servers.append(server)
        tools = []
        for listed_tool in listed:
            schema = listed_tool.input_schema or {"type": "object", "properties": {}}
            tool = Tool(
                listed_tool.name,
                (listed_tool.description or "").strip(),
                schema,
                server=server.label,
                safe=declared.safe,
                source=f"MCP server '{server.label}'",
            )
            self._by_tool[tool.name] = server
            tools.append(tool)
        return tools

    def call(self, tool: Tool, arguments: dict[str, Any], timeout_s: float = DEFAULT_TIMEOUT_S) -> Outcome:
        """Call one of a server's tools; every failure is an error Outcome."""
        server = self._by_tool.get(tool.name)
        started = time.perf_counter()
        if server is None or self._loop is None:
            return Outcome(f"tool '{tool.name}' is not on any MCP server", True)
        if server.died is not None or server.client is None:
            return Outcome(server._failure("stopped", server.died or "the connection is closed"), True, gone=True)
        future = asyncio.run_coroutine_threadsafe(self._call(server, tool.name, arguments, timeout_s), self._loop)
        try:
            return future.result(timeout_s + 5)
        except FutureTimeout:
            future.cancel()
            return Outcome(
                f"tool '{tool.name}' did not finish within {timeout_s:g} s", True, time.perf_counter() - started
            )

    async def _call(self, server: _Server, name: str, arguments: dict[str, Any], timeout_s: float) -> Outcome:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(server.client.call_tool(name, arguments), timeout_s)
        except TimeoutError:
            return Outcome(f"tool '{name}' did not finish within {timeout_s:g} s", True, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - an MCP error is the call's result
            seconds = time.perf_counter() - started
            closed = "connection closed" in _describe(error).lower()
            if closed or server.client is None or server.died is not None:
                server.died = server.died or _describe(error)
                return Outcome(server._failure("stopped", server.died), True, seconds, gone=True)
            return Outcome(f"MCP error from '{server.label}': {_describe(error)}", True, seconds)
        return Outcome(capped(_result_text(result)), bool(result.is_error), time.perf_counter() - started)

    def _stop(self, server: _Server) -> None:
        if self._loop is not None and server.stop is not None:
            self._loop.call_soon_threadsafe(server.stop.set)

    def close(self) -> None:
        """Stop every server (a stdio server's process ends with its pipe)."""
        loop = self._loop
        if loop is None:
            return
        for server in self._servers:
            self._stop(server)

        async def drain() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=5)

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(7)
        except (FutureTimeout, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None


def _result_text(result: Any) -> str:
    """A tool result's content as text: its text blocks, else its structured
    content as JSON, else a line saying what kind of content it was."""
    texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    kinds: Sequence[str] = sorted({getattr(block, "type", "?") for block in result.content})
    return f"(the tool returned no text{': ' + ', '.join(kinds) if kinds else ''})"
