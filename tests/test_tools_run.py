"""Declared tools and running them: tools files checked in one line, commands
run without a shell, within a time limit and an output cap; approval."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from chatllm.reply.events import ToolCall
from chatllm.tools.declarations import Tool, ToolError, load_tools_file
from chatllm.tools.execute import run_command
from chatllm.tools.limits import MAX_RESULT_BYTES
from chatllm.tools.toolbox import Approval, Toolbox

ECHO = str(Path(__file__).parent / "support" / "tools" / "echo_tool.py")


def tools_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def echo_tool(**extra) -> Tool:
    schema = {"type": "object", "properties": {"text": {"type": "string"}, "mode": {"type": "string"}}}
    return Tool("echo", "Echoes", schema, command=(sys.executable, ECHO, *extra.pop("argv", ())), **extra)


def test_a_tools_file_declares_tools_with_the_short_schema_syntax(tmp_path: Path) -> None:
    path = tools_file(
        tmp_path,
        f"tools:\n  - name: order_status\n    description: An order's status\n    parameters: 'order_id: the number'\n"
        f"    command: [{sys.executable}, {ECHO}]\n    safe: true\n    timeout: 5\n",
    )
    tools, servers = load_tools_file(path)
    assert servers == []
    assert tools[0].parameters["required"] == ["order_id"]
    assert tools[0].safe and tools[0].timeout_s == 5 and tools[0].cwd == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tools:\n  - name: a\n    parameters: {type: object, properties: {x: {type: 12}}}\n    command: [x]\n",
            "not a valid JSON Schema",
        ),
        ("tools:\n  - name: a\n    command: [x]\n  - name: a\n    command: [y]\n", "two tools are named 'a'"),
        ("tools:\n  - name: a\n    command: 'rm -rf ~'\n", "'command' must be a list"),
        ("tools:\n  - name: 'a b'\n    command: [x]\n", "'name' must be"),
        ("tools:\n  - name: a\n    command: [x, '{nope}']\n", "'{nope}' is not one of the tool's parameters"),
        ("tools: [\n", "not valid YAML"),
    ],
)
def test_a_bad_tools_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ToolError) as error:
        load_tools_file(tools_file(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_shell_metacharacters_reach_the_tool_verbatim(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    nasty = f"; touch {marker} && echo $(touch {marker}) `touch {marker}` | cat > {marker}"
    outcome = run_command(echo_tool(argv=("{text}",), argv_arguments=("text",)), {"text": nasty})
    assert not outcome.is_error
    assert f'"argv": [{__import__("json").dumps(nasty)}]' in outcome.content
    assert __import__("json").dumps(nasty) in outcome.content.split('"stdin"')[1]
    assert not marker.exists()


def test_a_hanging_tool_is_stopped_at_its_timeout() -> None:
    started = time.perf_counter()
    outcome = run_command(echo_tool(timeout_s=1.0), {"mode": "hang"})
    assert outcome.is_error and "did not finish within 1 s" in outcome.content
    assert time.perf_counter() - started < 10


def test_a_flood_of_output_is_cut_with_a_note() -> None:
    outcome = run_command(echo_tool(), {"mode": "flood"})
    assert not outcome.is_error
    assert len(outcome.content.encode()) < MAX_RESULT_BYTES + 200
    assert f"only the first {MAX_RESULT_BYTES} are shown" in outcome.content


def test_a_failing_tool_tells_the_model_why() -> None:
    outcome = run_command(echo_tool(), {"mode": "fail"})
    assert outcome.is_error and "exited with status 3: the order database is down" in outcome.content


def test_a_missing_program_is_a_result_not_a_crash() -> None:
    tool = Tool("ghost", "", {"type": "object", "properties": {}}, command=("no-such-program-here",))
    outcome = run_command(tool, {})
    assert outcome.is_error and "there is no program 'no-such-program-here'" in outcome.content


def test_a_model_cannot_run_what_was_not_declared() -> None:
    box = Toolbox([echo_tool()], Approval(yes=True))
    result, _ = box.run(ToolCall("c1", "bash", {"command": "rm -rf ~"}))
    assert result.is_error and "there is no tool 'bash'" in result.content


def test_arguments_that_do_not_fit_are_not_run() -> None:
    box = Toolbox([echo_tool()], Approval(yes=True))
    result, _ = box.run(ToolCall("c1", "echo", {"text": 5}))
    assert result.is_error and "do not fit" in result.content


def test_in_a_pipe_a_call_needs_yes_or_safe() -> None:
    refused, note = Toolbox([echo_tool()], Approval()).run(ToolCall("c1", "echo", {"text": "hi"}))
    assert refused.is_error and "did not allow" in refused.content
    assert note is not None and "--yes" in note.text
    ran, _ = Toolbox([echo_tool(safe=True)], Approval()).run(ToolCall("c1", "echo", {"text": "hi"}))
    assert not ran.is_error and '"hi"' in ran.content
    asked = []
    box = Toolbox([echo_tool()], Approval(ask=lambda name, args: asked.append((name, args)) or False))
    result, _ = box.run(ToolCall("c1", "echo", {"text": "hi"}))
    assert asked == [("echo", {"text": "hi"})] and result.is_error


def test_a_template_brings_its_tools_and_servers(tmp_path: Path) -> None:
    from chatllm.errors import TemplateError
    from chatllm.templates import load_template, load_template_file

    good = tmp_path / "agent.yaml"
    good.write_text(
        "name: agent\nkind: persona\nsystem: Help.\ntools:\n  - name: echo\n    command: [python3, echo.py]\n"
        "mcp_servers:\n  - python server.py\n  - {server: 'http://127.0.0.1:9/mcp', safe: true}\n",
        encoding="utf-8",
    )
    template = load_template_file(good, "user")
    assert [t.name for t in template.tools] == ["echo"] and template.tools[0].cwd == tmp_path
    assert [(s.spec, s.safe) for s in template.mcp_servers] == [
        ("python server.py", False),
        ("http://127.0.0.1:9/mcp", True),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsystem: Help.\ntools:\n  - name: a\n    command: [x]\n  - name: a\n    command: [y]\n")
    with pytest.raises(TemplateError, match=r"bad.yaml:3: two tools are named 'a'"):
        load_template_file(bad, "user")
    support = load_template("support")
    assert support.mcp_servers and support.mcp_servers[0].safe


def test_a_server_named_twice_is_started_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The support persona brings its order server; `--mcp "python prompts/tools/orders_server.py"`
    names the same one (issue 23's own command line), which is no second server of the same tools."""
    from chatllm.templates import load_template
    from chatllm.tools.declarations import McpServer, distinct_servers

    root = Path(__file__).parent.parent
    monkeypatch.chdir(root)
    own = list(load_template("support").mcp_servers)
    given = [McpServer("python prompts/tools/orders_server.py"), McpServer(f"python {ECHO}")]
    assert distinct_servers(own + given) == [own[0], given[1]]
    monkeypatch.chdir(tmp_path)  # elsewhere, the same words name another file
    assert len(distinct_servers(own + given)) == 3
