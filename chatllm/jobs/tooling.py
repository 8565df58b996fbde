"""The tools a job's replies may call (issue 23), chat's and run's: what the
user declared (--tools, --mcp, or `commands.chat.mcp` in the config file)
and what the template brings (`tools:`, `mcp_servers:`), opened once when the
job is planned (a tools file or an MCP server that cannot be used fails
before the model is asked anything) and closed with the run; how each call is
approved (--yes, a tool declared `safe: true`, the terminal's y/N); and the
settings a reply offers them with (reply/tool_loop.py runs them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from chatllm.engine.base import Engine, GenerationParams
from chatllm.errors import UsageError
from chatllm.jobs.job import Setup
from chatllm.templates import Template
from chatllm.tools.declarations import McpServer, distinct_servers
from chatllm.tools.limits import DEFAULT_TOOL_LIMIT
from chatllm.tools.toolbox import Approval, Toolbox

CHOICES = ("auto", "required", "none")


def open_tools(setup: Setup, template: Template, template_tools: bool = True) -> Toolbox | None:
    """The job's tools, started (MCP servers) and closed with the run
    (`setup.closing`); None when it has none or --tool-choice none.
    `template_tools`: the template's own tools belong to what it answers from
    (the support persona's demo order lookup), left out when --kb replaces
    its knowledge."""
    values = setup.values
    choice = values.get("tool_choice") or "auto"
    if choice == "none":
        return None
    files = [Path(path) for path in values.get("tools") or []]
    servers = [McpServer(spec) for spec in values.get("mcp") or []]
    own = template.tools if template_tools else ()
    own_servers = template.mcp_servers if template_tools else ()
    if not (files or servers or own or own_servers):
        if choice != "auto":
            raise UsageError("--tool-choice needs tools to choose from: give --tools FILE or --mcp SERVER")
        return None
    limit = values.get("tool_limit")
    approval = Approval(yes=bool(values.get("yes")), ask=setup.ask_tool)
    toolbox = Toolbox.open(
        own, files, distinct_servers([*own_servers, *servers]), approval, DEFAULT_TOOL_LIMIT if limit is None else limit
    )
    setup.closing.callback(toolbox.close)
    if choice not in CHOICES and choice not in toolbox.tools:
        raise UsageError(f"--tool-choice {choice}: there is no such tool (the tools: {', '.join(toolbox.tools)})")
    return toolbox


def offering(params: GenerationParams, toolbox: Toolbox | None, choice: str | None) -> GenerationParams:
    """`params` that offer `toolbox`'s tools to the model."""
    if toolbox is None:
        return params
    return replace(params, tools=toolbox.specs(), tool_choice=choice or "auto")


def check_tools(toolbox: Toolbox | None, schema: dict | None, engine: Engine | None = None) -> None:
    """Tools go with free text on a model that can call them; UsageError otherwise."""
    if toolbox is None:
        return
    if schema is not None:
        raise UsageError(
            "--schema and tools do not go together: a reply is either JSON of the schema or may call tools"
        )
    if engine is not None and not engine.supports_tools:
        raise UsageError(f"{engine.model_name} cannot call tools")
