"""The Markdown table of benchmarks/run.py: one row per target of issue 4."""

from __future__ import annotations

from statistics import median

MB = 1024 * 1024


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


def render_table(r: dict) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = []
    one = r["one_shot"]
    prompt = one["prompt_tokens"]

    ratio = one["chatllm_decode"] / one["bench_tg"]
    rows.append(("1 decode", f"{one['chatllm_decode']:.1f} tok/s", f"tg{128} @ d{prompt}: {one['bench_tg']:.1f} tok/s",
                 f"{ratio:.3f}", "≥ 0.97", _verdict(ratio >= 0.97)))
    ratio = one["chatllm_prefill"] / one["bench_pp"]
    rows.append(("1 prefill", f"{one['chatllm_prefill']:.1f} tok/s", f"pp{prompt}: {one['bench_pp']:.1f} tok/s",
                 f"{ratio:.3f}", "≥ 0.95", _verdict(ratio >= 0.95)))

    overhead = one["ttft_overhead_own_s"]
    rows.append(("2 TTFT overhead (in process)", f"TTFT {_ms(one['ttft_s'])}", f"own prefill {_ms(one['ttft_s'] - overhead)}",
                 _ms(overhead), "< 50 ms", _verdict(overhead < 0.050)))
    overhead = one["ttft_overhead_ref_s"]
    rows.append(("2 TTFT vs llama.cpp prefill", f"TTFT {_ms(one['ttft_s'])}", f"pp{prompt} time {_ms(one['ttft_s'] - overhead)}",
                 _ms(overhead), "< 50 ms", _verdict(overhead < 0.050)))
    overhead = one["command_overhead_ref_s"]
    rows.append(("2 first token on the command line", f"spawn→1st byte {_ms(one['first_byte_s'])}",
                 f"load {_ms(one['load_s'])} + pp {_ms(prompt / one['bench_pp'])}",
                 _ms(overhead), "< 50 ms (incl. interpreter start)", _verdict(overhead < 0.050)))
    rows.append(("2 whole command", f"wall {_ms(one['wall_s'])}", "load + prefill + decode",
                 _ms(one["wall_overhead_s"]), "(info)", "info"))

    startup = r["startup"]
    reference = startup["python -c pass"]["median_s"]
    for name, data in startup.items():
        if name in ("python -c pass", "completion_output"):
            continue
        note = "" if data["returncode"] == 0 else f" (exit {data['returncode']})"
        rows.append((f"3 {name}", _ms(data["median_s"]) + note, f"python -c pass {_ms(reference)}",
                     f"{data['median_s'] / reference:.1f}×", "< 150 ms", _verdict(data["median_s"] < 0.150)))

    chat = r["chat"]
    ttfts = ", ".join(f"{t['ttft_s'] * 1000:.0f}" for t in chat)
    reused = ", ".join(f"{t['cached_prompt_tokens']}/{t['prompt_tokens']}" for t in chat)
    only_new = all(chat[i]["cached_prompt_tokens"] >= chat[i - 1]["prompt_tokens"] for i in range(1, len(chat)))
    later = [t["ttft_s"] for t in chat[1:]]
    flat = bool(later) and chat[-1]["ttft_s"] <= 1.5 * later[0] + 0.05
    rows.append(("4 chat TTFT per turn (ms)", ttfts, f"reused/prompt: {reused}",
                 f"last/turn2 {chat[-1]['ttft_s'] / later[0]:.2f}" if later else "–",
                 "flat; only new tokens evaluated", _verdict(only_new and flat)))

    pairs = r["persona"]["pairs"]
    cold = median(p["cold"]["ttft_s"] for p in pairs)
    warm = median(p["warm"]["ttft_s"] for p in pairs)
    warm_reused = median(p["warm"]["cached_prompt_tokens"] for p in pairs)
    prompt_tokens = median(p["warm"]["prompt_tokens"] for p in pairs)
    rows.append(("5 persona + big_faq TTFT", f"2nd run {_ms(warm)} (reused {warm_reused:.0f}/{prompt_tokens:.0f})",
                 f"1st run {_ms(cold)}", f"{warm / cold:.3f}", "≤ 0.25", _verdict(warm / cold <= 0.25)))
    cold_wall = median(p["cold"]["wall_s"] for p in pairs)
    warm_wall = median(p["warm"]["wall_s"] for p in pairs)
    rows.append(("5 persona whole command", f"2nd run {_ms(warm_wall)}", f"1st run {_ms(cold_wall)}",
                 f"{warm_wall / cold_wall:.3f}", "(info)", "info"))

    long = r.get("long")
    if long:
        ratio = long["throughput_ratio"]
        rows.append(("6 long input", f"{long['document_tokens']} tok in {long['chatllm_total_s']:.1f} s "
                     f"(+load {long['chatllm_load_s']:.2f} s)",
                     f"raw {long['raw_s']:.1f} s (pp{long['mean_part_tokens']} {long['bench_pp_tokens_per_s']:.0f}, "
                     f"tg@d{long['mean_part_tokens']} {long['bench_tg_tokens_per_s']:.0f} tok/s)",
                     f"{ratio:.3f}", "≥ 0.90", _verdict(ratio >= 0.90)))
    else:
        rows.append(("6 long input", "skipped (--skip-long/--quick)", "", "", "≥ 0.90", "skipped"))

    memory = r["memory"]
    rss = r["one_shot"]["max_rss_bytes"]
    rows.append(("7 peak RSS (one-shot)", f"{rss / MB:.0f} MB",
                 f"model {memory['model_bytes'] / MB:.0f} + KV({memory['n_ctx']}) {memory['kv_bytes'] / MB:.0f} + 150 MB",
                 f"{rss / memory['budget_bytes']:.2f}", f"≤ {memory['budget_bytes'] / MB:.0f} MB",
                 _verdict(rss <= memory["budget_bytes"])))

    gpu = r.get("gpu", {})
    rows.append(("8 GPU decode", "skipped: no GPU" if not gpu.get("supported") else "see gpu", "", "", "≥ 0.95",
                 "skipped" if not gpu.get("supported") else "n/a"))

    header = ("Target", "chatllm", "llama.cpp / reference", "ratio / overhead", "target", "result")
    lines = [
        f"Model {r['model'].rsplit('/', 1)[-1]}, {r['threads']} threads, repack {'on' if r['repack'] else 'off'}, "
        f"llama-cpp-python {r['llama_cpp_python']}, {r['runs']} interleaved rounds (medians), {r['machine']['cpu']}, {r['date']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
