"""Where restoring a saved prompt prefix from disk beats evaluating it: the
measurement behind MIN_PREFIX_TOKENS (chatllm/engine/state_cache.py).

    python benchmarks/prefix_reuse.py                          # the embedded model
    python benchmarks/prefix_reuse.py -m qwen2.5-coder:1.5b --sizes 8,16,32,64,128,256,512

For each prefix size N, in one process on the same context: evaluate N tokens
from an empty KV cache (what a process without the file does), save that
state to a file (what the first process pays once), empty the cache and load
the file (what every later process does, footer check included), with the
same PrefixStateCache chatllm uses. Medians of --runs rounds, as a Markdown
table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from corpus import prose  # noqa: E402

from chatllm.config.settings import load_settings  # noqa: E402
from chatllm.engine import engine_options  # noqa: E402
from chatllm.engine.llama import LlamaEngine  # noqa: E402
from chatllm.engine.state_cache import PrefixStateCache  # noqa: E402
from chatllm.hub.models import resolve_model  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default=None)
    parser.add_argument("--sizes", default="8,16,32,64,128,256")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    model = resolve_model(args.model, default=None, allow_download=False)
    with tempfile.TemporaryDirectory(prefix="chatllm-prefix-") as folder:
        options = replace(engine_options(load_settings()), state_cache_dir=None, n_ctx=2048)
        engine = LlamaEngine(model, options)
        cache = PrefixStateCache(Path(folder), 1 << 32, engine.identity or "model")
        text = prose(200, seed=3)
        tokens_all = engine._prompt.tokenize(text, special=False)  # noqa: SLF001
        print(f"Model {Path(str(model.path)).name}, {options.n_threads or 'default'} threads, {args.runs} rounds\n")
        print("| prefix tokens | evaluate (ms) | save once (ms) | load (ms) | file (MB) | load / evaluate |")
        print("|---|---|---|---|---|---|")
        for size in (int(s) for s in args.sizes.split(",")):
            tokens = tokens_all[:size]
            evaluate, save, load = [], [], []
            for _ in range(args.runs):
                engine._clear_kv()  # noqa: SLF001
                started = time.perf_counter()
                engine._decode_prompt(tokens)  # noqa: SLF001
                evaluate.append(time.perf_counter() - started)
                started = time.perf_counter()
                path = cache.save(engine._context, tokens)  # noqa: SLF001
                save.append(time.perf_counter() - started)
                engine._clear_kv()  # noqa: SLF001
                started = time.perf_counter()
                assert cache.load(engine._context, tokens), "the state did not load"  # noqa: SLF001
                load.append(time.perf_counter() - started)
                engine._kv_tokens[:] = tokens  # noqa: SLF001
            size_mb = path.stat().st_size / 1e6 if path else 0.0
            e, s, lo = (statistics.median(x) * 1000 for x in (evaluate, save, load))
            print(f"| {size} | {e:.1f} | {s:.1f} | {lo:.1f} | {size_mb:.2f} | {lo / e:.2f} |")
        engine.close()


if __name__ == "__main__":
    main()
