"""The batched llama.cpp engine (`serve --parallel`) on the embedded model:
several callers at once in one context, each with its own sequence, sampler
and stats; a shared system prompt evaluated once; a caller that stops
reading frees its slot.

Replies are a few tokens long; one engine is shared where the cache state
does not matter.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chatllm.engine.base import EngineOptions, GenerationParams, Message
from chatllm.errors import EngineError
from chatllm.hub.models import ResolvedModel

if TYPE_CHECKING:  # imported inside the helpers: llama_cpp loads a native library
    from chatllm.engine.batched import BatchedLlamaEngine
    from chatllm.engine.llama import LlamaEngine

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(temperature=0.0, max_tokens=12)
CODES = ("AX7", "QZ42", "MK9P", "RT5")
SYSTEM = "You are a careful assistant for the Acme Rocket Company. " + " ".join(
    f"Rule {n}: answer briefly and never invent a delivery date." for n in range(1, 8)
)


def open_batched(path: Path, sequences: int = 4, **options) -> BatchedLlamaEngine:
    from chatllm.engine.batched import BatchedLlamaEngine

    options.setdefault("n_ctx", 512)
    options.setdefault("n_threads", 1)  # see tests/test_engine_llama.py
    model = ResolvedModel(reference="embedded", name=path.name, path=path)
    return BatchedLlamaEngine(model, EngineOptions(sequences=sequences, **options))


def open_single(path: Path) -> LlamaEngine:
    from chatllm.engine.llama import LlamaEngine

    model = ResolvedModel(reference="embedded", name=path.name, path=path)
    return LlamaEngine(model, EngineOptions(n_ctx=512, n_threads=1))


@pytest.fixture(scope="module")
def batched(embedded_model: Path):
    engine = open_batched(embedded_model)
    yield engine
    engine.close()


def repeat(code: str) -> list[Message]:
    """A question whose answer is `code`: the embedded model answered it for
    32 of 32 random codes (without the example turn, for 14)."""
    return [
        Message("system", SYSTEM),
        Message("user", "My order code is QWE12. What is my order code?"),
        Message("assistant", "Your order code is QWE12."),
        Message("user", f"My order code is {code}. What is my order code?"),
    ]


def at_once(engine, calls):
    """Run each call on its own thread, all at once; their results in order."""
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return results


def reply_and_stats(engine, messages, params=GREEDY):
    def call():
        text = "".join(engine.stream(messages, params))
        return text, engine.last_stats

    return call


def wait_idle(engine, seconds: float = 10.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and set(engine.slot_states()) != {"idle"}:
        time.sleep(0.02)
    return engine.slot_states()


def test_replies_at_once_are_each_their_own(batched) -> None:
    together = at_once(batched, [reply_and_stats(batched, repeat(code)) for code in CODES])
    for code, (text, stats) in zip(CODES, together):
        assert code in text and not any(other in text for other in CODES if other != code), (code, text)
        # Each thread read its own stats: its own prompt, its own reply.
        assert stats.usage.prompt_tokens == batched.count_prompt_tokens(repeat(code))
        assert stats.usage.completion_tokens >= 2 and stats.finish_reason in ("stop", "length")
    assert wait_idle(batched) == ["idle"] * 4


def test_a_shared_system_prompt_is_evaluated_once(embedded_model: Path, tmp_path: Path) -> None:
    engine = open_batched(embedded_model, state_cache_dir=tmp_path)
    together = at_once(engine, [reply_and_stats(engine, repeat(code)) for code in CODES])
    cached = sorted(stats.usage.cached_prompt_tokens for _, stats in together)
    prefix = engine.count_prompt_tokens([Message("system", SYSTEM), Message("user", "x")]) - 10
    # One evaluated the system prompt; the others copied its cells.
    assert cached[0] == 0 and all(count >= prefix for count in cached[1:]), cached
    engine.close()
    assert len(list(tmp_path.glob("*.state"))) == 1

    # A new server restores it from the disk cache: even the first request
    # evaluates only its own question.
    again = open_batched(embedded_model, state_cache_dir=tmp_path)
    text, stats = reply_and_stats(again, repeat("ZZ9"))()
    assert "ZZ9" in text and stats.usage.cached_prompt_tokens >= prefix
    again.close()


def test_scores_match_the_single_engine(batched, embedded_model: Path) -> None:
    question = [Message("user", "Is the sky blue on a clear day? Answer yes or no.")]
    single = open_single(embedded_model)
    expected = single.score(question, ["yes", "no", "maybe not"])
    single.close()
    # Where a sequence's cells sit in the shared cache changes how its sums
    # round (llama.cpp's kernels add in SIMD lanes by cell index), and a 135M
    # Q4 model amplifies that over 30 layers: the same ranking, within a margin.
    for got in at_once(batched, [lambda: batched.score(question, ["yes", "no", "maybe not"])] * 3):
        assert got == pytest.approx(expected, abs=1.0)
        assert sorted(range(3), key=got.__getitem__) == sorted(range(3), key=expected.__getitem__)


def test_each_sequence_keeps_its_own_sampler(batched) -> None:
    schema = json.dumps({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]})
    structured = GenerationParams(temperature=0.0, max_tokens=30, json_schema=schema)
    stopped = GenerationParams(temperature=0.0, max_tokens=30, stop=("7",))
    seeded = GenerationParams(temperature=1.0, seed=99, max_tokens=10)
    story = [Message("user", "Tell me a fun fact.")]
    results = at_once(
        batched,
        [
            reply_and_stats(batched, repeat("AX7"), structured),
            reply_and_stats(batched, repeat("AX7"), stopped),
            reply_and_stats(batched, story, seeded),
            reply_and_stats(batched, story, seeded),
        ],
    )
    assert "code" in json.loads(results[0][0])
    assert "7" not in results[1][0] and results[1][1].finish_reason == "stop"
    assert results[2][0] == results[3][0]  # the same seed, whatever ran beside it


def test_a_caller_that_stops_reading_frees_its_slot(batched) -> None:
    long = GenerationParams(temperature=0.0, max_tokens=400, min_p=0.0)
    streams = [batched.stream([Message("user", f"Write a long story about ship {n}.")], long) for n in range(4)]
    for stream in streams:
        next(stream)
    assert batched.slot_states().count("generating") == 4
    for stream in streams:
        stream.close()
    assert wait_idle(batched, 5.0) == ["idle"] * 4
    text, stats = reply_and_stats(batched, repeat("QZ42"))()
    assert "QZ42" in text


def test_more_callers_than_slots_wait_their_turn(embedded_model: Path) -> None:
    engine = open_batched(embedded_model, sequences=2)
    codes = [f"KP{n}{n}" for n in range(5)]
    results = at_once(engine, [reply_and_stats(engine, repeat(code)) for code in codes])
    assert all(code in text for code, (text, _) in zip(codes, results))
    assert engine.queue_depth() == 0
    engine.close()


def test_a_prompt_longer_than_a_slot_is_refused(batched) -> None:
    with pytest.raises(EngineError, match="context holds 512"):
        next(batched.stream([Message("user", "word " * 600)], GREEDY))


def test_closing_ends_open_streams_with_an_error(embedded_model: Path) -> None:
    engine = open_batched(embedded_model, sequences=2)
    stream = engine.stream([Message("user", "Write a long story.")], GenerationParams(temperature=0.0, max_tokens=400))
    next(stream)
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        list(stream)


def test_a_waiting_request_abandoned_from_elsewhere_ends_at_once(embedded_model: Path) -> None:
    """The server abandons a request whose client hung up while it waited for
    a slot: its thread stops waiting, and nothing of it is ever evaluated."""
    engine = open_batched(embedded_model, sequences=1)
    busy = engine.stream([Message("user", "Write the numbers from 1 to 300.")], GenerationParams(max_tokens=300))
    next(busy)
    outcome: list[BaseException | str] = []
    idents: list[int] = []

    def wait_for_a_slot() -> None:
        idents.append(threading.get_ident())
        try:
            outcome.append("".join(engine.stream(repeat("AB12"), GREEDY)))
        except EngineError as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait_for_a_slot)
    waiter.start()
    deadline = time.monotonic() + 10
    while engine.queue_depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.abandon(idents[0])
    waiter.join(5)
    assert not waiter.is_alive() and isinstance(outcome[0], EngineError), outcome
    assert engine.queue_depth() == 0
    busy.close()
    engine.close()


def test_the_cli_and_the_server_keep_their_own_prefix_states(embedded_model: Path, tmp_path: Path) -> None:
    """A state file records its context's KV streams (one for the CLI, one per
    sequence for the server) and loads only into as many: each keeps its own
    file, and neither deletes the other's as unreadable."""
    from chatllm.engine.llama import LlamaEngine

    model = ResolvedModel(reference="embedded", name=embedded_model.name, path=embedded_model)
    cli = LlamaEngine(model, EngineOptions(n_ctx=512, n_threads=1, state_cache_dir=tmp_path))
    list(cli.stream(repeat("AB12"), GREEDY))
    cli.close()
    (saved,) = tmp_path.glob("*.state")
    served = open_batched(embedded_model, state_cache_dir=tmp_path)
    assert "CD34" in reply_and_stats(served, repeat("CD34"))()[0]
    served.close()
    assert saved.exists() and len(list(tmp_path.glob("*.state"))) == 2
    again = LlamaEngine(model, EngineOptions(n_ctx=512, n_threads=1, state_cache_dir=tmp_path))
    list(again.stream(repeat("EF56"), GREEDY))
    assert again.last_stats.usage.cached_prompt_tokens >= 100
    again.close()


def test_requests_announced_together_are_prefilled_in_one_step(embedded_model: Path, monkeypatch) -> None:
    """The second caller is still preparing its request (50 ms) when the first
    submits: the first's prefill waits for it, and one decode evaluates both."""
    from chatllm.engine import scheduler

    real, sizes = scheduler.llama_cpp, []

    class Counting:
        def __getattr__(self, name: str):
            return getattr(real, name)

        def llama_decode(self, context, batch):
            sizes.append(batch.n_tokens)
            return real.llama_decode(context, batch)

    monkeypatch.setattr(scheduler, "llama_cpp", Counting())
    engine = open_batched(embedded_model, sequences=2)
    questions = [[Message("user", f"My order code is {code}. What is my order code?")] for code in CODES[:2]]
    announced = threading.Barrier(2)

    def ask(messages: list[Message], preparing_s: float):
        def call():
            with engine.expecting():
                announced.wait()
                time.sleep(preparing_s)
                return reply_and_stats(engine, messages)()

        return call

    try:
        at_once(engine, [ask(questions[0], 0.0), ask(questions[1], 0.05)])
        lengths = [len(engine.prompt_tokens(messages)) for messages in questions]
    finally:
        engine.close()
    assert sizes[0] == sum(lengths)
