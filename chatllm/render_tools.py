"""Tool calls as a person sees them (issue 23): on a terminal, one dim line
on stderr per call, `→ order_status(order_id="NB-51377")`, and one for what
it returned; in a pipe nothing (stdout only ever carries the answer, and a
refused call's note comes as a Notice). render.Printer and the REPL's view
show them; `--json` and history get the calls gathered here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatllm.engine.base import GenerationParams, Message
from chatllm.reply.events import ToolCall, ToolResult
from chatllm.reply.tool_loop import ToolSteps, call_line, result_line


class ToolDisplay:
    """A reply's tool calls: each shown by `line` as it comes (None: not
    shown), and gathered for --json and history (`take`)."""

    def __init__(self, line: Callable[[str], None] | None) -> None:
        self.line = line
        self.steps = ToolSteps()

    def call(self, call: ToolCall, text: str) -> None:
        """A call, after `text`: the reply's text so far."""
        self.steps.called(call, text)
        if self.line is not None:
            self.line(call_line(call.name, call.arguments))

    def result(self, result: ToolResult) -> None:
        self.steps.returned(result)
        if self.line is not None:
            self.line(result_line(result.content, result.is_error, result.seconds))

    def take(self) -> ToolSteps:
        """The reply's calls; the next reply's start afresh."""
        steps, self.steps = self.steps, ToolSteps()
        return steps


def params_json(params: GenerationParams) -> dict[str, Any]:
    """--dry-run's settings: those given, the tools as OpenAI's API and chat
    templates take them, and no tool settings when there are no tools."""
    given = {key: value for key, value in vars(params).items() if value not in (None, ())}
    if params.tools:
        given["tools"] = [{"type": "function", "function": tool.function()} for tool in params.tools]
    else:
        given = {key: value for key, value in given.items() if key not in ("tool_choice", "parallel_tool_calls")}
    return given


def message_json(message: Message) -> dict[str, Any]:
    """--dry-run's message: its role and content, and the calls of an
    assistant's message or the call a tool's message answers (a chat
    continued with --continue replays them)."""
    return message.openai_json()
