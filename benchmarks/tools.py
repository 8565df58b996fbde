"""Tool calls on a model: do they parse and fit, are they right, and what do
declared tools cost in decode speed.

    python benchmarks/tools.py [--model PATH] [--llama-server BIN] [--temperatures 0 1.0] [--skip-server]
                               [--threads N] [--limit N] [--out FILE]

The set (benchmarks/data/tools/): four tools (tools.json) and 52 requests
(requests.jsonl) in English and Chinese: 40 that need a tool, each with the
expected tool and arguments, and 12 that need none. Each request goes to

* chatllm: its llama.cpp engine with the tools declared (the model's own
  chat template, the lazy grammar from the tools' schemas), and
* llama-server --jinja on the same GGUF, through its OpenAI API,

at each temperature (seed 1). Measures, for each:

* parse+fit: calls whose JSON parses and fits the tool's schema, of all the
  calls the model tried (a reply with `<tool_call>` or a tool's JSON left as
  text counts as a call that did not parse: the failure llama.cpp #21680
  and ollama #12064 report);
* right: requests that need a tool answered with a call of the expected tool
  with the expected arguments (strings compared without case or spacing);
* no-tool: requests that need none answered without a call;
* decode: tokens/s of a long answer with the tools declared and not called,
  against the same without tools, and against the tools' text in the prompt
  with no grammar (interleaved rounds, medians).

Run it alone (no other model process): it loads the model and starts
llama-server one after the other. Raw results: benchmarks/results/tools.json.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from chatllm.engine.base import EngineOptions, GenerationParams, Message, ToolSpec  # noqa: E402
from chatllm.hub.models import ResolvedModel, embedded_model_path  # noqa: E402
from chatllm.reply.events import ToolCall  # noqa: E402
from chatllm.reply.tool_loop import prompt_messages  # noqa: E402

DATA = ROOT / "data" / "tools"
SYSTEM = "You are a helpful assistant. Call a tool when the request needs one; otherwise answer directly and briefly."
MAX_TOKENS = 160
STORY = "Write a long story about a lighthouse keeper and her cat."


def load_set() -> tuple[list[dict], list[dict]]:
    tools = json.loads((DATA / "tools.json").read_text(encoding="utf-8"))
    requests = [json.loads(line) for line in (DATA / "requests.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return tools, requests


def tool_specs(tools: list[dict]) -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(t["function"]["name"], t["function"]["description"], json.dumps(t["function"]["parameters"]))
        for t in tools
    )


def unparsed_attempts(text: str, names: set[str]) -> int:
    """Calls left in a reply's text: `<tool_call>` blocks, or a JSON object naming a tool."""
    tagged = text.count("<tool_call>")
    named = len(re.findall(r'\{\s*"name"\s*:\s*"(' + "|".join(map(re.escape, names)) + ')"', text))
    return max(tagged, named)


def fits(call: tuple[str, Any], schemas: dict[str, dict]) -> bool:
    name, arguments = call
    if name not in schemas or not isinstance(arguments, dict):
        return False
    return not list(jsonschema.Draft202012Validator(schemas[name]).iter_errors(arguments))


def same(expected: Any, got: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(got, (int, float)) and float(got) == float(expected)
    norm = lambda v: re.sub(r"[\s_-]+", "", str(v)).casefold()  # noqa: E731
    return norm(expected) == norm(got)


def right(expected: dict | None, calls: list[tuple[str, Any]]) -> bool:
    if expected is None or len(calls) < 1:
        return False
    name, arguments = calls[0]
    wanted = expected["arguments"]
    return name == expected["name"] and all(same(v, (arguments or {}).get(k)) for k, v in wanted.items())


def score(results: list[dict], schemas: dict[str, dict]) -> dict[str, Any]:
    calls = sum(len(r["calls"]) + r["unparsed"] for r in results)
    fitting = sum(fits(c, schemas) for r in results for c in r["calls"])
    need = [r for r in results if r["expected"] is not None]
    none = [r for r in results if r["expected"] is None]
    return {
        "calls": calls,
        "parse_fit": fitting,
        "parse_fit_share": round(fitting / calls, 3) if calls else None,
        "right": sum(right(r["expected"], r["calls"]) for r in need),
        "of_right": len(need),
        "no_tool_ok": sum(not r["calls"] and not r["unparsed"] for r in none),
        "of_no_tool": len(none),
    }


# ---- chatllm ------------------------------------------------------------------------


def open_engine(model: Path, threads: int | None):
    from chatllm.engine.llama import LlamaEngine

    options = EngineOptions(n_ctx=4096, n_threads=threads)
    return LlamaEngine(ResolvedModel(reference=str(model), name=model.name, path=model), options)


def chatllm_run(engine, requests: list[dict], tools: tuple[ToolSpec, ...], temperature: float) -> list[dict]:
    names = {t.name for t in tools}
    results = []
    for request in requests:
        params = GenerationParams(temperature=temperature, seed=1, max_tokens=MAX_TOKENS, tools=tools)
        messages = prompt_messages([Message("system", SYSTEM), Message("user", request["question"])], params)
        events = list(engine.stream(messages, params))
        text = "".join(e for e in events if isinstance(e, str))
        calls = [(e.name, e.arguments) for e in events if isinstance(e, ToolCall)]
        results.append({**request, "calls": calls, "unparsed": unparsed_attempts(text, names), "text": text[:300]})
    return results


def decode_speed(engine, tools: tuple[ToolSpec, ...], rounds: int) -> dict[str, Any]:
    """Median decode tok/s (llama.cpp's work) and tokens per wall second of a
    long answer, with the tools declared (not called) and without; and with
    no tools but their description in the system message ("prompt_only"), so
    what the grammar costs is told apart from what a longer prompt costs (the
    model attends to the tools' text on every token)."""
    from chatllm.engine.tool_format import fallback_system

    rates: dict[str, list[float]] = {}
    described = f"{SYSTEM}\n\n{fallback_system(tools)}"
    called = 0
    for _ in range(rounds):
        for label, declared, system in (
            ("without", (), SYSTEM),
            ("with", tools, SYSTEM),
            ("prompt_only", (), described),
        ):
            messages = [Message("system", system), Message("user", STORY)]
            params = GenerationParams(temperature=0, max_tokens=128, tools=declared)
            started = time.perf_counter()
            events = list(engine.stream(messages, params))
            wall = time.perf_counter() - started - engine.last_stats.timings.ttft_s
            called += any(isinstance(e, ToolCall) for e in events)
            rates.setdefault(label, []).append(engine.last_stats.timings.decode_tokens_per_s)
            rates.setdefault(label + "_wall", []).append(
                max(engine.last_stats.usage.completion_tokens - 1, 0) / wall if wall > 0 else 0
            )
    medians = {key: round(statistics.median(values), 2) for key, values in rates.items()}
    medians["ratio"] = round(medians["with"] / medians["without"], 3) if medians["without"] else None
    medians["ratio_wall"] = (
        round(medians["with_wall"] / medians["without_wall"], 3) if medians["without_wall"] else None
    )
    medians["ratio_grammar"] = round(medians["with"] / medians["prompt_only"], 3) if medians["prompt_only"] else None
    medians["replies_that_called"] = called
    return medians


# ---- llama-server --jinja -----------------------------------------------------------


def start_server(binary: Path, model: Path, threads: int | None) -> tuple[subprocess.Popen, str]:
    from chatllm.engine.llama import weight_repacking_enabled

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [
        str(binary),
        "-m",
        str(model),
        "--jinja",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "4096",
        "-np",
        "1",
    ]
    if threads:
        argv += ["-t", str(threads), "-tb", str(threads)]
    if not weight_repacking_enabled():
        argv.append("--no-repack")  # AMX hosts (/work/shared/LLAMA-NOTES.md)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    raise SystemExit("llama-server did not start")


def server_run(url: str, requests: list[dict], tools: list[dict], temperature: float) -> list[dict]:
    names = {t["function"]["name"] for t in tools}
    results = []
    for request in requests:
        body = {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": request["question"]}],
            "tools": tools,
            "temperature": temperature,
            "seed": 1,
            "max_tokens": MAX_TOKENS,
        }
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=600).json()
        message = reply["choices"][0]["message"]
        calls = []
        for call in message.get("tool_calls") or []:
            try:
                arguments = json.loads(call["function"]["arguments"])
            except (json.JSONDecodeError, TypeError):
                arguments = None
            calls.append((call["function"]["name"], arguments))
        text = message.get("content") or ""
        results.append({**request, "calls": calls, "unparsed": unparsed_attempts(text, names), "text": text[:300]})
    return results


def server_decode_speed(url: str, tools: list[dict], rounds: int) -> dict[str, Any]:
    """llama-server's own decode tok/s (its `timings`) of the same long answer
    with the tools declared and without: what the longer prompt costs
    llama.cpp itself, beside chatllm's ratio."""
    rates: dict[str, list[float]] = {}
    called = 0
    for _ in range(rounds):
        for label, declared in (("without", None), ("with", tools)):
            body: dict[str, Any] = {
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": STORY}],
                "temperature": 0,
                "max_tokens": 128,
                "cache_prompt": False,
            }
            if declared:
                body["tools"] = declared
            reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=600).json()
            called += bool(reply["choices"][0]["message"].get("tool_calls"))
            rates.setdefault(label, []).append(reply["timings"]["predicted_per_second"])
            rates.setdefault(label + "_prompt_tokens", []).append(reply["usage"]["prompt_tokens"])
    medians: dict[str, Any] = {key: round(statistics.median(values), 2) for key, values in rates.items()}
    medians["ratio"] = round(medians["with"] / medians["without"], 3) if medians["without"] else None
    medians["replies_that_called"] = called
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a GGUF (default: the embedded model)")
    parser.add_argument("--llama-server", type=Path, default=ROOT / ".build" / "llama.cpp-cpu" / "bin" / "llama-server")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--speed-rounds", type=int, default=5)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-chatllm", action="store_true", help="only llama-server's rows")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for chatllm and llama-server (default: llama.cpp's)"
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="only the first N tool and N no-tool requests (a smoke run)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tools.json")
    options = parser.parse_args()
    model = (options.model or embedded_model_path()).resolve()
    tools, requests = load_set()
    if options.limit:
        requests = [r for r in requests if r["expected"]][: options.limit] + [r for r in requests if not r["expected"]][
            : options.limit
        ]
    specs = tool_specs(tools)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    report: dict[str, Any] = {"model": model.name, "requests": len(requests), "chatllm": {}, "llama_server": {}}
    if not options.skip_chatllm:
        chatllm_rows(report, model, options, requests, specs, schemas)
    if not options.skip_server and options.llama_server.is_file():
        process, url = start_server(options.llama_server, model, options.threads)
        try:
            scored(report, "llama_server", options.temperatures, lambda t: server_run(url, requests, tools, t), schemas)
            report["llama_server_decode"] = server_decode_speed(url, tools, options.speed_rounds)
            print(f"llama-server decode: {report['llama_server_decode']}", flush=True)
        finally:
            process.terminate()
            process.wait(30)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    print_table(report)


def scored(report: dict[str, Any], who: str, temperatures: list[float], run, schemas: dict[str, dict]) -> None:
    """`who`'s replies to the set at each temperature, scored, into `report`."""
    for temperature in temperatures:
        results = run(temperature)
        report[who][str(temperature)] = {"score": score(results, schemas), "results": results}
        print(f"{who} T={temperature}: {report[who][str(temperature)]['score']}", flush=True)


def chatllm_rows(report: dict[str, Any], model: Path, options: argparse.Namespace, requests, specs, schemas) -> None:
    engine = open_engine(model, options.threads)
    try:
        scored(report, "chatllm", options.temperatures, lambda t: chatllm_run(engine, requests, specs, t), schemas)
        report["decode"] = decode_speed(engine, specs, options.speed_rounds)
        print(f"decode: {report['decode']}", flush=True)
    finally:
        engine.close()


def print_table(report: dict[str, Any]) -> None:
    print(f"\n| {report['model']} | T | parse+fit | right tool+args | no tool when none needed |")
    print("|---|---|---|---|---|")
    for who in ("chatllm", "llama_server"):
        for temperature, run in report[who].items():
            s = run["score"]
            print(
                f"| {who} | {temperature} | {s['parse_fit']}/{s['calls']} | {s['right']}/{s['of_right']} | "
                f"{s['no_tool_ok']}/{s['of_no_tool']} |"
            )
    if "decode" in report:
        d = report["decode"]
        print(
            f"\ndecode tok/s without tools {d['without']}, with tools declared {d['with']} (x{d['ratio']}); "
            f"per wall second {d['without_wall']} vs {d['with_wall']} (x{d['ratio_wall']}); "
            f"the tools' text in the prompt and no grammar {d['prompt_only']} (with/that x{d['ratio_grammar']})"
        )
    if "llama_server_decode" in report:
        d = report["llama_server_decode"]
        print(
            f"llama-server decode tok/s without tools {d['without']}, with tools declared {d['with']} (x{d['ratio']}); "
            f"prompt tokens {d['without_prompt_tokens']} vs {d['with_prompt_tokens']}"
        )


if __name__ == "__main__":
    main()
