#!/usr/bin/env python3
"""`chatllm serve --parallel N` under load, against llama-server and llama-batched-bench (issue 24).

    python benchmarks/serve_load.py [--model PATH] [--threads N] [--repack auto|0|1]
        [--clients 1,2,4,8] [--ctx 1024] [--tokens 32] [--rounds 3]
        [--sections throughput,codes,persona,overload,hangups,malformed] [--no-llama-server]

On one GGUF, with the same threads and weight repacking for all three:

* throughput: for each N, N clients at once (httpx, streamed), each request a
  prompt of its own (nothing cached) and `--tokens` generated tokens:
  aggregate decode tok/s (every token after each request's first, over the
  time from the first first token to the last end) and median time to first
  token, for `chatllm serve --parallel N`
  and `llama-server -np N` (a slot of the same context each), beside
  `llama-batched-bench -npl N` (prompt 128, same tokens) as the ceiling;
* codes: 8 clients x 10 requests, each asking for its own code back;
* persona: 4 customers of the support persona at once (usage's cached tokens);
* overload: 200 requests at once on --parallel 4 --queue 16: how fast the
  excess hears 503 with Retry-After, nothing hangs, resident memory against
  the KV budget, still serving afterwards;
* hangups: 100 streamed requests whose clients hang up at random points:
  every slot free afterwards, a new request at normal speed;
* malformed: bad requests mixed into a load of good ones get OpenAI-shaped 4xx.

Run it only when no other model process is running (two llama.cpp processes
on 2 cores slow each other several times). Results go to
benchmarks/results/serve_load.json and a Markdown summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import BUILD_DIR, Sandbox, chatllm_argv  # noqa: E402

SECTIONS = ("throughput", "codes", "persona", "overload", "hangups", "malformed")
RESULTS = HERE / "results" / "serve_load.json"
PROMPT_TOKENS = 128  # llama-batched-bench's -npp, and about what each client's prompt takes
MB = 1024 * 1024
MODEL = "model"  # the GGUF file name, set by main(): chatllm serves it by that name, llama-server by any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repack", choices=["auto", "0", "1"], default="auto")
    parser.add_argument("--clients", default="1,2,4,8", help="concurrent clients for the throughput table")
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot (default 1024)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per request (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per N (default 3)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--no-llama-server", action="store_true", help="chatllm and batched-bench only")
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=BUILD_DIR / "llama.cpp-cpu" / "bin",
        help="where llama-server and llama-batched-bench are (default: benchmarks/.build/llama.cpp-cpu/bin)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


# ---- servers ---------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on a free port, ready once /health answers 200."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log or Path(f"/tmp/serve_load-{port}.log")
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[0]} not ready: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chatllm_server(args: argparse.Namespace, sandbox: Sandbox, parallel: int, queue: int = 16) -> Server:
    port = free_port()
    argv = [*chatllm_argv(), "serve", "--port", str(port), "-m", str(args.model)]
    argv += ["--parallel", str(parallel), "--queue", str(queue), "--ctx", str(args.ctx)]
    return Server(argv, port, env=sandbox.env())


def llama_server(args: argparse.Namespace, parallel: int) -> Server:
    port = free_port()
    argv = [str(args.bin_dir / "llama-server"), "-m", str(args.model), "--port", str(port)]
    argv += ["-np", str(parallel), "-c", str(args.ctx * parallel), "-t", str(args.threads), *repack_flags(args)]
    return Server(argv, port)


def repack_flags(args: argparse.Namespace) -> list[str]:
    return ["--repack"] if args.repacking else ["--no-repack"]


# ---- clients ---------------------------------------------------------------------------


def streamed(base: str, body: dict, client: httpx.Client) -> dict:
    """One streamed request: time to first content, end, tokens (from usage)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    began = time.perf_counter()
    first = None
    tokens = 0
    text = []
    with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return {"status": response.status_code, "error": response.read().decode()[:200]}
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    end = time.perf_counter()
    first = first or end
    rate = (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0
    return {
        "status": 200,
        "ttft_s": first - began,
        "tokens": tokens,
        "decode_tps": rate,
        "text": "".join(text),
        "first_at": first,
        "end_at": end,
    }


def at_once(calls: list) -> list:
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as error:  # a client error is a result, not a crash
            results[index] = {"status": 0, "error": f"{type(error).__name__}: {error}"}

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    return results


async def burst(port: int, path: str, bodies: list[dict]) -> list[dict]:
    """POST every body at once, each on a connection of its own, from one
    thread's event loop: what is timed (connect to the answer's last byte) is
    the server's doing. 200 Python threads, each building an httpx client, took
    ~0.3 s of this 2-core host's CPU before their requests left, and that
    counted as the server's refusal time."""
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data
        for data in (json.dumps(body).encode() for body in bodies)
    ]

    async def one(request: bytes) -> dict:
        began = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 900)).decode("latin-1")
            body = await reader.read()  # to the close
            writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
            return {"status": 0, "error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - began}
        lines = head.split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return {
            "status": int(lines[0].split()[1]),
            "seconds": time.perf_counter() - began,
            "retry_after": headers.get("Retry-After"),
            "code": (json.loads(body).get("error") or {}).get("code") if body.startswith(b"{") else None,
        }

    return list(await asyncio.gather(*(one(request) for request in requests)))


def numbers_prompt(nonce: str) -> dict:
    """A request that generates long text, its prompt about PROMPT_TOKENS tokens
    and unique (nothing cached between requests)."""
    filler = " ".join(f"{nonce}-{i}" for i in range(PROMPT_TOKENS // 5))
    return {
        "temperature": 0,
        "messages": [
            {"role": "system", "content": f"Session {nonce}. Notes: {filler}"},
            {"role": "user", "content": "Write the numbers from 1 to 300 separated by spaces."},
        ],
    }


def code_request(model: str, code: str) -> dict:
    return {
        "model": model,
        "temperature": 0,
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": "My order code is QWE12. What is my order code?"},
            {"role": "assistant", "content": "Your order code is QWE12."},
            {"role": "user", "content": f"My order code is {code}. What is my order code?"},
        ],
    }


# ---- sections ----------------------------------------------------------------------------


def batched_bench(args: argparse.Namespace, clients: list[int]) -> dict[int, float]:
    """llama-batched-bench's decode tok/s (S_TG) for each batch size."""
    binary = args.bin_dir / "llama-batched-bench"
    ctx = max(clients) * (PROMPT_TOKENS + args.tokens) + 256
    argv = [str(binary), "-m", str(args.model), "-c", str(ctx), "-t", str(args.threads), *repack_flags(args)]
    argv += ["-npp", str(PROMPT_TOKENS), "-ntg", str(args.tokens), "-npl", ",".join(map(str, clients))]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=3600).stdout
    rates = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            rates[int(cells[2])] = float(cells[7])
    return rates


def throughput_round(base: str, model: str, n: int, args: argparse.Namespace, tag: str, clients: list) -> dict:
    """N clients at once, each a prompt of its own: aggregate decode tok/s and the TTFTs."""
    bodies = [{**numbers_prompt(f"{tag}x{i}"), "model": model, "max_tokens": args.tokens} for i in range(n)]
    results = at_once([lambda b=b, c=c: streamed(base, b, c) for b, c in zip(bodies, clients)])
    ok = [r for r in results if r.get("status") == 200]
    # All the tokens after each first one, over the time from the first first
    # token to the last end: a client slow to read (a busy host) cannot make a
    # burst of late chunks look fast.
    span = max(r["end_at"] for r in ok) - min(r["first_at"] for r in ok)
    return {"rate": sum(r["tokens"] - 1 for r in ok) / span if span > 0 else 0.0, "ttfts": [r["ttft_s"] for r in ok]}


def section_throughput(args: argparse.Namespace, sandbox: Sandbox) -> dict:
    """For each N, both servers up at once and their rounds interleaved
    (chatllm, llama-server, chatllm, ...): this host's speed drifts by a
    third over minutes, and rounds run one server after the other compared
    a fast spell with a slow one."""
    clients = [int(n) for n in args.clients.split(",")]
    table: dict = {"batched_bench": batched_bench(args, clients), "chatllm": {}, "llama_server": {}}
    for n in clients:
        with contextlib.ExitStack() as stack:
            servers = {"chatllm": stack.enter_context(chatllm_server(args, sandbox, n, queue=0))}
            if not args.no_llama_server:
                servers["llama_server"] = stack.enter_context(llama_server(args, n))
            seen: dict = {name: {"rates": [], "ttfts": []} for name in servers}
            http = [httpx.Client(timeout=600) for _ in range(n)]
            for round_ in range(args.rounds + 1):  # the first round warms up
                for name, server in servers.items():
                    got = throughput_round(server.base, MODEL, n, args, f"{name[0]}{round_}", http)
                    if round_:
                        seen[name]["rates"].append(got["rate"])
                        seen[name]["ttfts"] += got["ttfts"]
            for client in http:
                client.close()
        for name, found in seen.items():
            table[name][n] = {
                "decode_tps": statistics.median(found["rates"]),
                "median_ttft_s": statistics.median(found["ttfts"]),
            }
        log(f"  N={n}: {table['chatllm'][n]} llama-server {table['llama_server'].get(n)}")
    return table


def section_codes(args: argparse.Namespace, sandbox: Sandbox) -> dict:
    with chatllm_server(args, sandbox, 4) as server:
        codes = [[f"{chr(65 + c)}{chr(75 + r)}{10 * c + r + 10}" for r in range(10)] for c in range(8)]

        def client(mine: list[str]) -> list:
            with httpx.Client(timeout=600) as http:
                return [
                    (code, http.post(f"{server.base}/v1/chat/completions", json=code_request(MODEL, code)))
                    for code in mine
                ]

        replies = [pair for batch in at_once([lambda m=m: client(m) for m in codes]) for pair in batch]
    every = [code for batch in codes for code in batch]
    errors = sum(1 for _, r in replies if r.status_code != 200)
    texts = [(code, r.json()["choices"][0]["message"]["content"]) for code, r in replies if r.status_code == 200]
    own = sum(1 for code, text in texts if code in text)
    crossed = sum(1 for code, text in texts if any(other in text for other in every if other != code))
    return {"requests": len(replies), "errors": errors, "own_code": own, "another_clients_code": crossed}


def section_persona(args: argparse.Namespace, sandbox: Sandbox) -> dict:
    questions = ["How long does shipping take?", "Can I return a product?", "Do you ship abroad?", "How do I pay?"]
    with chatllm_server(args, sandbox, 4) as server:
        body = lambda q: {"model": "support", "max_tokens": 48, "messages": [{"role": "user", "content": q}]}  # noqa: E731
        replies = at_once(
            [lambda q=q: httpx.post(f"{server.base}/v1/chat/completions", json=body(q), timeout=600) for q in questions]
        )
    usages = [r.json().get("usage", {}) if isinstance(r, httpx.Response) else {} for r in replies]
    return {
        "usage": [
            {"prompt": u.get("prompt_tokens"), "cached": (u.get("prompt_tokens_details") or {}).get("cached_tokens")}
            for u in usages
        ]
    }


def kv_budget_bytes(model: Path, cells: int) -> int:
    """What the KV cache of `cells` cells takes (f16 keys and values)."""
    import gguf

    reader = gguf.GGUFReader(str(model))
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")

    def value(key: str) -> int:
        field = reader.fields[f"{arch}.{key}"]
        return int(field.parts[-1][0])

    layers, heads, kv_heads = value("block_count"), value("attention.head_count"), value("attention.head_count_kv")
    head_dim = value("embedding_length") // heads
    return cells * layers * kv_heads * head_dim * 2 * 2


def section_overload(args: argparse.Namespace, sandbox: Sandbox) -> dict:
    parallel, queue = 4, 16
    with chatllm_server(args, sandbox, parallel, queue) as server:
        idle_rss = server.rss()
        peak = [idle_rss]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], server.rss())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()

        bodies = [{**code_request(MODEL, f"OV{i:03d}"), "max_tokens": 24} for i in range(200)]
        began = time.perf_counter()
        results = asyncio.run(burst(server.port, "/v1/chat/completions", bodies))
        wall = time.perf_counter() - began
        sampling.set()
        sampler.join()
        after = streamed(
            server.base, {**numbers_prompt("after"), "model": MODEL, "max_tokens": 64}, httpx.Client(timeout=300)
        )
        health = httpx.get(f"{server.base}/health").json()
    refused = [r for r in results if r and r["status"] == 503]
    return {
        "answered": sum(1 for r in results if r and r["status"] == 200),
        "refused_503": len(refused),
        "other": sorted({r["status"] for r in results if r and r["status"] not in (200, 503)}),
        "errors": sorted({r["error"][:120] for r in results if r and r.get("error")})[:5],
        "refused_with_retry_after": sum(1 for r in refused if r.get("retry_after")),
        "refusal_seconds_max": max((r["seconds"] for r in refused), default=0.0),
        "refusal_seconds_median": statistics.median([r["seconds"] for r in refused]) if refused else 0.0,
        # By why: too_many_connections (refused as accepted) or server_busy (queue full).
        "refusal_seconds_by_code": {
            code: [round(min(times), 3), round(statistics.median(times), 3), round(max(times), 3)]
            for code in sorted({r.get("code") or "" for r in refused})
            for times in [[r["seconds"] for r in refused if (r.get("code") or "") == code]]
        },
        "all_done_s": wall,
        "idle_rss_mb": idle_rss / MB,
        "peak_rss_mb": peak[0] / MB,
        "model_mb": args.model.stat().st_size / MB,
        "kv_budget_mb": kv_budget_bytes(args.model, args.ctx * (parallel + 2)) / MB,
        "after": {"status": after["status"], "decode_tps": after.get("decode_tps"), "slots": health["slots"]},
    }


def section_hangups(args: argparse.Namespace, sandbox: Sandbox) -> dict:
    with chatllm_server(args, sandbox, 4, queue=100) as server:
        client = httpx.Client(timeout=300)

        def decode_rate(tag: str) -> float:
            """Median decode tok/s of three requests, one at a time (one is too noisy a sample)."""
            rates = [
                streamed(server.base, {**numbers_prompt(f"{tag}{i}"), "model": MODEL, "max_tokens": 64}, client)
                for i in range(3)
            ]
            return statistics.median(r.get("decode_tps") or 0.0 for r in rates)

        before = decode_rate("b")
        rng = random.Random(24)

        def hang_up(i: int) -> int:
            body = {**numbers_prompt(f"h{i}"), "model": MODEL, "max_tokens": 200, "stream": True}
            stop_after = rng.randint(0, 40)
            seen = 0
            with (
                httpx.Client(timeout=300) as http,
                http.stream("POST", f"{server.base}/v1/chat/completions", json=body) as r,
            ):
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        seen += 1
                        if seen > stop_after:
                            break  # leaving the block closes the connection mid-reply
            return r.status_code

        statuses = []
        for start in range(0, 100, 10):  # ten clients at a time
            statuses += at_once([lambda i=i: hang_up(i) for i in range(start, start + 10)])
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.base}/health").json()["slots"]["busy"] and time.monotonic() < deadline:
            time.sleep(0.05)
        freed_s = 10 - (deadline - time.monotonic())
        health = httpx.get(f"{server.base}/health").json()
        after = decode_rate("a")
        client.close()
    # The same three requests on a new server: this host's speed drifts over
    # the minutes the hang-ups take, so "after" is judged against a server
    # measured at the same time that saw none of them.
    with chatllm_server(args, sandbox, 4, queue=100) as server:
        client = httpx.Client(timeout=300)
        fresh = decode_rate("f")
        client.close()
    return {
        "statuses": sorted(set(statuses)),
        "slots_after": health["slots"],
        "seconds_until_free": freed_s,
        "decode_tps_before": before,
        "decode_tps_after": after,
        "decode_tps_new_server": fresh,
    }


MALFORMED = [
    ("not JSON", b"{not json", {"Content-Type": "application/json"}),
    (
        "wrong type",
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).encode(),
        {"Content-Type": "application/json"},
    ),
    (
        "unknown model",
        json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {"Content-Type": "application/json"},
    ),
    ("no messages", json.dumps({"model": MODEL}).encode(), {"Content-Type": "application/json"}),
    (
        "NaN temperature",
        b'{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        {"Content-Type": "application/json"},
    ),
    (
        "text/plain",
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {"Content-Type": "text/plain"},
    ),
    (
        "foreign Host",
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {"Content-Type": "application/json", "Host": "attacker.example"},
    ),
]


def section_malformed(args: argparse.Namespace, sandbox: Sandbox) -> dict:
    with chatllm_server(args, sandbox, 4) as server:
        codes = [f"MX{n:02d}" for n in range(8)]
        good = [
            lambda c=c: httpx.post(f"{server.base}/v1/chat/completions", json=code_request(MODEL, c), timeout=600)
            for c in codes
        ]

        def bad(name: str, data: bytes, headers: dict) -> tuple[str, int, bool]:
            reply = httpx.post(f"{server.base}/v1/chat/completions", content=data, headers=headers, timeout=60)
            try:
                shaped = {"message", "type"} <= set(reply.json()["error"])
            except (ValueError, KeyError, TypeError):
                shaped = False
            return name, reply.status_code, shaped

        results = at_once([*good, *[lambda m=m: bad(*m) for m in MALFORMED]])
    answers = results[: len(codes)]
    return {
        "good_own_code": sum(
            1
            for c, r in zip(codes, answers)
            if isinstance(r, httpx.Response)
            and r.status_code == 200
            and c in r.json()["choices"][0]["message"]["content"]
        ),
        "good": len(codes),
        "bad": [{"case": n, "status": s, "openai_shaped": ok} for n, s, ok in results[len(codes) :]],
    }


# ---- report ----------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def report(results: dict) -> str:
    lines = [f"serve_load: {results['model']}, {results['threads']} threads, repack {results['repack']}", ""]
    table = results.get("throughput")
    if table:
        lines += [
            "| N | batched-bench decode tok/s | llama-server decode tok/s | chatllm decode tok/s | chatllm / bench | chatllm / server | TTFT llama-server | TTFT chatllm |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, ours in table["chatllm"].items():
            bench = row(table["batched_bench"], n)
            theirs = row(table["llama_server"], n) or {}
            ratio_bench = f"{ours['decode_tps'] / bench:.2f}" if bench else "-"
            ratio_server = f"{ours['decode_tps'] / theirs['decode_tps']:.2f}" if theirs else "-"
            server_tps = f"{theirs['decode_tps']:.1f}" if theirs else "-"
            server_ttft = f"{theirs['median_ttft_s'] * 1000:.0f} ms" if theirs else "-"
            lines.append(
                f"| {n} | {bench or '-'} | {server_tps} | {ours['decode_tps']:.1f} | {ratio_bench} | {ratio_server} | {server_ttft} | {ours['median_ttft_s'] * 1000:.0f} ms |"
            )
        lines.append("")
    for name in SECTIONS[1:]:
        if name in results:
            lines.append(f"{name}: {json.dumps(results[name])}")
    lines += ["", *(f"{'PASS' if ok else 'FAIL'}  {what}" for what, ok in verdicts(results))]
    return "\n".join(lines)


def row(table: dict, n: int | str):
    """The entry for N clients, whether the keys are numbers or (from JSON) text."""
    return table.get(int(n), table.get(str(n)))


def verdicts(results: dict) -> list[tuple[str, bool]]:
    """Issue 24's targets, each with whether this run met it."""
    found: list[tuple[str, bool]] = []
    table = results.get("throughput") or {}
    ours, theirs = row(table.get("chatllm", {}), 4), row(table.get("llama_server", {}), 4)
    bench = row(table.get("batched_bench", {}), 4)
    if ours and bench:
        found.append(("N=4 decode >= 0.9x llama-batched-bench", ours["decode_tps"] >= 0.9 * bench))
    if ours and theirs:
        found.append(("N=4 decode >= 0.9x llama-server", ours["decode_tps"] >= 0.9 * theirs["decode_tps"]))
        found.append(
            ("N=4 median TTFT <= llama-server's + 100 ms", ours["median_ttft_s"] <= theirs["median_ttft_s"] + 0.1)
        )
    if "codes" in results:
        codes = results["codes"]
        good = codes["errors"] == 0 and codes["own_code"] == codes["requests"] and not codes["another_clients_code"]
        found.append(("8 clients x 10 requests: each its own code, 0 errors", good))
    if "persona" in results:
        cached = sorted(u["cached"] or 0 for u in results["persona"]["usage"])
        found.append(
            (
                "4 persona customers: the prefix cached for the 3 that came after",
                cached[1] > 0 and cached[1] == cached[-1],
            )
        )
    if "overload" in results:
        over = results["overload"]
        found.append(
            (
                "200 at once: every refusal a 503 with Retry-After",
                over["refused_with_retry_after"] == over["refused_503"] and not over["other"],
            )
        )
        found.append(("200 at once: refused within 100 ms", over["refusal_seconds_max"] < 0.1))
        found.append(
            (
                "200 at once: RSS stays within what was allocated at start (+100 MB)",
                over["peak_rss_mb"] <= over["idle_rss_mb"] + 100,
            )
        )
        found.append(("200 at once: still serving afterwards", over["after"]["status"] == 200))
    if "hangups" in results:
        hang = results["hangups"]
        found.append(("100 hang-ups: every slot free afterwards", hang["slots_after"]["busy"] == 0))
        normal = hang.get("decode_tps_new_server") or hang["decode_tps_before"] or 0
        speed = (hang["decode_tps_after"] or 0) >= 0.9 * normal
        found.append(("100 hang-ups: a new request at normal speed (>= 0.9x a new server's, then)", speed))
    if "malformed" in results:
        bad = results["malformed"]
        shaped = all(400 <= b["status"] < 500 and b["openai_shaped"] for b in bad["bad"])
        found.append(("malformed requests under load: OpenAI-shaped 4xx", shaped))
        found.append(("good requests beside them: each its own code", bad["good_own_code"] == bad["good"]))
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is None:
        from chatllm.hub.models import embedded_model_path

        args.model = embedded_model_path()
    from chatllm.engine.llama import weight_repacking_enabled

    args.repacking = weight_repacking_enabled(None if args.repack == "auto" else args.repack == "1")
    busy = subprocess.run(
        ["pgrep", "-f", "llama-|chatllm (serve|chat|summarize|translate)"], capture_output=True, text=True
    )
    if busy.stdout.strip():
        log(f"Warning: other model processes are running ({busy.stdout.split()}); figures will be low.")
    import tempfile

    global MODEL
    MODEL = args.model.name
    results: dict = {"model": args.model.name, "threads": args.threads, "repack": args.repacking, "ctx": args.ctx}
    with tempfile.TemporaryDirectory() as root:
        sandbox = Sandbox(Path(root), args.threads, args.repacking)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        for name in args.sections.split(","):
            log(f"{name} ...")
            results[name] = globals()[f"section_{name}"](args, sandbox)
            log(f"  {json.dumps(results[name])[:400]}")
            args.output.write_text(json.dumps(results, indent=2) + "\n")  # each section kept as it ends
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
