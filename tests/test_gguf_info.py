"""GGUF headers, `--gpu-layers auto` and the catalog: no network, no model loading."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chatllm.engine import gpu
from chatllm.errors import ConfigError, ModelError, UsageError
from chatllm.hub import catalog
from chatllm.hub.files import QUANT_PREFERENCE
from chatllm.hub.gguf_info import format_parameter_count, read_gguf_info
from tests.support.gguf_files import CHAT_TEMPLATE, write_tiny_gguf

# GGUF headers -----------------------------------------------------------------


def test_tiny_gguf_facts_match_the_gguf_package(tmp_path: Path) -> None:
    import gguf

    path = write_tiny_gguf(tmp_path / "t.gguf", "Q4_K_M", seed=7, elements=1000)
    info = read_gguf_info(path)
    assert (info.architecture, info.name, info.license) == ("llama", "Tiny Test Model", "mit")
    assert (info.context_length, info.block_count, info.head_count, info.head_count_kv) == (2048, 4, 4, 2)
    assert info.file_type == "Q4_K_M" and info.chat_template == CHAT_TEMPLATE
    reader = gguf.GGUFReader(str(path))
    assert info.parameter_count == sum(int(t.n_elements) for t in reader.tensors) == 1000


def test_embedded_model_header_is_read_quickly(embedded_model: Path) -> None:
    started = time.perf_counter()
    info = read_gguf_info(embedded_model)
    elapsed = time.perf_counter() - started
    assert (info.architecture, info.context_length, info.block_count, info.file_type) == ("llama", 8192, 30, "Q4_1")
    assert info.parameter_count == 134_515_008 and format_parameter_count(info.parameter_count) == "135M"
    assert "tokenizer.ggml.tokens" not in info.metadata  # the 49k-entry vocabulary is skipped, not parsed
    assert elapsed < 0.25


@pytest.mark.parametrize(
    ("count", "text"), [(134_515_008, "135M"), (1_543_714_304, "1.5B"), (7_615_616_512, "7.6B"), (900, "900")]
)
def test_parameter_counts_read_like_model_names(count: int, text: str) -> None:
    assert format_parameter_count(count) == text


def test_broken_files_are_model_errors(tmp_path: Path) -> None:
    good = write_tiny_gguf(tmp_path / "good.gguf", "Q8_0", seed=1, elements=10)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:40])
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    shard = write_tiny_gguf(tmp_path / "m-00001-of-00002.gguf", "F16", seed=1, elements=10, split=(1, 2))
    for path, message in (
        (truncated, "truncated"),
        (text, "not a GGUF"),
        (shard, "missing m-00002-of-00002.gguf"),
        (tmp_path / "none.gguf", "cannot read"),
    ):
        with pytest.raises(ModelError, match=message):
            read_gguf_info(path)


# --gpu-layers -------------------------------------------------------------------


def test_explicit_gpu_layers_are_used_as_given(tmp_path: Path) -> None:
    model = tmp_path / "unused.gguf"
    assert gpu.choose_gpu_layers(model, 4096, "12") == 12
    assert gpu.choose_gpu_layers(model, 4096, "-1") == -1
    assert gpu.choose_gpu_layers(model, 4096, "0") == 0
    with pytest.raises(UsageError):
        gpu.choose_gpu_layers(model, 4096, "many")


def test_auto_is_cpu_only_without_gpu_offload(embedded_model: Path, monkeypatch) -> None:
    monkeypatch.setattr(gpu, "llama_build", lambda: gpu.LlamaBuild("0", ("CPU",), False, ""))
    assert gpu.choose_gpu_layers(embedded_model, 4096, "auto") == 0
    assert gpu.choose_gpu_layers(embedded_model, 4096, None) == 0


def fake_gpu(monkeypatch, free_bytes: int | None) -> None:
    monkeypatch.setattr(gpu, "llama_build", lambda: gpu.LlamaBuild("0", ("CUDA", "CPU"), True, ""))
    devices = [
        gpu.Device("CPU", "cpu", "CPU", 10**10, 10**10),
        gpu.Device("CUDA0", "Test GPU", "GPU", free_bytes, free_bytes),
    ]
    monkeypatch.setattr(gpu, "llama_devices", lambda: devices)


def test_auto_offloads_what_fits_in_free_gpu_memory(embedded_model: Path, monkeypatch) -> None:
    # SmolLM2-135M: 98 MB over 30 layers (+1 for the output), 3 MB of KV cache per layer at 4096 tokens.
    assert gpu.kv_cache_bytes_per_layer(read_gguf_info(embedded_model), 4096) == 4096 * 3 * (64 + 64) * 2
    fake_gpu(monkeypatch, 8 * 1024**3)
    assert gpu.choose_gpu_layers(embedded_model, 4096, "auto") == -1  # everything fits
    fake_gpu(monkeypatch, 900 * 1024**2)
    partial = gpu.choose_gpu_layers(embedded_model, 4096, "auto")
    assert 0 < partial < 30
    assert gpu.choose_gpu_layers(embedded_model, 32768, "auto") < partial  # a bigger KV cache leaves room for fewer
    fake_gpu(monkeypatch, 256 * 1024**2)
    assert gpu.choose_gpu_layers(embedded_model, 4096, "auto") == 0
    fake_gpu(monkeypatch, None)  # memory not reported: let llama.cpp offload everything
    assert gpu.choose_gpu_layers(embedded_model, 4096, "auto") == -1


def test_this_machine_is_described(monkeypatch) -> None:
    report = gpu.system_report()
    assert report.build.version and report.build.label
    assert any(d.kind == "CPU" for d in report.devices) and report.usable_cpus >= 1
    nvidia = gpu.Device("nvidia0", "Some GPU", "GPU", 1, 2)
    cpu_build = gpu.LlamaBuild("0", ("CPU",), False, "")
    hinted = gpu.SystemReport(cpu_build, (), (nvidia,), 4, 4)
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in hinted.hint


# Catalog ----------------------------------------------------------------------


def test_packaged_catalog_is_well_formed(hub_env) -> None:
    entries = catalog.catalog_entries()
    assert {
        "qwen2.5:0.5b",
        "qwen2.5:1.5b",
        "qwen2.5:3b",
        "qwen2.5:7b",
        "llama3.2:1b",
        "llama3.2:3b",
        "gemma3:1b",
        "gemma3:4b",
        "phi-4-mini",
        "mistral:7b",
        "smollm2:135m",
        "smollm2:360m",
        "smollm2:1.7b",
    } <= set(entries)
    for entry in entries.values():
        assert entry.repo.count("/") == 1 and entry.repo.endswith("-GGUF"), entry
        assert entry.quant in QUANT_PREFERENCE and entry.description and entry.size_gb, entry
    assert catalog.alias_names() == sorted(entries)
    assert catalog.alias_for("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "Q4_K_M") == "qwen2.5:1.5b"


def test_user_catalog_adds_and_overrides_entries(hub_env) -> None:
    path = catalog.user_catalog_path()
    path.parent.mkdir(parents=True)
    path.write_text(
        "qwen2.5:1.5b:\n  repo: me/Qwen-GGUF\n  quant: q8_0\nmine:\n  repo: me/mine-GGUF\n  file: mine.gguf\n"
    )
    assert catalog.find_alias("QWEN2.5:1.5B").hub_reference == "me/Qwen-GGUF:Q8_0"
    assert catalog.find_alias("mine").hub_reference == "me/mine-GGUF/mine.gguf"
    path.write_text("broken:\n  repository: x/y\n")
    with pytest.raises(ConfigError, match="'broken' needs at least 'repo: org/name'"):
        catalog.catalog_entries()
    assert "qwen2.5:1.5b" in catalog.alias_names()  # completion never fails
