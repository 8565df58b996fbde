"""`chatllm serve`: the local model, its templates and personas as an
OpenAI-compatible HTTP API (the server itself is chatllm/server/)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

# The model options, declared once in options.py; the output options (--json,
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


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Annotated[
            str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")
        ] = "127.0.0.1",
        port: Annotated[
            int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0 picks a free one).")
        ] = 8080,
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
        parallel: Annotated[
            int,
            typer.Option(
                "--parallel",
                min=1,
                max=64,
                help="Requests generated at once, in one batch (each gets --ctx tokens of context).",
            ),
        ] = DEFAULT_PARALLEL,
        queue: Annotated[
            int,
            typer.Option(
                "--queue",
                min=0,
                help="Requests that may wait for a free slot; past them a request gets 503 with Retry-After.",
            ),
        ] = DEFAULT_QUEUE,
        api_key: Annotated[
            Optional[str],
            typer.Option(
                "--api-key",
                envvar="CHATLLM_API_KEY",
                show_envvar=True,
                show_default=False,
                help="Require 'Authorization: Bearer KEY' on every endpoint but /health.",
            ),
        ] = None,
    ) -> None:
        """Serve the model over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

        Every template and persona is a model name too: model="support" talks to
        the support persona. Sampling options set the server's defaults; a
        request's own values win. --parallel requests are generated together;
        /metrics has Prometheus metrics. Stop with Ctrl-C (exit code 0).
        """
        from chatllm.cli import running
        from chatllm.server import http as server

        options = RunOptions(
            model=model,
            ctx=ctx,
            gpu_layers=gpu_layers,
            pull=pull,
            verbose=verbose,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
        )
        config = running.settings()
        # Listen before loading the model: a taken port fails at once, not after a long load.
        http = server.bind(host, port)
        try:
            resolved, engine = running.open_model(options, config, sequences=parallel)
        except BaseException:
            http.server_close()
            raise
        defaults = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
            "repetition": repetition.value if repetition else None,
            "think": think,
            "reasoning_budget": reasoning_budget,
        }
        from chatllm.jobs.model_fit import is_tiny

        http.service = server.ChatService(
            engine,
            resolved.name,
            defaults,
            aliases=(resolved.reference,),
            tiny_model=is_tiny(resolved.path),
            api_key=api_key,
            concurrent=True,
            capacity=Capacity(parallel, queue),
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
