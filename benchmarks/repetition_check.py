"""How chatllm's repetition guard (chatllm/jobs/repetition.py) does on text
whose answer is known, in both of its modes:

* legitimate text that must pass whole: the guard/ replies with repeated
  structure (lists, tables, code, refrains), every summarization input and
  every translation source and reference of benchmarks/data/quality;
* replies of a run made before the guard existed (quality.py's replies, kept
  in benchmarks/data/quality/unguarded-replies.jsonl; or any quality-*.jsonl
  from benchmarks/results given as arguments): how many the guard stops, and
  whether what it keeps still repeats itself by quality.py's independent bar (a repeated 8-word or 16-CJK-character span).

    python benchmarks/repetition_check.py [REPLIES.jsonl ...]

Each text is fed in pieces of 1, 3 and 7 characters, as a stream would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import quality_metrics as measure  # noqa: E402

from chatllm.jobs.repetition import RepetitionGuard, repeats_in  # noqa: E402

DATA = HERE / "data" / "quality"
MODES = ("strict", "loops")


def guard_text(text: str, mode: str, allowed: int = 1, step: int = 3) -> tuple[str, str | None]:
    guard = RepetitionGuard(mode=mode, allowed=allowed)
    shown = []
    for start in range(0, len(text), step):
        shown.append(guard.feed(text[start : start + step]))
        if guard.tripped:
            break
    shown.append(guard.finish())
    return "".join(shown), guard.tripped


def legitimate_texts() -> list[tuple[str, str, int]]:
    """(name, text, allowed) of text the guard must leave whole."""
    texts = [(f"guard/{p.name}", p.read_text(encoding="utf-8"), 1) for p in sorted((DATA / "guard").glob("[0-9]*.md"))]
    for entry in yaml.safe_load((DATA / "summarize" / "index.yaml").read_text(encoding="utf-8")):
        texts.append(
            (f"summarize/{entry['file']}", (DATA / "summarize" / entry["file"]).read_text(encoding="utf-8"), 1)
        )
    for pair in yaml.safe_load((DATA / "translate" / "pairs.yaml").read_text(encoding="utf-8")):
        allowed = repeats_in(pair["source"])  # what translate gives the guard
        texts.append((f"translate/{pair['id']} source", pair["source"], allowed))
        texts.append((f"translate/{pair['id']} reference", pair["reference"], allowed))
    return texts


def main(argv: list[str]) -> None:
    texts = legitimate_texts()
    print(f"## Legitimate text ({len(texts)} texts): cut by the guard\n")
    print("| mode | texts cut | which |\n|---|---|---|")
    for mode in MODES:
        cut = []
        for name, text, allowed in texts:
            for step in (1, 3, 7):
                shown, tripped = guard_text(text, mode, allowed, step)
                if tripped or shown != text:
                    cut.append(f"{name} ({tripped or 'changed'})")
                    break
        print(f"| {mode} | {len(cut)}/{len(texts)} | {'; '.join(cut) or '–'} |")
    files = [Path(a) for a in argv] or [DATA / "unguarded-replies.jsonl"]
    replies = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]
    replies = [r for r in replies if r["reply"]["text"].strip()]
    if not replies:
        return
    looping = [r for r in replies if measure.repeated_span(r["reply"]["text"])]
    print(f"\n## Replies of an unguarded run ({len(replies)} replies, {len(looping)} repeat themselves by the bar)\n")
    print(
        "| mode | looping replies stopped | kept text still repeats | other replies stopped | kept share of looping replies (median) |"
    )
    print("|---|---|---|---|---|")
    for mode in MODES:
        stopped = still = other = 0
        kept = []
        for reply in replies:
            text = reply["reply"]["text"]
            shown, tripped = guard_text(text, mode)
            if reply in looping:
                stopped += bool(tripped)
                still += bool(measure.repeated_span(shown))
                kept.append(len(shown) / len(text))
            else:
                other += bool(tripped)
        print(
            f"| {mode} | {stopped}/{len(looping)} | {still} | {other}/{len(replies) - len(looping)} | {measure.median(kept):.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
