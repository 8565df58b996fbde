"""Fixtures for Hub tests: isolated cache/config folders, tiny real GGUF files,
and the local Hub stand-in (tests/hub_server.py) with HF_ENDPOINT pointing at it.

Loaded for every test module as a plugin (`pytest_plugins` in tests/conftest.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.hub_server import HubServer

TINY_REPO = "test-org/Tiny-GGUF"
NO_GGUF_REPO = "test-org/no-gguf"
SMOLLM_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

# general.file_type numbers (llama.cpp's llama_ftype)
FILE_TYPE = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17}


def write_tiny_gguf(
    path: Path, file_type: str, *, seed: int, elements: int = 128 * 1024, split: tuple[int, int] | None = None
) -> Path:
    """A valid GGUF with llama-style metadata and one float32 tensor of
    `elements` values (512 KB by default): real enough for metadata readers and
    big enough for downloads to take several chunks."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Tiny Test Model")
    writer.add_license("mit")
    writer.add_context_length(2048)
    writer.add_block_count(4)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(FILE_TYPE[file_type])
    writer.add_chat_template(CHAT_TEMPLATE)
    if split:
        writer.add_uint16("split.no", split[0] - 1)
        writer.add_uint16("split.count", split[1])
        writer.add_int32("split.tensors.count", split[1])
    data = np.random.default_rng(seed).standard_normal(elements).astype(np.float32)
    writer.add_tensor(f"blk.{seed}.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | bytes]:
    """Repo path → content of TINY_REPO: two single-file quantizations, a
    two-shard F16, a vision projector (not a model) and a README."""
    folder = tmp_path_factory.mktemp("gguf")
    return {
        "Tiny-Q4_K_M.gguf": write_tiny_gguf(folder / "Tiny-Q4_K_M.gguf", "Q4_K_M", seed=1),
        "Tiny-Q8_0.gguf": write_tiny_gguf(folder / "Tiny-Q8_0.gguf", "Q8_0", seed=2),
        "F16/Tiny-F16-00001-of-00002.gguf": write_tiny_gguf(
            folder / "Tiny-F16-00001-of-00002.gguf", "F16", seed=3, split=(1, 2)
        ),
        "F16/Tiny-F16-00002-of-00002.gguf": write_tiny_gguf(
            folder / "Tiny-F16-00002-of-00002.gguf", "F16", seed=4, split=(2, 2)
        ),
        "mmproj-Tiny-F16.gguf": write_tiny_gguf(folder / "mmproj-Tiny-F16.gguf", "F16", seed=5, elements=16),
        "README.md": b"# Tiny\nA test model.\n",
    }


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty HF cache and chatllm folders under tmp_path; no offline flag, no
    token, no configured model; download retries without pauses. Returns the
    HF_HOME folder."""
    from chatllm.hub import download as hub_download

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    for variable in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "CHATLLM_MODEL",
        "HF_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    for kind in ("CONFIG", "DATA", "CACHE"):
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path / kind.lower()))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub reads these once, at import: keep its user-agent code from
    # fetching a registry from huggingface.co, and its offline switch off.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_download, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    return hf_home


@pytest.fixture
def hub_server(hub_env: Path, tiny_repo_files: dict, monkeypatch: pytest.MonkeyPatch):
    """The Hub stand-in serving TINY_REPO and NO_GGUF_REPO, with HF_ENDPOINT set."""
    server = HubServer().start()
    server.add_repo(TINY_REPO, tiny_repo_files)
    server.add_repo(NO_GGUF_REPO, {"README.md": b"no models here\n", "model.safetensors": b"\0" * 64})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current (monkeypatched) environment for a `chatllm` subprocess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.pop("COLUMNS", None)
    return env


def chatllm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatllm", *args]
