"""Tools the user declares: what a model may call, and nothing else.

A tool comes from a tools file (`--tools FILE`), from a template's `tools:`
list, or from an MCP server (`--mcp`, `mcp_servers:`; tools/mcp_client.py).
A local tool is declared in YAML:

    tools:
      - name: order_status
        description: The status of one order
        parameters: "order_id: the order number, such as NB-51377"   # or a JSON Schema
        command: [python3, orders_tool.py]       # argv; the arguments arrive as JSON on stdin
        safe: true                               # runs without asking (default: ask on a terminal)
        timeout: 10                              # seconds (default 30)

`command` is an argv list, never a shell line. An item that is exactly
`{name}` of a parameter is replaced by that argument's value (one argv item,
whatever it holds); otherwise the arguments reach the command as JSON on its
standard input. Relative paths in a file's commands and servers are relative
to the file that declares them (commands run in that folder).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatllm.errors import ChatLLMError, UsageError
from chatllm.inputs import read_file
from chatllm.jobs.schemas import check_schema, short_schema
from chatllm.tools.limits import DEFAULT_TIMEOUT_S

# OpenAI's rule for a function's name: what every chat template and server accepts.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEYS = {"name", "description", "parameters", "command", "safe", "timeout"}
_ARGUMENT = re.compile(r"^\{([A-Za-z_][\w-]*)\}$")


class ToolError(ChatLLMError):
    """A tools file or an MCP server that cannot be used (one line)."""

    exit_code = 2


@dataclass(frozen=True)
class Tool:
    """One tool a model may call. `command` is set for a local tool, `server`
    (the MCP server's label) for an MCP server's."""

    name: str
    description: str
    parameters: dict[str, Any]
    command: tuple[str, ...] = ()
    server: str = ""
    safe: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    cwd: Path | None = None
    # Where it was declared, for messages ("tools.yaml", "MCP server 'python orders.py'").
    source: str = ""
    argv_arguments: tuple[str, ...] = field(default=(), compare=False)

    def spec(self) -> dict[str, Any]:
        """The tool as OpenAI's API and chat templates describe a function."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class McpServer:
    """An MCP server to start or reach: a command line (run in `cwd`) or an
    http(s):// URL. `safe`: its tools run without asking."""

    spec: str
    safe: bool = False
    cwd: Path | None = None

    def identity(self) -> tuple[str, ...]:
        """What the server is, wherever it was named from: its URL, or its command
        line with each item that names a file as that file's full path (so the
        support persona's own order server, also given as `--mcp`, is one server)."""
        if self.spec.startswith(("http://", "https://")):
            return (self.spec,)
        try:
            argv = shlex.split(self.spec)
        except ValueError:
            return (self.spec,)
        folder = self.cwd or Path.cwd()
        return tuple(str((folder / item).resolve()) if (folder / item).is_file() else item for item in argv)


def distinct_servers(servers: list[McpServer]) -> list[McpServer]:
    """`servers` without a second naming of one server (the first is kept)."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for server in servers:
        if server.identity() not in seen:
            seen.add(server.identity())
            kept.append(server)
    return kept


def load_tools_file(path: Path) -> tuple[list[Tool], list[McpServer]]:
    """The tools and MCP servers a tools file declares (`tools:` and
    `mcp_servers:`, or a bare list of tools). Raises ToolError in one line."""
    import yaml

    path = path.expanduser()
    try:
        document = yaml.safe_load(read_file(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ToolError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    except ChatLLMError as error:
        raise ToolError(f"--tools: {error}") from None
    if isinstance(document, list):
        document = {"tools": document}
    if not isinstance(document, dict) or not set(document) <= {"tools", "mcp_servers"}:
        raise ToolError(f"{path}: a tools file holds 'tools:' (a list of tools) and optionally 'mcp_servers:'")
    tools = parse_tools(document.get("tools") or [], str(path), path.resolve().parent)
    servers = parse_servers(document.get("mcp_servers") or [], str(path), path.resolve().parent)
    return tools, servers


def parse_servers(raw: Any, where: str, folder: Path | None) -> list[McpServer]:
    """MCP servers: each a command line or URL, or a mapping of `server:` and
    `safe: true` (its tools run without asking, such as a read-only lookup)."""
    if isinstance(raw, str | dict):
        raw = [raw]
    wrong = ToolError(
        f"{where}: 'mcp_servers' is a list of command lines or http(s):// URLs (or of 'server:' and 'safe: true')"
    )
    if not isinstance(raw, list):
        raise wrong
    servers = []
    for item in raw:
        if isinstance(item, dict) and set(item) <= {"server", "safe"} and isinstance(item.get("safe", False), bool):
            spec, safe = item.get("server"), item.get("safe", False)
        else:
            spec, safe = item, False
        if not isinstance(spec, str) or not spec.strip():
            raise wrong
        servers.append(McpServer(spec.strip(), safe, folder))
    return servers


def parse_tools(raw: Any, where: str, folder: Path | None) -> list[Tool]:
    """Tools from their YAML form, checked; `folder` is where commands run."""
    if not isinstance(raw, list):
        raise ToolError(f"{where}: 'tools' is a list of tools (name, description, parameters, command)")
    tools = [_tool(item, f"{where}: tool {index + 1}", folder, where) for index, item in enumerate(raw)]
    check_unique(tools)
    return tools


def _tool(item: Any, where: str, folder: Path | None, source: str) -> Tool:
    if not isinstance(item, dict):
        raise ToolError(f"{where} is not a mapping (name, description, parameters, command)")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ToolError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(_KEYS))})")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolError(f"{where}: 'name' must be 1-64 letters, digits, '_' or '-' (got {name!r})")
    where = f"{source}: tool '{name}'"
    description = item.get("description", "")
    if not isinstance(description, str):
        raise ToolError(f"{where}: 'description' must be text")
    parameters = tool_parameters(item.get("parameters"), where)
    command = item.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str | int | float) for a in command):
        raise ToolError(f"{where}: 'command' must be a list of program and arguments, such as [python3, tool.py]")
    argv = tuple(str(a) for a in command)
    named = tuple(m.group(1) for a in argv[1:] if (m := _ARGUMENT.match(a)))
    unknown_args = [n for n in named if n not in parameters.get("properties", {})]
    if unknown_args:
        raise ToolError(f"{where}: the command's '{{{unknown_args[0]}}}' is not one of the tool's parameters")
    safe = item.get("safe", False)
    if not isinstance(safe, bool):
        raise ToolError(f"{where}: 'safe' must be true or false")
    timeout = item.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise ToolError(f"{where}: 'timeout' must be a number of seconds between 0 and 3600")
    return Tool(name, description.strip(), parameters, argv, "", safe, float(timeout), folder, source, named)


def tool_parameters(raw: Any, where: str) -> dict[str, Any]:
    """A tool's parameters as a JSON Schema object: given as one, as the short
    field syntax `--schema` takes, or left out (no parameters)."""
    if raw is None or raw == "":
        return {"type": "object", "properties": {}}
    try:
        schema = short_schema(raw) if isinstance(raw, str) else raw
        check_schema(schema, "'parameters'")
    except UsageError as error:
        raise ToolError(f"{where}: {error}") from None
    if schema.get("type") != "object":
        raise ToolError(f"{where}: 'parameters' must be a JSON Schema of type object (a tool takes named arguments)")
    return schema


def check_unique(tools: list[Tool]) -> None:
    """Two tools of one name would leave which one runs to chance: refused."""
    seen: dict[str, Tool] = {}
    for tool in tools:
        other = seen.get(tool.name)
        if other is not None:
            first, second = other.source or "one", tool.source or "another"
            places = f"in {first}" if first == second else f"in {first} and in {second}"
            raise ToolError(f"two tools are named '{tool.name}' ({places}); rename one")
        seen[tool.name] = tool
