"""The mechanisms behind chatllm's speed targets (issue 4), checked by what they
do, never by how fast they run (benchmarks/run.py measures speed):

* a chat turn evaluates only what is new since the last turn (KV cache reuse),
  counted in --json and --stats;
* a persona's long system prefix is saved to the cache folder and a second
  process starts from it;
* the saved-state folder keeps under its size limit by evicting the least
  recently used files first;
* a generating command starts loading its model before typer parses the command
  line, and the parsed command adopts that load only if it asked for the same;
* the model loads on a background thread while the command reads its input,
  from llama.cpp's bindings alone (llama-cpp-python's package init and numpy
  are never imported);
* the flash_attn setting reaches llama.cpp;
* what `--help`, `--version`, completion and the model load may import is
  checked in tests/test_imports.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.cli import run_chatllm

# ---------------------------------------------------------------- state cache size limit


def test_state_cache_evicts_least_recently_used_first(tmp_path: Path) -> None:
    from chatllm.engine.state_cache import PrefixStateCache

    cache = PrefixStateCache(tmp_path, max_bytes=3_000, identity="model-a")
    now = time.time()
    files = {}
    for age, name in ((400, "oldest"), (300, "older"), (200, "newer"), (100, "newest")):
        path = cache.path_for([hash(name) & 0xFFFF, 1, 2, 3])
        path.write_bytes(b"x" * 1_000)
        os.utime(path, (now - age, now - age))
        files[name] = path
    stale = tmp_path / ".abandoned.123.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (now - 7200, now - 7200))

    cache.evict()

    assert not files["oldest"].exists()
    assert all(files[name].exists() for name in ("older", "newer", "newest"))
    assert not stale.exists(), "a temporary file left by a dead writer is cleaned up"
    assert sum(p.stat().st_size for p in tmp_path.glob("*.state")) <= 3_000


def test_state_cache_keys_depend_on_model_and_tokens(tmp_path: Path) -> None:
    from chatllm.engine.state_cache import PrefixStateCache

    a = PrefixStateCache(tmp_path, 1 << 30, identity="model-a")
    b = PrefixStateCache(tmp_path, 1 << 30, identity="model-b")
    assert a.path_for([1, 2, 3]) != b.path_for([1, 2, 3])
    assert a.path_for([1, 2, 3]) != a.path_for([1, 2, 4])
    assert a.path_for([1, 2, 3]) == PrefixStateCache(tmp_path, 1, identity="model-a").path_for([1, 2, 3])


# ---------------------------------------------------------------- the real model


def replies(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_chat_turns_evaluate_only_new_tokens(embedded_model: Path) -> None:
    lines = "Hello, who are you?\nWhat is the capital of France?\nAnd of Italy?\n"
    result = run_chatllm(
        "chat",
        "--json",
        "--stats",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--ctx",
        "1024",
        "--no-log",
        input=lines,
    )
    turns = replies(result)
    assert len(turns) == 3
    first, later = turns[0]["usage"], [t["usage"] for t in turns[1:]]
    assert first["cached_prompt_tokens"] == 0
    previous = first
    for usage in later:
        new_tokens = usage["prompt_tokens"] - previous["prompt_tokens"]  # last reply + new user turn
        evaluated = usage["prompt_tokens"] - usage["cached_prompt_tokens"]
        assert usage["cached_prompt_tokens"] >= previous["prompt_tokens"], "the whole previous prompt is reused"
        assert 0 < evaluated <= new_tokens
        previous = usage
    # --stats shows the same counts to a person.
    stats = result.stderr.decode()
    for turn in turns:
        usage = turn["usage"]
        assert f"prompt tokens reused from cache: {usage['cached_prompt_tokens']} of {usage['prompt_tokens']}" in stats


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "expected"), [("on", "enabled"), ("off", "disabled"), ("auto", "auto")])
def test_flash_attention_setting_reaches_llama_cpp(embedded_model: Path, setting: str, expected: str) -> None:
    result = run_chatllm(
        "chat",
        "--verbose",
        "--max-tokens",
        "1",
        "--no-log",
        input="Spring is warm and rainy here.\n",
        env={"CHATLLM_FLASH_ATTN": setting},
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    logged = re.search(r"flash_attn\s*=\s*(\w+)", result.stderr.decode())  # llama.cpp's own log line
    assert logged is not None and logged.group(1) == expected


def _token_count(model: Path, text: str) -> int:
    import llama_cpp

    vocab = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    return len(vocab.tokenize(text.encode(), add_bos=False, special=False))


@pytest.mark.slow
def test_persona_prefix_state_is_saved_and_reused_by_the_next_process(
    embedded_model: Path, isolated_home: Path
) -> None:
    args = ("chat", "--persona", "support", "--temperature", "0", "--max-tokens", "4", "--no-log")
    dry = json.loads(run_chatllm(*args, "--dry-run").stdout)
    system = next(m["content"] for m in dry["messages"] if m["role"] == "system")
    system_tokens = _token_count(embedded_model, system)
    assert system_tokens >= 256, "the support persona's prefix is long enough to be saved"
    states = isolated_home / "cache" / "chatllm" / "prompt-states"

    first = replies(run_chatllm(*args, "--json", input="Do you ship to Canada?\n"))[0]["usage"]
    saved = list(states.glob("*.state"))
    assert first["cached_prompt_tokens"] == 0
    assert len(saved) == 1 and saved[0].stat().st_size > 0

    second = replies(run_chatllm(*args, "--json", input="How do I return a jacket?\n"))[0]["usage"]
    assert second["cached_prompt_tokens"] >= system_tokens, "the new process started from the saved prefix"
    assert second["cached_prompt_tokens"] < second["prompt_tokens"]
    assert list(states.glob("*.state")) == saved, "the same prefix is not saved twice"


def _rules(topic: str) -> str:
    return f"You answer questions about {topic}. " + " ".join(
        f"Rule {n}: be accurate about {topic}, cite section {n} of the {topic} handbook, and stay polite."
        for n in range(1, 24)
    )


@pytest.mark.slow
def test_saved_prefixes_are_evicted_least_recently_used_first(embedded_model: Path, tmp_path: Path) -> None:
    from chatllm.engine.base import EngineOptions, GenerationParams, Message
    from chatllm.engine.llama import LlamaEngine
    from chatllm.hub.models import ResolvedModel

    model = ResolvedModel(reference="embedded", name=embedded_model.name, path=embedded_model)
    folder = tmp_path / "states"
    params = GenerationParams(temperature=0.0, max_tokens=2)

    def ask(engine: LlamaEngine, topic: str) -> int:
        "".join(engine.stream([Message("system", _rules(topic)), Message("user", "Hi")], params))
        return engine.last_stats.usage.cached_prompt_tokens

    engine = LlamaEngine(model, EngineOptions(n_ctx=1024, state_cache_dir=folder))
    try:
        ask(engine, "gardening")
        ask(engine, "astronomy")
    finally:
        engine.close()
    first, second = sorted(folder.glob("*.state"), key=lambda p: p.stat().st_mtime)
    size = max(first.stat().st_size, second.stat().st_size)
    now = time.time()
    os.utime(first, (now - 600, now - 600))  # gardening: saved first ...
    os.utime(second, (now - 300, now - 300))  # ... astronomy: saved later

    # Room for two files: using gardening again makes astronomy the least recently used.
    engine = LlamaEngine(
        model, EngineOptions(n_ctx=1024, state_cache_dir=folder, state_cache_max_bytes=int(size * 2.5))
    )
    try:
        assert ask(engine, "gardening") > 0, "gardening's prefix comes from its file"
        ask(engine, "cooking")
    finally:
        engine.close()
    left = set(folder.glob("*.state"))
    assert first in left and second not in left
    assert len(left) == 2


class _SlowLoadingEngine:
    """Records the thread it was loaded on and whether it was closed."""

    def __init__(self, loaded: threading.Event) -> None:
        from chatllm.engine.fake import FakeEngine

        # A summary of a text this short is a short whole sentence.
        self.fake, self.loaded, self.closed = FakeEngine(reply=lambda messages: "Some words."), loaded, False
        self.load_thread = threading.current_thread().name
        loaded.wait(5)  # the load finishes only once the main thread has read the input

    def __getattr__(self, name: str):
        return getattr(self.fake, name)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("text", ["Some words to summarize, long enough to be a text.", ""])
def test_model_loads_while_the_input_is_read_and_is_always_closed(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    from typer.testing import CliRunner

    from chatllm.cli.app import app
    from chatllm.hub.models import ResolvedModel
    from chatllm.inputs import read_input as real_read_input

    loaded, engines = threading.Event(), []

    def open_engine(model, options, on_loaded=None):
        engines.append(_SlowLoadingEngine(loaded))
        return engines[-1]

    def read_input(*args, **kwargs):
        try:
            return real_read_input(*args, **kwargs)
        finally:
            loaded.set()  # had the load run on this thread, it would have timed out first

    monkeypatch.setattr(
        "chatllm.cli.running.resolve",
        lambda options, config: ResolvedModel(reference="fake", name="fake.gguf", path=None),
    )
    monkeypatch.setattr("chatllm.engine.open_engine", open_engine)
    monkeypatch.setattr("chatllm.inputs.read_input", read_input)
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["summarize", "--no-log"], input=text)
    assert time.perf_counter() - started < 4, "the input was read while the load waited, not after it"
    [engine] = engines
    assert engine.load_thread != threading.current_thread().name
    assert engine.closed
    if text:
        assert result.exit_code == 0 and result.stdout
    else:  # an input error while the model loads: the error, and the engine still closed
        from chatllm.errors import InputError

        assert isinstance(result.exception, InputError)  # main() turns it into a one-line error


@pytest.mark.parametrize(
    ("argv", "expected_reference"),
    [
        (["summarize", "notes.md"], None),
        (["translate", "--to", "fr", "-m", "embedded"], "embedded"),
        (["chat", "--model=embedded"], "embedded"),
        (["run", "proofread", "-membedded"], "embedded"),
    ],
)
def test_early_load_guesses_the_model_from_the_raw_words(argv: list[str], expected_reference: str | None) -> None:
    from chatllm.cli import early_load
    from chatllm.config.settings import load_settings
    from chatllm.engine import engine_options
    from chatllm.hub.models import resolve_model

    guess = early_load._guess(argv)
    assert guess is not None
    model, options = guess
    assert model == resolve_model(expected_reference, default=None, allow_download=False)
    assert model.path is not None and options == engine_options(load_settings())


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["models", "list"],
        ["summarize", "--help"],
        ["summarize", "--dry-run"],
        ["chat", "--ctx", "512"],
        ["translate", "--to", "de", "--gpu-layers=0"],
        ["summarize", "--verbose"],
        ["run", "x", "--seed", "1"],
    ],
)
def test_early_load_stays_out_when_unsure_or_nothing_loads(argv: list[str]) -> None:
    from chatllm.cli import early_load

    assert early_load._guess(argv) is None


def test_early_load_is_adopted_only_by_the_same_model_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from chatllm.cli import early_load
    from chatllm.cli.app import app
    from chatllm.engine.fake import FakeEngine

    opened: list[tuple[object, FakeEngine]] = []

    class Closing(FakeEngine):
        closed = False

        def close(self) -> None:
            self.closed = True

    def open_engine(model, options, on_loaded=None):
        opened.append((options, Closing(reply=lambda messages: "Spring words.")))
        return opened[-1][1]

    monkeypatch.setattr("chatllm.engine.open_engine", open_engine)
    text = "A few words about spring, long enough to summarize."

    early_load.start(["summarize", "--no-log"])  # as the entry point does
    result = CliRunner().invoke(app, ["summarize", "--no-log"], input=text)
    assert result.exit_code == 0, result.output
    assert len(opened) == 1, "the parsed command adopted the early load"
    assert opened[0][1].closed

    opened.clear()
    early_load.start(["summarize", "--no-log"])
    result = CliRunner().invoke(app, ["summarize", "--no-log", "--ctx", "512"], input=text)  # not what was guessed
    assert result.exit_code == 0, result.output
    assert [options.n_ctx for options, _ in opened] == [None, 512]
    assert all(engine.closed for _, engine in opened), "the unused early engine was closed too"
