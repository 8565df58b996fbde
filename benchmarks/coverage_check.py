"""How well a model's own yes/no judgement tells covered questions from
uncovered ones (chatllm/jobs/coverage.py), on the support sets of
benchmarks/data/quality, in process, without generating any reply.

    python benchmarks/coverage_check.py                        # the embedded model
    python benchmarks/coverage_check.py -m qwen2.5-coder:1.5b
    python benchmarks/coverage_check.py -m qwen2.5-coder:1.5b --set support-heldout

It builds the support persona as `chatllm chat -p support --kb KNOWLEDGE`
does for that model, prints the judge's calibration (its probes' mean
margins, the threshold, whether the model can judge at all), then for every
question the margin log P(yes) - log P(no), and for the calibrated threshold
and a range of others how many covered questions would keep their answer and
how many uncovered ones would get the handover. Writes every margin to
benchmarks/results/coverage-<model>-<set>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from chatllm.config.settings import load_settings  # noqa: E402
from chatllm.engine import Message, engine_options, open_engine  # noqa: E402
from chatllm.hub.models import resolve_model  # noqa: E402
from chatllm.jobs.coverage import margin  # noqa: E402
from chatllm.jobs.model_fit import is_tiny  # noqa: E402
from chatllm.jobs.persona import build_persona, choose_knowledge  # noqa: E402
from chatllm.templates import load_template  # noqa: E402

DATA = HERE / "data" / "quality"
RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default=None, help="chatllm -m reference (default: the embedded model)")
    parser.add_argument(
        "--set", default="support", help="folder under benchmarks/data/quality (support, support-heldout)"
    )
    parser.add_argument("--knowledge", default="auto", choices=["auto", "whole", "search"])
    args = parser.parse_args(argv)

    model = resolve_model(args.model, default=None, allow_download=False)
    options = replace(engine_options(load_settings()), state_cache_dir=None)
    engine = open_engine(model, options)
    folder = DATA / args.set
    template = load_template("support")
    persona = build_persona(
        template,
        template.resolve_variables({}),
        engine,
        choose_knowledge(template, [folder / "knowledge.md"]),
        mode=args.knowledge,
        tiny_model=is_tiny(model.path),
    )
    if persona.coverage is None:
        raise SystemExit("this persona has no coverage judge here (its knowledge is searched, not given whole)")
    started = time.perf_counter()
    calibration = persona.coverage.calibrate(engine)
    print(
        f"calibration: covered probes {calibration.covered_mean:+.2f}, uncovered probes {calibration.uncovered_mean:+.2f}, "
        f"threshold {calibration.threshold:+.2f}, {'judges' if calibration.usable else 'cannot judge'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    rows = []
    for question in yaml.safe_load((folder / "questions.yaml").read_text(encoding="utf-8")):
        messages = [Message("system", persona.system), Message("user", persona.render_user(question["question"]))]
        started = time.perf_counter()
        value = margin(engine, messages)
        seconds = time.perf_counter() - started
        rows.append({"id": question["id"], "covered": question["covered"], "margin": round(value, 3)})
        print(f"{question['id']:32} covered={question['covered']!s:5} margin={value:+6.2f} ({seconds:.1f} s)")
    covered = [r["margin"] for r in rows if r["covered"]]
    uncovered = [r["margin"] for r in rows if not r["covered"]]
    print("\n| threshold | covered kept | uncovered caught |\n|---|---|---|")
    for threshold in sorted({calibration.threshold, *[t / 2 for t in range(-4, 7)]}):
        mark = " (calibrated)" if threshold == calibration.threshold else ""
        kept = sum(1 for m in covered if m >= threshold)
        caught = sum(1 for m in uncovered if m < threshold)
        print(f"| {threshold:+.2f}{mark} | {kept}/{len(covered)} | {caught}/{len(uncovered)} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"calibration": vars(calibration), "margins": rows}
    name = Path(str(model.path)).stem
    (RESULTS / f"coverage-{name}-{args.set}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
