"""Fixtures for Hub tests: isolated cache/config folders, tiny real GGUF files,
and the local Hub stand-in (tests/support/hub_server.py) with HF_ENDPOINT
pointing at it.

A pytest plugin, loaded for every test module by `pytest_plugins` in
tests/conftest.py. The repo names are here too, for tests to name what the
stand-in serves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gguf_files import write_tiny_gguf
from tests.support.hub_server import HubServer

TINY_REPO = "test-org/Tiny-GGUF"
NO_GGUF_REPO = "test-org/no-gguf"
SMOLLM_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"


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
