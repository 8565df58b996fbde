"""OpenAI-compatible servers as fixtures, for every test module that talks to one.

* `served`: chatllm's server core in this process, over a RecordingEngine.
* `chatllm_serve`: `chatllm serve` on the embedded model, as a subprocess.
* `llama_server`: llama-cpp-python's `llama_cpp.server` on the embedded model.

A pytest plugin, loaded for every test module by `pytest_plugins` in
tests/conftest.py. The two real servers are module-scoped: each test module
that names one starts its own (loading the model once per module) and stops
it after the module's last test.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import SimpleNamespace

import openai
import pytest

from chatllm.engine.base import GenerationParams
from chatllm.engine.fake import FakeEngine
from chatllm.server import http as server
from tests.support.cli import chatllm_command, cli_env
from tests.support.openai_servers import free_port, start_process, stop_process

# ---- chatllm's server core, in-process ------------------------------------------


class RecordingEngine(FakeEngine):
    """The fake engine, also remembering the GenerationParams of each call."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.params: list[GenerationParams] = []
        self.closed = False

    def stream(self, messages, params):
        self.params.append(params)
        return super().stream(messages, params)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def served():
    """The server core on a free port, over a RecordingEngine, in this process."""
    engine = RecordingEngine()
    http = server.bind("127.0.0.1", 0)
    http.service = server.ChatService(engine, "fake.gguf", defaults={"seed": 11}, aliases=("fake",))
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = server.base_url(http)
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    yield SimpleNamespace(url=url, engine=engine, service=http.service, client=client)
    client.close()
    http.shutdown()
    http.server_close()


# ---- `chatllm serve` on the embedded model ---------------------------------------


def serve_command(port: int) -> list[str]:
    return chatllm_command("serve", "--host", "127.0.0.1", "--port", str(port), "-m", "embedded")


@pytest.fixture(scope="module")
def chatllm_serve(embedded_model, tmp_path_factory):
    # Module-scoped, so it sets up its own folders (the autouse isolation is per test).
    home = tmp_path_factory.mktemp("serve-home")
    env = {key: value for key, value in cli_env().items() if not key.startswith("CHATLLM_")}
    env.update({f"XDG_{name.upper()}_HOME": str(home / name) for name in ("config", "data", "cache")})
    port = free_port()
    process = start_process(serve_command(port), port, home / "serve.log", env=env)
    process.extra["client"] = openai.OpenAI(base_url=process.url, api_key="x", max_retries=0, timeout=240)
    yield process
    stop_process(process)


# ---- llama-cpp-python's llama_cpp.server on the embedded model -----------------------

SERVER_EXTRAS = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
# llama_cpp.server cannot turn weight repacking off; in VMs where the AMX kernels
# it enables crash, chatllm's own engine turns them off, and so does this launcher.
LAUNCHER = """
import runpy, sys
import llama_cpp.llama_cpp as native
from chatllm.engine.llama import weight_repacking_enabled
if not weight_repacking_enabled():
    default_params = native.llama_model_default_params
    def model_params():
        params = default_params()
        params.use_extra_bufts = False
        return params
    native.llama_model_default_params = model_params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def llama_server(embedded_model, tmp_path_factory):
    missing = [name for name in SERVER_EXTRAS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"llama_cpp.server needs {', '.join(missing)}: pip install fastapi uvicorn sse-starlette starlette-context pydantic-settings"
        )
    port = free_port()
    command = [
        sys.executable,
        "-c",
        LAUNCHER,
        "--model",
        str(embedded_model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--verbose",
        "False",
    ]
    process = start_process(command, port, tmp_path_factory.mktemp("llama-server") / "server.log")
    yield process
    stop_process(process)
