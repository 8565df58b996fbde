"""`chatllm models …` and `chatllm doctor` as a user runs them: CliRunner for
most, real subprocesses for `pull` and the end-to-end run, all against the
local Hub stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatllm.cli.app import app
from chatllm.errors import ConfigError, ModelError, UsageError
from chatllm.hub import resolve as hub
from tests.support.cli import run_chatllm
from tests.support.hub_fixtures import SMOLLM_REPO, TINY_REPO

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=True)


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture
def user_catalog(hub_env: Path) -> Path:
    """A user catalog naming the test repo, so aliases work against the stand-in."""
    from chatllm.hub.catalog import user_catalog_path

    path = user_catalog_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"tiny:8bit:\n  repo: {TINY_REPO}\n  quant: Q8_0\n  size_gb: 0.0005\n  description: The test model.\n"
    )
    return path


# pull ---------------------------------------------------------------------------


def test_pull_in_a_subprocess_prints_only_the_path_on_stdout(hub_server, tiny_repo_files) -> None:
    result = run_chatllm("models", "pull", f"{TINY_REPO}:Q8_0", timeout=120)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    path = Path(stdout.strip())
    assert stdout.count("\n") == 1 and path.name == "Tiny-Q8_0.gguf"
    assert path.read_bytes() == tiny_repo_files["Tiny-Q8_0.gguf"].read_bytes()
    assert "Downloading Tiny-Q8_0.gguf (524.9 KB)" in stderr


def test_pull_errors_are_one_line(hub_server) -> None:
    result = run_chatllm("models", "pull", f"{TINY_REPO}:Q3_K_S", timeout=120)
    assert result.returncode == 1 and result.stdout == b""
    assert (
        result.stderr.decode() == f"Error: {TINY_REPO} has no Q3_K_S file; available quantizations: Q4_K_M, Q8_0, F16\n"
    )


def test_pull_with_quant_option_and_up_to_date_message(hub_server) -> None:
    assert ok("models", "pull", TINY_REPO, "--quant", "q8_0").strip().endswith("Tiny-Q8_0.gguf")
    again = invoke("models", "pull", TINY_REPO, "--quant", "Q8_0")
    assert again.exit_code == 0 and f"{TINY_REPO}:Q8_0 is up to date" in again.stderr


def test_pull_by_alias(hub_server, user_catalog) -> None:
    assert ok("models", "pull", "tiny:8bit").strip().endswith("Tiny-Q8_0.gguf")


# list / show ----------------------------------------------------------------------


def test_list_shows_downloaded_models_with_gguf_facts(hub_server, user_catalog) -> None:
    hub.pull_model(TINY_REPO)
    hub.pull_model("tiny:8bit")
    lines = ok("models", "list").splitlines()
    assert lines[0].split() == ["MODEL", "REPO", "FILE", "QUANT", "SIZE", "CONTEXT", "PARAMS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[f"{TINY_REPO}:Q4_K_M"] == [
        f"{TINY_REPO}:Q4_K_M",
        TINY_REPO,
        "Tiny-Q4_K_M.gguf",
        "Q4_K_M",
        "524.9",
        "KB",
        "2,048",
        "131K",
    ]
    assert rows["tiny:8bit"][1:4] == [TINY_REPO, "Tiny-Q8_0.gguf", "Q8_0"]


def test_list_json(hub_server) -> None:
    hub.pull_model(f"{TINY_REPO}:F16")
    rows = [row for row in json.loads(ok("models", "list", "--json")) if row["repo"]]
    assert rows == [
        {
            "reference": f"{TINY_REPO}:F16",
            "alias": None,
            "repo": TINY_REPO,
            "file": "F16/Tiny-F16-00001-of-00002.gguf",
            "path": rows[0]["path"],
            "quantization": "F16",
            "size_bytes": rows[0]["size_bytes"],
            "context_length": 2048,
            "parameters": 2 * 128 * 1024,
            "architecture": "llama",
        }
    ]
    assert rows[0]["size_bytes"] > 2 * 512 * 1024


def test_show_prints_header_facts_and_the_chat_template(hub_server) -> None:
    hub.pull_model(TINY_REPO)
    output = ok("models", "show", TINY_REPO)
    assert "architecture:  llama" in output
    assert "context:       2,048 tokens" in output
    assert "quantization:  Q4_K_M" in output
    assert "license:       mit" in output
    assert "chat template:\n  {% for m in messages %}" in output
    facts = json.loads(ok("models", "show", TINY_REPO, "--json"))
    assert facts["layers"] == 4 and facts["chat_template"].startswith("{% for m")


def test_show_a_model_that_is_not_downloaded(hub_server) -> None:
    result = invoke("models", "show", f"{TINY_REPO}:Q8_0")
    assert isinstance(result.exception, ModelError)
    assert f"run `chatllm models pull {TINY_REPO}:Q8_0`" in str(result.exception)
    assert hub_server.requests == []


# rm ---------------------------------------------------------------------------------


def test_rm_asks_unless_yes(hub_server) -> None:
    path = hub.pull_model(TINY_REPO).model.path
    refused = invoke("models", "rm", TINY_REPO)
    assert isinstance(refused.exception, UsageError) and "add --yes" in str(refused.exception)
    assert path.exists()
    result = invoke("models", "rm", f"{TINY_REPO}:Q4_K_M", "--yes")
    assert result.exit_code == 0 and "Deleted test-org/Tiny-GGUF/Tiny-Q4_K_M.gguf" in result.stderr
    assert not path.exists() and not path.resolve().exists()


def test_rm_bare_repo_removes_every_quantization_and_the_folder(hub_server) -> None:
    from chatllm.hub.cache import cached_models, repo_folder

    hub.pull_model(TINY_REPO)
    hub.pull_model(f"{TINY_REPO}:F16")
    ok("models", "rm", TINY_REPO, "--yes")
    assert cached_models() == [] and not repo_folder(TINY_REPO).exists()


def test_rm_keeps_other_quantizations(hub_server) -> None:
    hub.pull_model(TINY_REPO)
    kept = hub.pull_model(f"{TINY_REPO}:Q8_0").model.path
    ok("models", "rm", f"{TINY_REPO}:Q4_K_M", "--yes")
    assert kept.read_bytes() and [
        row.split()[0] for row in ok("models", "list").splitlines()[1:] if TINY_REPO in row
    ] == [f"{TINY_REPO}:Q8_0"]


def test_rm_on_a_terminal_confirms(hub_server, monkeypatch) -> None:
    from chatllm.cli import models_cmd as models

    path = hub.pull_model(TINY_REPO).model.path
    questions = []
    monkeypatch.setattr(models, "can_ask", lambda: True)
    monkeypatch.setattr(models, "confirm", lambda question, default: questions.append(question) or default)
    result = invoke("models", "rm", TINY_REPO)
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert questions == [f"Delete {TINY_REPO}/Tiny-Q4_K_M.gguf (524.9 KB)?"] and path.exists()
    monkeypatch.setattr(models, "confirm", lambda question, default: True)
    assert invoke("models", "rm", TINY_REPO).exit_code == 0 and not path.exists()


# default ----------------------------------------------------------------------------


def test_default_writes_the_setting_and_keeps_the_rest_of_the_file(hub_env) -> None:
    from chatllm.config.settings import load_settings, settings_path

    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("# my settings\ntheme: dracula\ndefault_model: old/model\nctx: 2048\n")
    result = invoke("models", "default", "qwen2.5:1.5b")
    assert result.exit_code == 0, result.output
    assert path.read_text() == "# my settings\ntheme: dracula\ndefault_model: qwen2.5:1.5b\nctx: 2048\n"
    assert load_settings().default_model == "qwen2.5:1.5b"
    assert ok("models", "default").strip() == "qwen2.5:1.5b"


def test_default_creates_the_file_and_checks_the_reference(hub_env) -> None:
    from chatllm.config.settings import settings_path

    ok("models", "default", f"hf:{TINY_REPO}:Q8_0")
    assert settings_path().read_text() == f"default_model: hf:{TINY_REPO}:Q8_0\n"
    assert isinstance(invoke("models", "default", "not a model").exception, ModelError)
    settings_path().write_text("ctx: [broken\n")
    assert isinstance(invoke("models", "default", "embedded").exception, ConfigError)


# catalog / doctor ---------------------------------------------------------------------


def test_catalog_lists_aliases_and_marks_pulled_ones(hub_server, user_catalog) -> None:
    hub.pull_model("tiny:8bit")
    lines = ok("models", "catalog").splitlines()
    assert lines[0].split() == ["ALIAS", "SIZE", "PULLED", "REPO", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert {
        "qwen2.5:0.5b",
        "qwen2.5:7b",
        "llama3.2:3b",
        "gemma3:4b",
        "phi-4-mini",
        "mistral:7b",
        "smollm2:135m",
    } <= set(rows)
    assert rows["tiny:8bit"].split()[3:5] == ["yes", f"{TINY_REPO}:Q8_0"]
    assert rows["qwen2.5:1.5b"].split()[3] == "no"
    assert rows["qwen2.5:1.5b"].split()[4] == "Qwen/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M"
    entries = {row["alias"]: row for row in json.loads(ok("models", "catalog", "--json"))}
    assert entries["tiny:8bit"]["pulled"] is True and entries["qwen2.5:1.5b"]["pulled"] is False


def test_doctor_reports_build_threads_and_cache(hub_server) -> None:
    from chatllm.hub.cache import hub_cache_dir

    hub.pull_model(TINY_REPO)
    output = ok("doctor")
    assert "llama.cpp build:    CPU" in output or "llama.cpp build:" in output
    assert "GPU offload:" in output and "threads:" in output
    assert f"hub cache:          {hub_cache_dir()} (524.9 KB)" in output
    assert "models cached:      1" in output
    facts = json.loads(ok("doctor", "--json"))
    assert facts["models_cached"] == 1 and facts["hub_endpoint"] == hub_server.url
    assert isinstance(facts["gpu_offload"], bool) and facts["logical_cpus"] >= 1


# the model runs -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_pulled_model_runs_end_to_end(hub_server, embedded_model) -> None:
    """`summarize -m org/repo:Q4_1 --pull`: download from the stand-in, verify, load in llama.cpp, answer."""
    hub_server.add_repo(SMOLLM_REPO, {embedded_model.name: embedded_model})
    result = run_chatllm(
        "summarize",
        "-m",
        f"{SMOLLM_REPO}:Q4_1",
        "--pull",
        "--max-tokens",
        "24",
        "--json",
        "--no-log",
        input="The city library opened a new reading room on Monday. It has two hundred seats and free wifi.",
        timeout=280,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == embedded_model.name and answer["text"].strip()
    assert "Downloading SmolLM2-135M-Instruct.Q4_1.gguf" in stderr
    assert len(hub_server.body_requests()) == 1
