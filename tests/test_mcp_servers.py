"""MCP servers through the SDK: real servers written with the SDK, over stdio
and over streamable HTTP on 127.0.0.1, and the failures a user can meet."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatllm.reply.events import ToolCall
from chatllm.tools.declarations import McpServer, ToolError
from chatllm.tools.mcp_client import server_label
from chatllm.tools.toolbox import Approval, Toolbox

SERVER = Path(__file__).parent / "support" / "tools" / "mcp_test_server.py"
ORDERS = Path(__file__).parent.parent / "prompts" / "tools" / "orders_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def test_a_stdio_server_lists_and_runs_its_tools() -> None:
    box = Toolbox.open(servers=[McpServer(f"python {SERVER}")], approval=Approval(yes=True))
    try:
        assert set(box.tools) == {"add", "broken", "die"}
        result, _ = box.run(ToolCall("c1", "add", {"a": 2, "b": 40}))
        assert (result.content, result.is_error) == ("42", False)
        failed, _ = box.run(ToolCall("c2", "broken", {"reason": "test"}))
        assert failed.is_error and "Error executing tool broken" in failed.content
        _, said = box.run(ToolCall("c3", "die", {}))
        after, said_again = box.run(ToolCall("c4", "add", {"a": 1, "b": 1}))
        stopped = f"MCP server '{server_label(f'python {SERVER}')}' stopped"
        assert after.is_error and stopped in after.content
        notes = [note.text for note in (said, said_again) if note is not None]
        assert len(notes) == 1 and notes[0].startswith(stopped)  # one line, once
    finally:
        box.close()


def test_a_streamable_http_server(http_server: str) -> None:
    box = Toolbox.open(servers=[McpServer(http_server)], approval=Approval(yes=True))
    try:
        result, _ = box.run(ToolCall("c1", "add", {"a": 1, "b": 2}))
        assert result.content == "3"
    finally:
        box.close()


def test_the_demo_order_server_answers_from_its_orders() -> None:
    box = Toolbox.open(servers=[McpServer(f"python {ORDERS}", safe=True)], approval=Approval())
    try:
        result, note = box.run(ToolCall("c1", "order_status", {"order_id": "nb-51377"}))
        assert note is None and '"status": "Shipped"' in result.content
    finally:
        box.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("http://127.0.0.1:{port}/mcp", "could not be reached: All connection attempts failed"),
        ("no-such-mcp-server --flag", "could not start: no such program"),
        ("python /no/such/server.py", "can't open file"),
        ("python 'unclosed", "does not parse"),
    ],
)
def test_a_server_that_cannot_start_is_one_line(spec: str, message: str) -> None:
    with pytest.raises(ToolError) as error:
        Toolbox.open(servers=[McpServer(spec.format(port=free_port()))])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_long_server_command_is_shortened_in_the_middle() -> None:
    label = server_label("python /a/very/long/checkout/path/that/goes/on/and/on/tests/support/tools/server.py")
    assert len(label) == 60 and label.startswith("python /a/") and label.endswith("tools/server.py")
    assert server_label("uvx mcp-server-time") == "uvx mcp-server-time"
