"""`chatllm serve`: the local model, its templates and personas as an
OpenAI-compatible HTTP API (the server itself is chatllm/server/)."""

from __future__ import annotations

import sys
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
) -> None:
    """Serve the model over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    Every template and persona is a model name too: model="support" talks to
    the support persona. Sampling options set the server's defaults; a
    request's own values win. Stop with Ctrl-C (exit code 0).
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
    _serve(host, port, options, defaults, api_key)


def _serve(host: str, port: int, options: RunOptions, defaults: dict[str, Any], api_key: str | None) -> None:
    """Listen, load the model, and serve until Ctrl-C."""
    from chatllm.cli import running
    from chatllm.jobs.model_fit import is_tiny
    from chatllm.server import http as server

    config = running.settings()
    # Listen before loading the model: a taken port fails at once, not after a long load.
    http = server.bind(host, port)
    try:
        resolved, engine = running.open_model(options, config)
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
    )
    if not api_key and not server.is_loopback(host):
        sys.stderr.write(
            f"Warning: listening on {host} without --api-key: anyone who can reach this port can use the model.\n"
        )
    names = ", ".join(name for name in http.service.model_ids() if name != resolved.name)
    sys.stderr.write(f"Serving {resolved.name} on {server.base_url(http)} (templates: {names})\n")
    sys.stderr.flush()
    server.run(http)
    sys.stderr.write("Stopped.\n")
