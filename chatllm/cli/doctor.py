"""`chatllm doctor`: what chatllm will run on (build, GPUs, threads) and where
its models are, to paste into a bug report."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from chatllm import __version__


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
        """Show the llama.cpp build, GPU offload support, GPUs and free memory, threads, and the model cache."""
        facts = doctor_facts()
        if as_json:
            typer.echo(json.dumps(facts, indent=2))
            return
        for label, value in _lines(facts):
            typer.echo(f"{label + ':':<20}{value}")


def doctor_facts() -> dict:
    """Everything doctor prints, as plain data (JSON-ready)."""
    from chatllm.config.settings import load_settings, settings_path
    from chatllm.engine.gpu import system_report
    from chatllm.hub.cache import cache_size, cached_models, hub_cache_dir
    from chatllm.hub.environment import hub_endpoint, is_offline

    report = system_report()
    settings = load_settings()

    def device(d) -> dict:
        return {
            "name": d.name,
            "description": d.description,
            "kind": d.kind,
            "free_bytes": d.free_bytes,
            "total_bytes": d.total_bytes,
        }

    return {
        "chatllm": __version__,
        "llama_cpp_python": report.build.version,
        "build": report.build.label,
        "backends": list(report.build.backends),
        "gpu_offload": report.build.gpu_offload,
        "devices": [device(d) for d in report.devices],
        "nvidia_smi_gpus": [device(d) for d in report.nvidia_gpus],
        "cpu_features": report.build.system_info,
        "logical_cpus": report.logical_cpus,
        "usable_cpus": report.usable_cpus,
        "threads_setting": settings.threads,
        "gpu_layers_setting": settings.gpu_layers or "auto",
        "hub_cache": str(hub_cache_dir()),
        "hub_cache_bytes": cache_size(),
        "models_cached": len(cached_models()),
        "hub_endpoint": hub_endpoint(),
        "offline": is_offline(),
        "settings_file": str(settings_path()),
        "default_model": settings.default_model,
        "hint": report.hint,
    }


def _lines(facts: dict) -> list[tuple[str, str]]:
    from chatllm.hub.download import format_bytes

    def memory(d: dict) -> str:
        if d["total_bytes"] is None:
            return ""
        return f" ({format_bytes(d['free_bytes'] or 0)} free of {format_bytes(d['total_bytes'])})"

    offload = "yes" if facts["gpu_offload"] else "no (this build runs models on the CPU only)"
    lines = [
        ("chatllm", facts["chatllm"]),
        ("llama-cpp-python", facts["llama_cpp_python"]),
        ("llama.cpp build", f"{facts['build']} (backends: {', '.join(facts['backends']) or 'unknown'})"),
        ("GPU offload", offload),
    ]
    for d in facts["devices"]:
        lines.append(("device", f"{d['name']}: {d['description']} [{d['kind']}]{memory(d)}"))
    for d in facts["nvidia_smi_gpus"]:
        lines.append(("nvidia-smi", f"{d['description']}{memory(d)}"))
    threads = f"{facts['usable_cpus']} usable of {facts['logical_cpus']} logical CPUs"
    threads += f"; threads setting: {facts['threads_setting'] or 'default'}"
    lines += [
        ("features", _compact_system_info(facts["cpu_features"])),
        ("threads", threads),
        ("--gpu-layers", str(facts["gpu_layers_setting"])),
        ("hub cache", f"{facts['hub_cache']} ({format_bytes(facts['hub_cache_bytes'])})"),
        ("models cached", f"{facts['models_cached']} (see `chatllm models list`)"),
        ("hub endpoint", facts["hub_endpoint"] + (" (offline: HF_HUB_OFFLINE is set)" if facts["offline"] else "")),
        ("settings", facts["settings_file"]),
        ("default model", facts["default_model"] or "not set"),
    ]
    if facts["hint"]:
        lines.append(("hint", facts["hint"]))
    return lines


def _compact_system_info(text: str) -> str:
    """`CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | CUDA : ARCHS = 890 |` →
    `CPU: SSE3 AVX; CUDA: ARCHS=890` (features that are off are left out)."""
    groups: list[str] = []
    for item in (part.strip() for part in text.split("|")):
        if " : " in item:
            backend, item = (p.strip() for p in item.split(" : ", 1))
            groups.append(f"{backend}:")
        name, _, value = (p.strip() for p in item.partition("="))
        if not name or value == "0" or not groups:
            continue
        groups[-1] += f" {name}" if value in ("1", "") else f" {name}={value}"
    return "; ".join(groups) or text
