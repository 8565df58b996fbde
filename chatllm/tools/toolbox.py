"""The tools of one session: what the user declared, how each call is
approved, and running it.

A model can only name a tool; the toolbox runs a call only when its name is
one the user declared (a tools file, a template, an MCP server the user
named), its arguments fit the tool's schema, and it is approved:

* `--yes` approves every call;
* a tool declared `safe: true` (or from a server declared safe) runs;
* otherwise, on a terminal, the user is asked (the `ask` callback, the CLI's);
  in a pipe the call is refused, the model is told so, and a note says how
  to allow it.

Every call ends in a result the model reads, an error included; nothing a
tool does stops the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatllm.engine.base import ToolSpec
from chatllm.reply.events import Notice, ToolCall, ToolResult
from chatllm.tools.declarations import McpServer, Tool, check_unique, load_tools_file
from chatllm.tools.execute import Outcome, run_command
from chatllm.tools.limits import DEFAULT_TOOL_LIMIT

# Asks the user whether to run a call (tool's name, arguments) -> approved.
Ask = Callable[[str, dict[str, Any]], bool]


@dataclass
class Approval:
    """How calls are approved: `yes` approves all; `ask` is None in a pipe."""

    yes: bool = False
    ask: Ask | None = None
    refused: set[str] = field(default_factory=set)  # tools a pipe refused (one note each)

    def decide(self, tool: Tool, arguments: dict[str, Any]) -> tuple[bool, Notice | None]:
        """Whether the call runs, and a note for the user when it does not."""
        if self.yes or tool.safe:
            return True, None
        if self.ask is not None:
            return self.ask(tool.name, arguments), None
        note = None
        if tool.name not in self.refused:
            self.refused.add(tool.name)
            note = Notice(
                f"Did not run tool '{tool.name}': calls need approval, and there is no terminal to ask on. "
                "Pass --yes (-y) to allow every call, or declare the tool `safe: true`.",
                "warning",
            )
        return False, note


class Toolbox:
    """Declared tools by name, and where each runs (a command or an MCP server)."""

    def __init__(
        self, tools: Sequence[Tool], approval: Approval | None = None, mcp: Any = None, limit: int = DEFAULT_TOOL_LIMIT
    ) -> None:
        check_unique(list(tools))
        self.tools = {tool.name: tool for tool in tools}
        self.approval = approval or Approval()
        self._mcp = mcp
        self.limit = limit  # calls per reply (reply/tool_loop.py)
        self._gone: set[str] = set()  # MCP servers already said to have died

    @classmethod
    def open(
        cls,
        tools: Sequence[Tool] = (),
        files: Sequence[Path] = (),
        servers: Sequence[McpServer] = (),
        approval: Approval | None = None,
        limit: int = DEFAULT_TOOL_LIMIT,
    ) -> Toolbox:
        """Tools declared in `tools`, in tools files and on MCP servers (started
        here). Raises ToolError in one line; a server already started is stopped."""
        declared, to_start = list(tools), list(servers)
        for path in files:
            file_tools, file_servers = load_tools_file(path)
            declared += file_tools
            to_start += file_servers
        mcp = None
        try:
            if to_start:
                from chatllm.tools.mcp_client import McpServers

                mcp = McpServers()
                for server in to_start:
                    declared += mcp.connect(server)
            return cls(declared, approval, mcp, limit)
        except BaseException:
            if mcp is not None:
                mcp.close()
            raise

    def __bool__(self) -> bool:
        return bool(self.tools)

    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools as the engine tells the model of them."""
        return tuple(
            ToolSpec(t.name, t.description, json.dumps(t.parameters, ensure_ascii=False)) for t in self.tools.values()
        )

    def run(self, call: ToolCall) -> tuple[ToolResult, Notice | None]:
        """Run one call (when it may run) and its result for the model."""
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return _result(call, Outcome(f"there is no tool '{call.name}' (the tools: {known})", True)), None
        mismatch = _mismatch(tool, call.arguments)
        if mismatch:
            return _result(call, Outcome(f"the arguments do not fit tool '{tool.name}': {mismatch}", True)), None
        approved, note = self.approval.decide(tool, call.arguments)
        if not approved:
            return _result(
                call, Outcome(f"the user did not allow this call of '{tool.name}'; it was not run", True)
            ), note
        if tool.command:
            outcome = run_command(tool, call.arguments)
        else:
            outcome = self._mcp.call(tool, call.arguments, tool.timeout_s)
        note = None
        # One line per server that died (keyed by server: the message carries its stderr, which may grow).
        if outcome.gone and tool.server not in self._gone:
            self._gone.add(tool.server)
            note = Notice(f"{outcome.content}; its tools fail from now on.", "warning")
        return _result(call, outcome), note

    def close(self) -> None:
        if self._mcp is not None:
            self._mcp.close()
            self._mcp = None


def _result(call: ToolCall, outcome: Outcome) -> ToolResult:
    return ToolResult(call.id, call.name, outcome.content, outcome.is_error, round(outcome.seconds, 3))


def _mismatch(tool: Tool, arguments: dict[str, Any]) -> str:
    """Why `arguments` do not fit the tool's schema ("" when they do). A local
    model's calls fit by construction; a remote server's may not."""
    import jsonschema

    validator = jsonschema.validators.validator_for(tool.parameters, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator(tool.parameters).iter_errors(arguments))
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"
