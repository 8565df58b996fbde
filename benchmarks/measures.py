"""One function per target of issue 4. Each returns plain data (lists of
samples and a few derived figures); run.py interleaves, takes medians, judges
and prints."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from corpus import prose
from harness import (
    BenchSettings,
    ProcessRun,
    Sandbox,
    chatllm,
    json_lines,
    llama_bench,
    quiet_step,
    run_process,
    stats_from_stderr,
    wait_for_quiet,
)

HERE = Path(__file__).resolve().parent
BIG_FAQ = HERE / "data" / "big_faq.md"
CHAT_LINES = [
    "Hello! I am planning a hiking trip in the mountains next month.",
    "What should I pack for three days of walking?",
    "How heavy should my backpack be, roughly?",
    "What do I do if the weather turns bad on the second day?",
    "Which food keeps well without a fridge?",
    "How much water should I carry each day?",
    "Any tips for sleeping well in a tent?",
    "Thanks! Can you summarize your advice in three points?",
]
PERSONA_QUESTION = "How long does shipping to Japan take, and how much does it cost?\n"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs


class TokenCounter:
    """Counts tokens with the model's own vocabulary (loaded vocab-only)."""

    def __init__(self, model: Path) -> None:
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):  # llama.cpp warns about n_ctx on a vocab-only load
            self._llm = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)

    def __call__(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def text_of_tokens(count: TokenCounter, tokens: int, seed: int = 2024) -> str:
    """Deterministic prose of about `tokens` tokens (never more)."""
    per_sentence = count(prose(60, seed)) / 60
    sentences = max(1, int(tokens / per_sentence))
    text = prose(sentences, seed)
    while sentences > 1 and count(text) > tokens:
        sentences -= max(1, sentences // 50)
        text = prose(sentences, seed)
    return text


def summarize_input(sandbox: Sandbox, count: TokenCounter, folder: Path, target_prompt: int) -> tuple[Path, int]:
    """A file whose summarize prompt (template included) is close to `target_prompt`
    tokens; returns it and the exact prompt size chatllm reports."""
    probe = folder / "probe.txt"
    probe.write_text(text_of_tokens(count, 100), encoding="utf-8")
    # With the measured rows' own options, so the prompt asks for the same length.
    probe_args = ("summarize", "--json", "--length", "long", "--temperature", "0", "--max-tokens", "128")
    first = json_lines(chatllm(sandbox, *probe_args, str(probe)))[0]
    overhead = first["usage"]["prompt_tokens"] - count(probe.read_text(encoding="utf-8"))
    path = folder / f"input-{target_prompt}.txt"
    path.write_text(text_of_tokens(count, target_prompt - overhead), encoding="utf-8")
    exact = json_lines(chatllm(sandbox, *probe_args, str(path)))[0]
    return path, exact["usage"]["prompt_tokens"]


def engine_flash_attn(sandbox: Sandbox) -> str:
    """The flash-attention setting chatllm gives llama.cpp, as llama-bench's -fa
    value (auto, 1 or 0), read from llama.cpp's own log (--verbose)."""
    import re

    run = chatllm(
        sandbox,
        "chat",
        "--verbose",
        "--max-tokens",
        "1",
        "--temperature",
        "0",
        stdin="A short text about the weather in spring, for a probe.\n",
    )
    found = re.search(r"flash_attn\s*=\s*(\w+)", run.stderr)
    value = found.group(1).lower() if found else "auto"
    return {"enabled": "1", "disabled": "0", "true": "1", "false": "0", "1": "1", "0": "0"}.get(value, "auto")


# ---------------------------------------------------------------- 1, 2, 7: one-shot speed


def one_shot_json(sandbox: Sandbox, path: Path, max_tokens: int) -> tuple[dict, ProcessRun]:
    run = chatllm(
        sandbox,
        "summarize",
        "--json",
        "--stats",
        "--length",
        "long",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
        str(path),
    )
    return json_lines(run)[0], run


def one_shot_streaming(
    sandbox: Sandbox, path: Path, max_tokens: int, terminal: bool = False
) -> tuple[dict, ProcessRun]:
    """Streamed output with --stats: plain text into a pipe, where the first
    stdout byte is the first token a program reads, or (`terminal=True`) the
    live view on a pseudo-terminal, where the first visible text is what a
    person sees first."""
    run = chatllm(
        sandbox,
        "summarize",
        "--stats",
        "--length",
        "long",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
        str(path),
        terminal=terminal,
    )
    blocks = stats_from_stderr(run.stderr)
    if run.returncode != 0 or not blocks:
        raise RuntimeError(f"chatllm summarize failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return blocks[-1], run


def templated_prompt(sandbox: Sandbox, count: TokenCounter, path: Path) -> str:
    """The exact prompt `chatllm summarize --length long PATH` evaluates, as text
    that llama.cpp's own CLI tokenizes back into the same tokens (special tokens
    parsed), for a side-by-side time to first token."""
    import json

    from chatllm.engine.base import Message
    from chatllm.engine.chat_prompt import ChatPrompt

    run = chatllm(sandbox, "summarize", "--dry-run", "--length", "long", str(path))
    messages = [Message(m["role"], m["content"]) for m in json.loads(run.stdout)["messages"]]
    llm = count._llm
    tokens = ChatPrompt(llm._model.model, llm._model.vocab, "reference").prompt_tokens(messages)
    bos = llm.token_bos()
    body = tokens[1:] if tokens and tokens[0] == bos else tokens
    text = llm.detokenize(body, special=True).decode("utf-8")
    again = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if again != body:
        log(f"  note: the reference prompt re-tokenizes to {len(again)} tokens, chatllm's is {len(body)}")
    return text


def llama_completion_first_byte(
    bench: BenchSettings, prompt_file: Path, n_ctx: int, max_tokens: int, terminal: bool = False
) -> dict:
    """llama.cpp's own one-shot CLI on the same prompt: spawn to its first
    generated byte on stdout (no prompt echo, no warm-up run, greedy); with
    `terminal=True`, to its first visible text on a pseudo-terminal."""
    binary = bench.binary.with_name("llama-completion")
    argv = [
        str(binary),
        "-m",
        str(bench.model),
        "-f",
        str(prompt_file),
        "-n",
        str(max_tokens),
        "-c",
        str(n_ctx),
        "-t",
        str(bench.threads),
        "-fa",
        {"1": "on", "0": "off"}.get(bench.flash_attn, "auto"),
        "--repack" if bench.repack else "--no-repack",
        "-ngl",
        str(bench.gpu_layers),
        "--temp",
        "0",
        "-no-cnv",
        "--no-display-prompt",
        "--no-warmup",
    ]
    run = run_process(argv, terminal=terminal)
    if run.returncode != 0 or run.first_byte_s is None:
        raise RuntimeError(f"llama-completion failed ({run.returncode}): {' '.join(argv)}\n{run.stderr[-2000:]}")
    import re

    evaluated = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", run.stderr)
    load = re.search(r"load time =\s*([\d.]+) ms", run.stderr)
    return {
        "first_byte_s": run.first_byte_s,
        "wall_s": run.wall_s,
        "foreign_cpu": run.foreign_cpu,
        "prompt_tokens": int(evaluated.group(2)) if evaluated else None,
        "prefill_s": float(evaluated.group(1)) / 1000 if evaluated else None,
        "load_s": float(load.group(1)) / 1000 if load else None,
    }


# ---------------------------------------------------------------- 3: start-up


def startup_commands() -> dict[str, list[str]]:
    from harness import chatllm_argv

    script = chatllm_argv()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "chatllm --help": [*script, "--help"],
        "chatllm --version": [*script, "--version"],
        "completion (chatllm tr<TAB>)": [*script],
    }


def startup_times(sandbox: Sandbox, reps: int) -> dict[str, dict]:
    # pip writes bytecode when it installs a package; an editable checkout run
    # with PYTHONDONTWRITEBYTECODE would compile every module on every start.
    import compileall

    import chatllm

    compileall.compile_dir(Path(chatllm.__file__).parent, quiet=1)
    commands = startup_commands()
    samples: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, int] = {}
    for _ in range(reps):
        wait_for_quiet(0.05, max_wait_s=60)
        for name, argv in commands.items():
            env = sandbox.env()
            if name.startswith("completion"):
                env.update(_CHATLLM_COMPLETE="complete_bash", COMP_WORDS="chatllm tr", COMP_CWORD="1")
            run = run_process(argv, env=env)
            samples[name].append(run.wall_s)
            codes[name] = run.returncode
            if name.startswith("completion"):
                codes["completion output"] = run.stdout.split()  # type: ignore[assignment]
    return {
        name: {"samples_s": values, "median_s": median(values), "returncode": codes.get(name)}
        for name, values in samples.items()
    } | {"completion_output": codes.get("completion output")}


# ---------------------------------------------------------------- 4: chat turns


def chat_reference(bench: BenchSettings, turns: list[dict], noise: float) -> None:
    """Adds to each turn after the first what llama.cpp itself takes to evaluate the
    same new tokens at the same depth (`llama-bench -p NEW -d REUSED`), and the
    overhead left once that is taken off the turn's TTFT."""
    for turn in turns[1:]:

        def measure(turn: dict = turn) -> dict:
            record = llama_bench(bench, turn["evaluated_tokens"], 0, depth=turn["cached_prompt_tokens"], reps=5)
            return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}

        reference = quiet_step(measure, noise)
        turn["bench_pp_at_depth"] = reference["tokens_per_s"]
        turn["bench_prefill_s"] = turn["evaluated_tokens"] / reference["tokens_per_s"]
        turn["overhead_s"] = turn["ttft_s"] - turn["bench_prefill_s"]


def chat_turns(sandbox: Sandbox, turns: int, max_tokens: int) -> list[dict]:
    lines = "\n".join(CHAT_LINES[:turns]) + "\n"
    wait_for_quiet(0.05)
    run = chatllm(
        sandbox, "chat", "--json", "--stats", "--temperature", "0", "--max-tokens", str(max_tokens), stdin=lines
    )
    replies = json_lines(run)
    return [
        {
            "turn": index + 1,
            "ttft_s": reply["timings"]["ttft_s"],
            "prompt_tokens": reply["usage"]["prompt_tokens"],
            "cached_prompt_tokens": reply["usage"]["cached_prompt_tokens"],
            "evaluated_tokens": reply["usage"]["prompt_tokens"] - reply["usage"]["cached_prompt_tokens"],
            "completion_tokens": reply["usage"]["completion_tokens"],
            "prefill_tokens_per_s": reply["timings"]["prefill_tokens_per_s"],
            "foreign_cpu": run.foreign_cpu,
        }
        for index, reply in enumerate(replies)
    ]


# ---------------------------------------------------------------- 5: persona prefix on disk


def persona_reference(bench: BenchSettings, pairs: list[dict], noise: float) -> None:
    """Adds to each pair what llama.cpp itself takes to evaluate the warm run's
    uncached tokens (every token chatllm evaluated: the persona's coverage
    judgement and the reply, jobs/coverage.py) at the depth of its cached
    prefix (`llama-bench -p NEW -d CACHED`), and the TTFT left once that is
    taken off."""
    for pair in pairs:
        warm = pair["warm"]
        new = warm["prompt_tokens"] - warm["cached_prompt_tokens"]
        depth = warm["cached_prompt_tokens"] // max(warm.get("calls", 1), 1)

        def measure(new: int = new, depth: int = depth) -> dict:
            record = llama_bench(bench, max(new, 1), 0, depth=depth, reps=5)
            return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}

        reference = quiet_step(measure, noise)
        warm["uncached_tokens"] = new
        warm["bench_prefill_s"] = new / reference["tokens_per_s"]
        warm["overhead_s"] = warm["ttft_s"] - warm["bench_prefill_s"]


def persona_judges(cache: Path) -> bool:
    """Whether the support persona's coverage judge calibrated as usable in this
    cache folder (the file jobs/coverage.py keeps)."""
    for path in (cache / "chatllm" / "persona-judges").glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["covered_mean"] - data["uncovered_mean"] >= 1.0:
            return True
    return False


def persona_pair(sandbox: Sandbox, ctx: int, max_tokens: int) -> dict:
    """A cold run (empty cache folder) then a warm run of the support persona with
    the big FAQ, each a new process."""
    cache = sandbox.fresh_cache()
    # The demo knowledge and the big FAQ, all in the system prompt: the long fixed
    # prefix whose saved state the second process restores.
    args = [
        "chat",
        "--persona",
        "support",
        "--kb",
        f"+{BIG_FAQ}",
        "--knowledge",
        "whole",
        "--ctx",
        str(ctx),
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
    ]
    result = {}
    for label in ("cold", "warm"):
        wait_for_quiet(0.05)
        run = chatllm(sandbox, *args, stdin=PERSONA_QUESTION)
        reply = json_lines(run)[0]
        result[label] = {
            "ttft_s": reply["timings"]["ttft_s"],
            "load_s": reply["timings"]["load_s"],
            "wall_s": run.wall_s,
            "prompt_tokens": reply["usage"]["prompt_tokens"],
            "cached_prompt_tokens": reply["usage"]["cached_prompt_tokens"],
            # A model that judges its coverage makes a call of its own before the reply
            # (jobs/coverage.py); the job's usage adds both.
            "calls": 2 if persona_judges(cache) else 1,
            "max_rss_bytes": run.max_rss_bytes,
            "foreign_cpu": run.foreign_cpu,
        }
    states = list((cache / "chatllm" / "prompt-states").glob("*.state"))
    result["state_files"] = len(states)
    result["state_bytes"] = sum(p.stat().st_size for p in states)
    return result


# ---------------------------------------------------------------- 6: long input


def long_input(
    sandbox: Sandbox, bench: BenchSettings, count: TokenCounter, folder: Path, tokens: int, ctx: int, max_tokens: int
) -> dict:
    path = folder / f"long-{tokens}.txt"
    if not path.exists():
        path.write_text(text_of_tokens(count, tokens, seed=50_000), encoding="utf-8")
    document_tokens = count(path.read_text(encoding="utf-8"))
    wait_for_quiet(0.05)
    log(f"  long input: summarizing {document_tokens} tokens with --ctx {ctx} (minutes on 2 cores) ...")
    run = chatllm(
        sandbox,
        "summarize",
        "--json",
        "--ctx",
        str(ctx),
        "--length",
        "short",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
        str(path),
        timeout=3600,
    )
    reply = json_lines(run)[0]
    usage, timings = reply["usage"], reply["timings"]
    evaluated = usage["prompt_tokens"] - usage["cached_prompt_tokens"]
    # The parts fill the context up to the reply's room; their mean size decides
    # which llama-bench rates are "the same tokens".
    calls = max(1, math.ceil(evaluated / (ctx - max_tokens - 64)))
    part = int(evaluated / calls)
    log(f"  long input: llama-bench pp{part} and tg{max_tokens}@d{part} for the raw cost ...")
    pp_run = quiet_step(lambda: _rate(llama_bench(bench, part, 0)), 0.10)
    tg_run = quiet_step(lambda: _rate(llama_bench(bench, 0, max_tokens, depth=part)), 0.10)
    pp, tg = pp_run["tokens_per_s"], tg_run["tokens_per_s"]
    raw_s = evaluated / pp + usage["completion_tokens"] / tg
    return {
        "document_tokens": document_tokens,
        "ctx": ctx,
        "calls_estimated": calls,
        "mean_part_tokens": part,
        "prompt_tokens": usage["prompt_tokens"],
        "evaluated_tokens": evaluated,
        "completion_tokens": usage["completion_tokens"],
        "chatllm_total_s": timings["total_s"],
        "chatllm_load_s": timings["load_s"],
        "wall_s": run.wall_s,
        "bench_pp_tokens_per_s": pp,
        "bench_tg_tokens_per_s": tg,
        "raw_s": raw_s,
        "throughput_ratio": raw_s / timings["total_s"] if timings["total_s"] else None,
        "throughput_ratio_wall": raw_s / run.wall_s,
        "max_rss_bytes": run.max_rss_bytes,
        "foreign_cpu": run.foreign_cpu,
        "bench_foreign_cpu": max(pp_run["foreign_cpu"], tg_run["foreign_cpu"]),
    }


def _rate(record: dict) -> dict:
    return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}


# ---------------------------------------------------------------- 7: memory budget


def model_memory_budget(model: Path, n_ctx: int) -> dict:
    """Model file + f16 KV cache for `n_ctx` tokens, from the GGUF's own metadata."""
    from gguf import GGUFReader

    reader = GGUFReader(str(model))

    def value(key: str, default=None):
        field = reader.fields.get(key)
        if field is None:
            return default
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types and field.types[0].name == "STRING" else part.tolist()[0]

    arch = value("general.architecture")
    n_layer = value(f"{arch}.block_count")
    n_embd = value(f"{arch}.embedding_length")
    n_head = value(f"{arch}.attention.head_count")
    n_head_kv = value(f"{arch}.attention.head_count_kv", n_head)
    key_length = value(f"{arch}.attention.key_length", n_embd // n_head)
    value_length = value(f"{arch}.attention.value_length", n_embd // n_head)
    trained = value(f"{arch}.context_length", n_ctx)
    kv_bytes = n_ctx * n_layer * (key_length + value_length) * n_head_kv * 2  # f16
    size = model.stat().st_size
    return {
        "model_bytes": size,
        "n_ctx": n_ctx,
        "n_ctx_train": trained,
        "n_layer": n_layer,
        "n_embd_k_gqa": key_length * n_head_kv,
        "n_embd_v_gqa": value_length * n_head_kv,
        "kv_bytes": kv_bytes,
        "budget_bytes": size + kv_bytes + 150 * 1024 * 1024,
    }


# ---------------------------------------------------------------- output guards


def output_guard_cost(count: TokenCounter) -> dict:
    """Microseconds per generated token that the reply pipeline
    (chatllm/reply/pipeline.py) adds around the engine: the repetition guard,
    the grounding filter, the drafts a terminal's live view is sent and the
    events themselves, measured in this process on real token pieces: the
    summarization inputs of benchmarks/data/quality, cut into the model's own
    tokens, streamed one token at a time as the decode loop yields them."""
    import time

    from chatllm.engine.base import GenerationParams, GenerationStats, Message
    from chatllm.engine.fake import FakeEngine
    from chatllm.reply.events import Text
    from chatllm.reply.meter import Meter
    from chatllm.reply.pipeline import Checks, call

    folder = Path(__file__).resolve().parent / "data" / "quality" / "summarize"
    llm = count._llm
    pieces: list[str] = []
    for path in sorted(folder.glob("*.md")):
        tokens = llm.tokenize(path.read_text(encoding="utf-8").encode("utf-8"), add_bos=False, special=False)
        pieces += [llm.detokenize([token]).decode("utf-8", "ignore") for token in tokens]
    text = "".join(pieces)

    class Tokens(FakeEngine):
        def stream(self, messages, params):  # the pieces as the decode loop yields them
            self.last_stats = GenerationStats()
            yield from pieces

    best, shown = float("inf"), ""
    for _ in range(5):
        meter = Meter(Tokens(context_size=1 << 20), repetition="loops", drafts=True)
        started = time.perf_counter()
        events = call(meter, [Message("user", "x")], GenerationParams(), Checks(facts=text))
        shown = "".join(event.text for event in events if type(event) is Text)
        best = min(best, time.perf_counter() - started)
    if meter.stats().finish_reason != "stop" or len(shown) < len(text) * 0.9:  # every piece went through both
        raise RuntimeError("the guard stopped the sample text; the cost would be understated")
    return {"tokens": len(pieces), "us_per_token": best / len(pieces) * 1e6}
