"""The Markdown table of benchmarks/run.py: one row per target of issue 4."""

from __future__ import annotations

from statistics import median

MB = 1024 * 1024
NOISE = 0.10  # a sample during which other processes used more CPU than this is flagged


def _verdict(ok: bool | None, noisy: bool = False) -> str:
    text = "n/a" if ok is None else ("PASS" if ok else "FAIL")
    return f"{text} (noisy)" if noisy else text


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


def _same_library_row(
    one: dict, what: str, ours: str, test: str, reference: str, ratios: str, build: str
) -> list[tuple[str, ...]]:
    """The info row against llama-bench on llama-cpp-python's own libraries (when run)."""
    if not one.get(ratios):
        return []
    return [
        (
            f"1 {what} vs llama-bench on chatllm's own libllama",
            f"{one[ours]:.1f} tok/s",
            f"{test}: {one[reference]:.1f} tok/s (that build: {median(one[build]):.3f} of the static one)",
            f"{median(one[ratios]):.3f} paired",
            "(info)",
            "info",
        )
    ]


def _one_shot_rows(r: dict) -> list[tuple[str, ...]]:
    one = r["one_shot"]
    prompt = one["prompt_tokens"]
    rows = []
    paired = median(one["decode_ratio_per_round"])
    rows.append(
        (
            "1 decode",
            f"{one['chatllm_decode']:.1f} tok/s",
            f"tg128 @ d{prompt}: {one['bench_tg']:.1f} tok/s",
            f"{paired:.3f} paired ({one['chatllm_decode'] / one['bench_tg']:.3f} of medians)",
            "≥ 0.97",
            _verdict(paired >= 0.97),
        )
    )
    rows += _same_library_row(
        one,
        "decode",
        "chatllm_decode",
        f"tg128 @ d{prompt}",
        "bench_tg_same_library",
        "decode_ratio_same_library_per_round",
        "same_library_vs_static_per_round",
    )
    effective = one.get("decode_with_python_tokens_per_s")
    if effective:
        rows.append(
            (
                "1 decode incl. per-token Python",
                f"{effective:.1f} tok/s",
                f"tg128 @ d{prompt}: {one['bench_tg']:.1f} tok/s",
                f"{effective / one['bench_tg']:.3f}",
                "(info)",
                "info",
            )
        )
    guards = one.get("guards")
    if guards:
        step_us = 1e6 / one["chatllm_decode"]
        share = guards["us_per_token"] / step_us
        rows.append(
            (
                "1 repetition guard + grounding per token",
                f"{guards['us_per_token']:.1f} µs",
                f"decode step {step_us:.0f} µs",
                f"{share:.2%}",
                "< 1%",
                _verdict(share < 0.01),
            )
        )
    constrained = one.get("constrained")
    if constrained:
        rows.append(
            (
                "1 constrained decode (JSON schema)",
                f"{constrained['constrained_tokens_per_s']:.1f} tok/s",
                f"unconstrained, same prompt: {constrained['free_tokens_per_s']:.1f} tok/s",
                f"{constrained['ratio_median']:.3f} paired",
                "≥ 0.90",
                _verdict(constrained["ratio_median"] >= 0.90),
            )
        )
    paired = median(one["prefill_ratio_per_round"])
    rows.append(
        (
            "1 prefill",
            f"{one['chatllm_prefill']:.1f} tok/s",
            f"pp{prompt}: {one['bench_pp']:.1f} tok/s",
            f"{paired:.3f} paired ({one['chatllm_prefill'] / one['bench_pp']:.3f} of medians)",
            "≥ 0.95",
            _verdict(paired >= 0.95),
        )
    )
    rows += _same_library_row(
        one,
        "prefill",
        "chatllm_prefill",
        f"pp{prompt}",
        "bench_pp_same_library",
        "prefill_ratio_same_library_per_round",
        "pp_same_library_vs_static_per_round",
    )

    overhead = one["ttft_overhead_own_s"]
    rows.append(
        (
            "2 TTFT overhead (in process)",
            f"TTFT {_ms(one['ttft_s'])}",
            f"own prefill {_ms(one['ttft_s'] - overhead)}",
            _ms(overhead),
            "< 50 ms",
            _verdict(overhead < 0.050),
        )
    )
    overhead = one["ttft_overhead_ref_s"]
    rows.append(
        (
            "2 TTFT vs llama.cpp prefill",
            f"TTFT {_ms(one['ttft_s'])}",
            f"pp{prompt} time {_ms(one['ttft_s'] - overhead)}",
            _ms(overhead),
            "< 50 ms",
            _verdict(overhead < 0.050),
        )
    )
    if "terminal_first_text_minus_cli_s" in one:
        overhead = one["terminal_first_text_minus_cli_s"]
        rows.append(
            (
                "2 first text on a terminal vs llama.cpp's CLI",
                f"spawn→1st text {_ms(one['terminal_first_text_s'])}",
                f"llama-completion spawn→1st text {_ms(one['cli_terminal_first_text_s'])} "
                f"({one['cli_prompt_tokens']} prompt tokens)",
                f"{_ms(overhead)} paired",
                "< 50 ms",
                _verdict(overhead < 0.050),
            )
        )
    if "first_byte_minus_cli_s" in one:
        overhead = one["first_byte_minus_cli_s"]
        rows.append(
            (
                "2 first byte into a pipe vs llama.cpp's CLI",
                f"spawn→1st byte {_ms(one['first_byte_s'])}",
                f"llama-completion spawn→1st byte {_ms(one['cli_first_byte_s'])} ({one['cli_prompt_tokens']} prompt tokens)",
                f"{_ms(overhead)} paired",
                "(info: a pipe gets checked sentences only)",
                "info",
            )
        )
    overhead = one["command_overhead_ref_s"]
    rows.append(
        (
            "2 spawn→1st byte minus chatllm's load and llama-bench's pp",
            f"spawn→1st byte {_ms(one['first_byte_s'])}",
            f"load {_ms(one['load_s'])} + pp {_ms(prompt / one['bench_pp'])}",
            _ms(overhead),
            "(info: Python start, imports)",
            "info",
        )
    )
    rows.append(
        (
            "2 whole command",
            f"wall {_ms(one['wall_s'])}",
            "load + prefill + decode",
            _ms(one["wall_overhead_s"]),
            "(info)",
            "info",
        )
    )
    return rows


def _startup_rows(r: dict) -> list[tuple[str, ...]]:
    startup = r["startup"]
    reference = startup["python -c pass"]["median_s"]
    rows = []
    for name, data in startup.items():
        if name in ("python -c pass", "completion_output"):
            continue
        note = "" if data["returncode"] == 0 else f" (exit {data['returncode']})"
        rows.append(
            (
                f"3 {name}",
                _ms(data["median_s"]) + note,
                f"python -c pass {_ms(reference)}",
                f"{data['median_s'] / reference:.1f}×",
                "< 150 ms",
                _verdict(data["median_s"] < 0.150),
            )
        )
    return rows


def _chat_rows(r: dict) -> list[tuple[str, ...]]:
    chat = r["chat"]
    ttfts = ", ".join(f"{t['ttft_s'] * 1000:.0f}" for t in chat)
    reused = ", ".join(f"{t['cached_prompt_tokens']}/{t['prompt_tokens']}" for t in chat)
    only_new = all(chat[i]["cached_prompt_tokens"] >= chat[i - 1]["prompt_tokens"] for i in range(1, len(chat)))
    rows = [
        (
            "4 chat TTFT per turn (ms)",
            ttfts,
            f"reused/prompt tokens: {reused}",
            "",
            "turn N evaluates only what is new since N-1",
            _verdict(only_new),
        )
    ]
    later = [t for t in chat[1:] if "overhead_s" in t]
    if later:
        reference = ", ".join(f"{t['bench_prefill_s'] * 1000:.0f}" for t in later)
        overheads = [t["overhead_s"] for t in later]
        rows.append(
            (
                "4 chat TTFT − llama.cpp (turns 2..N)",
                ", ".join(f"{o * 1000:.0f}" for o in overheads) + " ms",
                f"llama-bench pp(new) @ d(reused): {reference} ms",
                f"max {_ms(max(overheads))}",
                "flat overhead < 50 ms",
                _verdict(max(overheads) < 0.050),
            )
        )
        last, rate = chat[-1], chat[0]["prefill_tokens_per_s"]  # turn 1: a prompt evaluated from scratch
        if rate:
            full = last["prompt_tokens"] / rate
            rows.append(
                (
                    "4 chat turn N vs no KV reuse",
                    f"TTFT {_ms(last['ttft_s'])}",
                    f"all {last['prompt_tokens']} tokens at {rate:.0f} tok/s ≈ {_ms(full)}",
                    f"{last['ttft_s'] / full:.2f}",
                    "(info)",
                    "info",
                )
            )
    return rows


def _persona_rows(r: dict) -> list[tuple[str, ...]]:
    pairs = r["persona"]["pairs"]
    cold = median(p["cold"]["ttft_s"] for p in pairs)
    warm = median(p["warm"]["ttft_s"] for p in pairs)
    warm_reused = median(p["warm"]["cached_prompt_tokens"] for p in pairs)
    prompt_tokens = median(p["warm"]["prompt_tokens"] for p in pairs)
    cold_wall = median(p["cold"]["wall_s"] for p in pairs)
    warm_wall = median(p["warm"]["wall_s"] for p in pairs)
    rows = []
    if all("overhead_s" in p["warm"] for p in pairs):
        overhead = median(p["warm"]["overhead_s"] for p in pairs)
        bench_s = median(p["warm"]["bench_prefill_s"] for p in pairs)
        new = median(p["warm"]["uncached_tokens"] for p in pairs)
        calls = pairs[0]["warm"].get("calls", 1)
        judged = " (coverage judgement + reply)" if calls > 1 else ""
        rows.append(
            (
                "5 warm persona TTFT − llama.cpp's prefill of its uncached tokens",
                f"TTFT {_ms(warm)}",
                f"llama-bench pp{new:.0f}{judged} @ d(cached): {_ms(bench_s)}",
                _ms(overhead),
                "< 100 ms",
                _verdict(overhead < 0.100),
            )
        )
    return rows + [
        (
            "5 persona + big_faq TTFT",
            f"2nd run {_ms(warm)} (reused {warm_reused:.0f}/{prompt_tokens:.0f})",
            f"1st run {_ms(cold)}",
            f"{warm / cold:.3f}",
            "≤ 0.25",
            _verdict(warm / cold <= 0.25),
        ),
        (
            "5 persona whole command",
            f"2nd run {_ms(warm_wall)}",
            f"1st run {_ms(cold_wall)}",
            f"{warm_wall / cold_wall:.3f}",
            "(info)",
            "info",
        ),
    ]


def _long_rows(r: dict) -> list[tuple[str, ...]]:
    long = r.get("long")
    if not long:
        return [("6 long input", "skipped (--skip-long/--quick)", "", "", "≥ 0.90", "skipped")]
    ratio = long["throughput_ratio"]
    noisy = max(long.get("foreign_cpu", 0), long.get("bench_foreign_cpu", 0)) > NOISE
    part = long["mean_part_tokens"]
    return [
        (
            "6 long input",
            f"{long['document_tokens']} tok in {long['chatllm_total_s']:.1f} s (+load {long['chatllm_load_s']:.2f} s)",
            f"raw {long['raw_s']:.1f} s ({long['evaluated_tokens']} tok at pp{part} {long['bench_pp_tokens_per_s']:.0f} tok/s + "
            f"{long['completion_tokens']} tok at tg@d{part} {long['bench_tg_tokens_per_s']:.0f} tok/s)",
            f"{ratio:.3f}",
            "≥ 0.90",
            _verdict(ratio >= 0.90, noisy),
        )
    ]


def _memory_rows(r: dict) -> list[tuple[str, ...]]:
    memory = r["memory"]
    rss = r["one_shot"]["max_rss_bytes"]
    return [
        (
            "7 peak RSS (one-shot)",
            f"{rss / MB:.0f} MB",
            f"model {memory['model_bytes'] / MB:.0f} + KV({memory['n_ctx']}) {memory['kv_bytes'] / MB:.0f} + 150 MB",
            f"{rss / memory['budget_bytes']:.2f}",
            f"≤ {memory['budget_bytes'] / MB:.0f} MB",
            _verdict(rss <= memory["budget_bytes"]),
        )
    ]


def render_table(r: dict) -> str:
    rows: list[tuple[str, ...]] = []
    for key, build in (
        ("one_shot", _one_shot_rows),
        ("startup", _startup_rows),
        ("chat", _chat_rows),
        ("persona", _persona_rows),
        ("long", _long_rows),
        ("memory", _memory_rows),
    ):
        if key in r or key == "long":
            rows += build(r)
    gpu = r.get("gpu", {})
    rows.append(
        (
            "8 GPU decode",
            "skipped: no GPU" if not gpu.get("supported") else "see gpu",
            "",
            "",
            "≥ 0.95",
            "skipped" if not gpu.get("supported") else "n/a",
        )
    )

    header = ("Target", "chatllm", "llama.cpp / reference", "ratio / overhead", "target", "result")
    dates = sorted(set(r.get("section_dates", {}).values()) | {r["date"]})
    lines = [
        f"Model {r['model'].rsplit('/', 1)[-1]}, {r['threads']} threads, repack {'on' if r['repack'] else 'off'}, "
        f"flash attention {r.get('flash_attn', 'auto')}, "
        f"llama-cpp-python {r['llama_cpp_python']}, {r.get('one_shot', {}).get('rounds', r['runs'])} interleaved rounds "
        f"(medians), {r['machine']['cpu']}, "
        f"{' / '.join(dates)}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":  # python benchmarks/report.py [results.json]: print the table again
    import json
    import sys
    from pathlib import Path

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results" / "latest.json"
    print(render_table(json.loads(source.read_text(encoding="utf-8"))))
