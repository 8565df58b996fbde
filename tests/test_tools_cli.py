"""Tools through the real CLI on the embedded model: the support persona's
own MCP server, local tools declared in YAML, approval in a pipe and on a
real terminal, --json's tool_calls, --stats, history and --continue, and
every bad declaration as one line. (`--tool-choice` makes the 135M model
call: it seldom does by itself; the grammar makes its arguments fit.)"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from tests.support.cli import chatllm_command, cli_env, run_chatllm
from tests.support.openai_servers import free_port

ECHO = Path(__file__).parent / "support" / "tools" / "echo_tool.py"
NASTY = "; touch {marker} $(touch {marker}) `touch {marker}` && rm -rf ~/nothing"


def echo_tools(tmp_path: Path, value: str, name: str = "text", **extra: object) -> Path:
    """A tools file with one tool, echo, whose only possible argument `name`
    is `value` (an enum: the grammar makes the model write exactly it),
    passed both as an argv item and as JSON on stdin."""
    tool = {
        "name": "echo",
        "description": "Repeats a text back.",
        "parameters": {"type": "object", "properties": {name: {"enum": [value]}}, "required": [name]},
        "command": [sys.executable, str(ECHO), "{" + name + "}"],
        **extra,
    }
    path = tmp_path / "tools.yaml"
    path.write_text(json.dumps({"tools": [tool]}), encoding="utf-8")  # JSON is YAML
    return path


def replies(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_support_persona_looks_an_order_up_and_a_continued_chat_replays_it(embedded_model: Path) -> None:
    asked = run_chatllm(
        "chat", "-p", "support", "--tool-choice", "order_status", "--json", "--stats", "--max-tokens", "60",
        input="Where is my order MM-123456?\n",
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr.decode()
    (reply,) = replies(asked.stdout)
    (call,) = reply["tool_calls"]
    assert call["name"] == "order_status" and not call["is_error"] and call["seconds"] >= 0
    assert set(call["arguments"]) == {"order_id"}
    assert '"found"' in call["result"]  # the demo server's answer, found or not
    stderr = asked.stderr.decode()
    assert "tool calls: 1" in stderr  # --stats
    assert "→" not in stderr and "\x1b" not in stderr  # in a pipe: no call lines, no colour

    replay = run_chatllm("chat", "--continue", "--dry-run")
    assert replay.returncode == 0, replay.stderr.decode()
    messages = json.loads(replay.stdout)["messages"]
    assistant = next(m for m in messages if m.get("tool_calls"))
    assert assistant["tool_calls"][0]["function"]["name"] == "order_status"
    tool = next(m for m in messages if m["role"] == "tool")
    assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"] and tool["content"] == call["result"]

    shown = run_chatllm("logs", "show", "1")
    assert "→ order_status(order_id=" in shown.stdout.decode()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_in_a_pipe_a_call_needs_yes_and_then_shell_characters_reach_the_tool_as_text(
    embedded_model: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "owned"
    text = NASTY.format(marker=marker)
    tools = echo_tools(tmp_path, text)
    options = ("run", "summarize", "--tools", str(tools), "--tool-choice", "echo", "--json", "--temperature", "0")

    refused = run_chatllm(*options, input="Echo the text, please.")
    assert refused.returncode == 0, refused.stderr.decode()
    calls = replies(refused.stdout)[0]["tool_calls"]
    assert calls and all(call["is_error"] and "did not allow" in call["result"] for call in calls)
    stderr = refused.stderr.decode()
    assert stderr.count("Pass --yes (-y) to allow every call, or declare the tool `safe: true`.") == 1

    allowed = run_chatllm(*options, "--yes", input="Echo the text, please.")
    assert allowed.returncode == 0, allowed.stderr.decode()
    calls = replies(allowed.stdout)[0]["tool_calls"]
    for call in calls:  # verbatim, as one argv item and as JSON on stdin
        assert json.loads(call["result"]) == {"argv": [text], "stdin": {"text": text}}
    assert calls and not marker.exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tool_that_hangs_or_is_missing_is_a_result_and_the_conversation_goes_on(
    embedded_model: Path, tmp_path: Path
) -> None:
    hangs = echo_tools(tmp_path, "hang", name="mode", timeout=1)  # echo_tool.py sleeps for an hour
    chat = run_chatllm(
        "chat", "--tools", str(hangs), "--tool-choice", "echo", "-y", "--json", "--max-tokens", "60",
        input="First question\nSecond question\n",
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr.decode()
    both = replies(chat.stdout)
    assert len(both) == 2  # the conversation went on
    for reply in both:
        assert reply["tool_calls"]
        for call in reply["tool_calls"]:
            assert call["is_error"] and "did not finish within 1 s and was stopped" in call["result"]

    ghost = tmp_path / "ghost.yaml"
    ghost.write_text("tools:\n  - name: ghost\n    command: [no-such-program-here]\n    safe: true\n")
    missing = run_chatllm(
        "run", "summarize", "--tools", str(ghost), "--tool-choice", "ghost", "--json", "--max-tokens", "60",
        input="x y z",
    )  # fmt: skip
    assert missing.returncode == 0, missing.stderr.decode()
    call = replies(missing.stdout)[0]["tool_calls"][0]
    assert call["is_error"] and "there is no program 'no-such-program-here'" in call["result"]


@pytest.mark.parametrize(
    ("tools_yaml", "extra", "message"),
    [
        (
            "tools:\n  - name: a\n    parameters: {type: object, properties: {x: {type: 12}}}\n    command: [x]\n",
            (),
            "is not a valid JSON Schema",
        ),
        ("tools:\n  - name: a\n    command: [x]\n  - name: a\n    command: [y]\n", (), "two tools are named 'a'"),
        ("tools:\n  - name: a\n    command: [x]\n", ("--tool-choice", "b"), "--tool-choice b: there is no such tool"),
        ("", ("--mcp", "http://127.0.0.1:{port}/mcp"), "could not be reached: All connection attempts failed"),
        ("", ("--mcp", "no-such-mcp-server-here --flag"), "could not start: no such program"),
        ("", ("--tool-choice", "required"), "--tool-choice needs tools"),
    ],
)
def test_a_bad_tool_declaration_is_one_line_before_the_model_is_asked(
    embedded_model: Path, tmp_path: Path, tools_yaml: str, extra: tuple[str, ...], message: str
) -> None:
    args = ["run", "summarize", "--json", *(a.format(port=free_port()) for a in extra)]
    if tools_yaml:
        path = tmp_path / "tools.yaml"
        path.write_text(tools_yaml)
        args += ["--tools", str(path)]
    result = run_chatllm(*args, input="Some text to summarize.")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert result.stdout == b""


def test_an_mcp_server_named_in_the_config_file_is_started(tmp_path: Path) -> None:
    """`commands.chat.mcp` in the config file is a server chat starts, as --mcp would (one that
    cannot start says so in one line, before any model is loaded)."""
    configured = run_chatllm("config", "set", "commands.chat.mcp", "no-such-configured-server --flag")
    assert configured.returncode == 0, configured.stderr.decode()
    chat = run_chatllm("chat", input="Where is my order NB-51377?\n")
    assert chat.returncode == 2 and chat.stdout == b""
    assert chat.stderr.decode() == (
        "Error: MCP server 'no-such-configured-server --flag' could not start: no such program "
        "(no-such-configured-server)\n"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_on_a_terminal_each_call_is_shown_and_asked_about(embedded_model: Path, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    tools = echo_tools(tmp_path, "hello")
    program, *args = chatllm_command("chat", "--tools", str(tools), "--tool-choice", "echo", "--temperature", "0")
    env = cli_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        program, args, cwd=str(tmp_path), env=env, dimensions=(30, 100), encoding="utf-8", timeout=300
    )
    child.logfile_read = transcript = io.StringIO()
    try:
        child.expect("Send a message")
        for message, answer in (("Say hello", "n"), ("Say hello again", "y")):
            child.send(message + "\r")
            asked = 0
            while child.expect([r'Run echo\(text="hello"\)\? \[y/N\] ', "Send a message"]) == 0:
                child.send(answer + "\r")
                asked += 1
                # What it returned, or that it did not run, before anything else.
                child.expect('← {"argv": \\["hello"\\]' if answer == "y" else "error: the user did not allow")
            assert asked >= 1
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    except pexpect.ExceptionPexpect as error:
        pytest.fail(f"{type(error).__name__}; the terminal showed:\n{transcript.getvalue()[-3000:]!r}")
    finally:
        child.close()
    assert child.exitstatus == 0 and "Traceback" not in transcript.getvalue()
    assert '→ echo(text="hello")' in transcript.getvalue()
