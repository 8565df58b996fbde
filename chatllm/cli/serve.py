"""`chatllm serve`: the local model, its templates and personas as an
OpenAI-compatible HTTP API (the server itself is chatllm/server/)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

# The model options, declared once in jobs/options.py; the output options (--json,
# --dry-run, --stats, --log) mean nothing for a server, so serve leaves them out.
from chatllm.cli.options import (
    CtxOption,
    GpuLayersOption,
    MaxTokensOption,
    ModelOption,
    PullOption,
    ReasoningBudgetOption,
    RepetitionOption,
    RunOptions,
    SeedOption,
    TemperatureOption,
    ThinkOption,
    VerboseOption,
)
from chatllm.server.capacity import DEFAULT_PARALLEL, DEFAULT_QUEUE, Capacity
from chatllm.server.connections import Limits

LIMITS = Limits()  # the defaults, declared once in server/connections.py

HostOption = Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")]
PortOption = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0 picks a free one).")]
ApiKeyOption = Annotated[
    Optional[str],
    typer.Option(
        "--api-key",
        envvar="CHATLLM_API_KEY",
        show_envvar=True,
        show_default=False,
        help="Require 'Authorization: Bearer KEY' on every endpoint but /health.",
    ),
]
AllowedHostsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--allowed-hosts",
        help="Host names clients may reach the server by, besides localhost and its IP addresses (repeat or separate with commas; '*' for any). Guards against DNS rebinding.",
        show_default=False,
    ),
]
AllowedOriginsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--allowed-origins",
        help="Web pages (origins such as http://localhost:3000) that may call the API from a browser (repeat or separate with commas; '*' for any). Other pages get 403.",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds a client may take to send a whole request.")
]
ConnIdleOption = Annotated[
    float,
    typer.Option(
        "--conn-idle",
        min=1,
        help="Seconds a connection may stay silent (before a request, or not reading its reply) before it is closed.",
    ),
]
ParallelOption = Annotated[
    int,
    typer.Option(
        "--parallel",
        min=1,
        max=64,
        help="Requests generated at once, in one batch (each gets --ctx tokens of context).",
    ),
]
QueueOption = Annotated[
    int,
    typer.Option(
        "--queue", min=0, help="Requests that may wait for a free slot; past them a request gets 503 with Retry-After."
    ),
]
MaxConnectionsOption = Annotated[
    int, typer.Option("--max-connections", min=1, help="Connections served at once; one more gets 503 at once.")
]


@dataclass(frozen=True)
class Listening:
    """Where and for whom the server listens."""

    host: str
    port: int
    api_key: str | None
    allowed_hosts: list[str] | None
    allowed_origins: list[str] | None
    limits: Limits
    parallel: int = DEFAULT_PARALLEL
    queue: int = DEFAULT_QUEUE


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8080,
    model: ModelOption = None,
    ctx: CtxOption = None,
    gpu_layers: GpuLayersOption = None,
    pull: PullOption = False,
    verbose: VerboseOption = False,
    temperature: TemperatureOption = None,
    max_tokens: MaxTokensOption = None,
    seed: SeedOption = None,
    repetition: RepetitionOption = None,
    think: ThinkOption = None,
    reasoning_budget: ReasoningBudgetOption = None,
    api_key: ApiKeyOption = None,
    allowed_hosts: AllowedHostsOption = None,
    allowed_origins: AllowedOriginsOption = None,
    timeout: TimeoutOption = LIMITS.timeout_s,
    conn_idle: ConnIdleOption = LIMITS.conn_idle_s,
    max_connections: MaxConnectionsOption = LIMITS.max_connections,
    parallel: ParallelOption = DEFAULT_PARALLEL,
    queue: QueueOption = DEFAULT_QUEUE,
) -> None:
    """Serve the model over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    Every template and persona is a model name too: model="support" talks to
    the support persona. Sampling options set the server's defaults; a
    request's own values win, except that --max-tokens is also the most a
    request may ask for. --parallel requests are generated together;
    /metrics has Prometheus metrics. Stop with Ctrl-C (exit code 0).
    """
    options = RunOptions(model=model, ctx=ctx, gpu_layers=gpu_layers, pull=pull, verbose=verbose, seed=seed)
    defaults = {
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
        "repetition": repetition.value if repetition else None,
        "think": think,
        "reasoning_budget": reasoning_budget,
    }
    limits = Limits(timeout_s=timeout, conn_idle_s=conn_idle, max_connections=max_connections)
    listening = Listening(host, port, api_key, allowed_hosts, allowed_origins, limits, parallel, queue)
    _serve(listening, options, defaults)


def _serve(listening: Listening, options: RunOptions, defaults: dict[str, Any]) -> None:
    """Listen, load the model, and serve until Ctrl-C."""
    from chatllm.cli import running
    from chatllm.jobs.model_fit import is_tiny
    from chatllm.server import http as server

    config = running.settings()
    host, api_key = listening.host, listening.api_key
    access = server.Access.from_options(listening.allowed_hosts, listening.allowed_origins, listen_host=host)
    # Listen before loading the model: a taken port fails at once, not after a long load.
    http = server.bind(host, listening.port, access, listening.limits)
    try:
        resolved, engine = running.open_model(options, config, sequences=listening.parallel)
    except BaseException:
        http.server_close()
        raise
    http.service = server.ChatService(
        engine,
        resolved.name,
        defaults,
        aliases=(resolved.reference,),
        tiny_model=is_tiny(resolved.path),
        api_key=api_key,
        concurrent=True,
        capacity=Capacity(listening.parallel, listening.queue),
    )
    if not api_key and not server.is_loopback(host):
        sys.stderr.write(
            f"Warning: listening on {host} without --api-key: anyone who can reach this port can use the model.\n"
        )
    if not server.is_loopback(host) and access.listens_on_address() and not access.allowed_hosts:
        sys.stderr.write(
            "Note: clients must name this server by localhost or an IP address; to let them use a host name,"
            " add it with --allowed-hosts NAME (DNS-rebinding protection).\n"
        )
    names = ", ".join(name for name in http.service.model_ids() if name != resolved.name)
    sys.stderr.write(f"Serving {resolved.name} on {server.base_url(http)} (templates: {names})\n")
    sys.stderr.flush()
    server.run(http)
    sys.stderr.write("Stopped.\n")
