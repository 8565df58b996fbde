"""Structured output on a model: is it valid, is it right, is it fast.

    python benchmarks/structured.py [--model PATH] [--runs 100] [--only classify|extract|speed]

1. extract: `chatllm extract --jsonl --temperature 1.5` over the texts of
   benchmarks/data/structured/extract.yaml with different seeds until RUNS
   documents were asked for: how many are valid JSON matching their schema.
2. classify: accuracy on the labelled sets of benchmarks/data/structured/
   classify.yaml (English and Chinese, four label sets): chatllm's classifier
   (the model's own label probabilities, with and without calibration) beside
   the same model asked without constraints, its free text searched for a
   label as irthomasthomas/llm-classify does; and how often that free text
   names no label at all.
3. speed: decode tok/s of a long JSON reply under its schema against the same
   prompt unconstrained, interleaved rounds (also a row of benchmarks/run.py).

Prints Markdown tables; raw results go to benchmarks/results/structured.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import chatllm_argv  # noqa: E402

DATA = HERE / "data" / "structured"
RESULTS = HERE / "results" / "structured.json"


def load_engine(model: Path | None, threads: int | None = None):
    from chatllm.engine import EngineOptions, open_engine
    from chatllm.hub.models import ResolvedModel, embedded_model_path

    path = model or embedded_model_path()
    return open_engine(
        ResolvedModel(reference=str(path), name=Path(path).name, path=Path(path)),
        EngineOptions(n_ctx=4096, seed=1, n_threads=threads),
    )


# ---------------------------------------------------------------- 1. extract


def extract_validity(model: Path | None, runs: int) -> dict:
    from chatllm.jobs.schemas import validated

    data = yaml.safe_load((DATA / "extract.yaml").read_text(encoding="utf-8"))
    schemas = data["schemas"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLLM_")}
    asked = valid = 0
    failures: list[str] = []
    seed = 0
    with tempfile.TemporaryDirectory() as tmp:
        env.update(XDG_CONFIG_HOME=f"{tmp}/c", XDG_DATA_HOME=f"{tmp}/d", XDG_CACHE_HOME=f"{tmp}/k", CHATLLM_LOG="0")
        while asked < runs:
            seed += 1
            for name, schema in schemas.items():
                texts = [t["text"].replace("\n", " ") for t in data["texts"] if t["schema"] == name]
                texts = texts[: max(0, runs - asked)]
                if not texts:
                    continue
                source = Path(tmp) / "in.txt"
                source.write_text("\n".join(texts), encoding="utf-8")
                shape = schema["short"] if seed % 2 and schema.get("short") else json.dumps(schema["json"])
                argv = [
                    *chatllm_argv(),
                    "extract",
                    "--schema",
                    shape,
                    "--jsonl",
                    "--temperature",
                    "1.5",
                    "--seed",
                    str(seed),
                    str(source),
                    *(["-m", str(model)] if model else []),
                ]
                done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
                lines = done.stdout.splitlines()
                for index in range(len(texts)):
                    asked += 1
                    line = lines[index] if index < len(lines) else ""
                    try:
                        validated(
                            line, schema["json"] if not (seed % 2 and schema.get("short")) else _short(schema["short"])
                        )
                        valid += 1
                    except Exception as error:  # noqa: BLE001 - every kind of failure counts
                        failures.append(f"{name} seed {seed}: {error}; stderr: {done.stderr.strip()[-200:]}")
                if asked >= runs:
                    break
    return {"runs": asked, "valid": valid, "failures": failures[:10]}


def _short(text: str) -> dict:
    from chatllm.jobs.schemas import short_schema

    return short_schema(text)


# ---------------------------------------------------------------- 2. classify


def first_label(reply: str, labels: list[str]) -> str | None:
    """llm-classify's reading of free text: the reply itself if it is a label,
    else the label that occurs first in it (case-insensitive), else None."""
    cleaned = reply.strip().strip(".\"'").casefold()
    for label in labels:
        if cleaned == label.casefold():
            return label
    found = [(cleaned.find(label.casefold()), label) for label in labels if label.casefold() in cleaned]
    return min(found)[1] if found else None


def classify_accuracy(model: Path | None) -> dict:
    from chatllm.engine.base import GenerationParams, Message
    from chatllm.jobs.classify import Classifier
    from chatllm.reply.meter import Meter

    data = yaml.safe_load((DATA / "classify.yaml").read_text(encoding="utf-8"))
    engine = load_engine(model)
    params = GenerationParams(temperature=0.0, max_tokens=24)
    result: dict = {"sets": {}}
    totals = {"calibrated": 0, "raw": 0, "free": 0, "free_outside": 0, "items": 0}
    for labelled in data["sets"]:
        labels = list(labelled["labels"])
        meter = Meter(engine)
        calibrated = Classifier(meter, tuple(labels), params, calibrate=True)
        raw = Classifier(meter, tuple(labels), params)
        counts = {"calibrated": 0, "raw": 0, "free": 0, "free_outside": 0}
        for item in labelled["items"]:
            counts["calibrated"] += calibrated.classify_one(item["text"]).labels[0] == item["label"]
            counts["raw"] += raw.classify_one(item["text"]).labels[0] == item["label"]
            reply = "".join(
                engine.stream([Message("system", calibrated.instruction), Message("user", item["text"])], params)
            )
            guess = first_label(reply, labels)
            counts["free"] += guess == item["label"]
            counts["free_outside"] += guess is None
        n = len(labelled["items"])
        result["sets"][labelled["name"]] = {**counts, "items": n}
        for key in counts:
            totals[key] += counts[key]
        totals["items"] += n
    result["total"] = totals
    engine.close()
    return result


# ---------------------------------------------------------------- 3. speed


def constrained_speed(model: Path | None, rounds: int = 5, threads: int | None = None) -> dict:
    """Decode rate of the same prompt and seed with and without a schema, one
    after the other in each round; tokens/s as the engine measures decode."""
    from chatllm.engine.base import GenerationParams, Message
    from chatllm.engine.grammar import json_schema_text

    engine = load_engine(model, threads)
    schema = {
        "type": "object",
        "properties": {
            "people": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer"},
                        "city": {"type": "string"},
                        "job": {"type": "string"},
                    },
                    "required": ["name", "age", "city", "job"],
                },
            }
        },
        "required": ["people"],
    }
    messages = [
        Message("system", "Extract every person as JSON."),
        Message(
            "user",
            "Maria Lopez, 34, lives in Valencia and works as a nurse. Her brother Juan, 29, is a "
            "cook in Madrid. Their friend Ana Ruiz, 41, teaches in Sevilla; her son Leo, 12, is at school.",
        ),
    ]
    ratios, constrained_rates, free_rates = [], [], []
    for seed in range(rounds):
        params = GenerationParams(temperature=0.8, max_tokens=160, seed=seed)
        "".join(engine.stream(messages, params))
        free = engine.last_stats.timings.decode_tokens_per_s
        "".join(
            engine.stream(
                messages,
                GenerationParams(temperature=0.8, max_tokens=160, seed=seed, json_schema=json_schema_text(schema)),
            )
        )
        constrained = engine.last_stats.timings.decode_tokens_per_s
        free_rates.append(free)
        constrained_rates.append(constrained)
        ratios.append(constrained / free)
    engine.close()
    ordered = sorted(ratios)
    return {
        "ratio_median": ordered[len(ordered) // 2],
        "ratios": ratios,
        "constrained_tokens_per_s": sorted(constrained_rates)[rounds // 2],
        "free_tokens_per_s": sorted(free_rates)[rounds // 2],
    }


# ---------------------------------------------------------------- report


def report(results: dict) -> str:
    lines = []
    if "extract" in results:
        e = results["extract"]
        lines += [
            "| extract at temperature 1.5 | valid JSON matching its schema |",
            "|---|---|",
            f"| {e['runs']} runs over {len(yaml.safe_load((DATA / 'extract.yaml').read_text(encoding='utf-8'))['texts'])} texts, 4 schemas (JSON Schema and short syntax) | {e['valid']}/{e['runs']} |",
            "",
        ]
    if "classify" in results:
        c = results["classify"]
        lines += [
            "| label set | items | chatllm, calibrated | chatllm (the default: uncalibrated) | free text, parsed | free text naming no label |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in {**c["sets"], "all": c["total"]}.items():
            n = s["items"]
            lines.append(
                f"| {name} | {n} | {s['calibrated'] / n:.0%} | {s['raw'] / n:.0%} | {s['free'] / n:.0%} | {s['free_outside'] / n:.0%} |"
            )
        lines.append("")
    if "speed" in results:
        s = results["speed"]
        lines += [
            "| decode | tok/s |",
            "|---|---|",
            f"| unconstrained | {s['free_tokens_per_s']:.1f} |",
            f"| under the schema | {s['constrained_tokens_per_s']:.1f} |",
            f"| ratio (median of rounds) | {s['ratio_median']:.3f} (target ≥ 0.9) |",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--only", action="append", choices=["classify", "extract", "speed"])
    args = parser.parse_args(argv)
    wanted = set(args.only or ["extract", "classify", "speed"])
    results: dict = {}
    if "speed" in wanted:
        results["speed"] = constrained_speed(args.model)
    if "classify" in wanted:
        results["classify"] = classify_accuracy(args.model)
    if "extract" in wanted:
        results["extract"] = extract_validity(args.model, args.runs)
    print(report(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
