"""Running the two programs under test: `chatllm` and `llama-bench`.

Each command runs as a child process timed from spawn, with the time of its
first byte on stdout and its own peak RSS (`os.wait4`), so one run gives wall
time, time to first output and memory at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUILD_DIR = HERE / ".build"


@dataclass
class ProcessRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float  # spawn to exit
    first_byte_s: float | None  # spawn to the first byte on stdout
    max_rss_bytes: int  # peak resident set size of the child itself
    cpu_s: float = 0.0  # user + system time of the child
    # Share of the machine's CPU time used by *other* processes while this one ran:
    # on a shared machine, the measure of how much a sample can be trusted.
    foreign_cpu: float = 0.0


def _cpu_busy_seconds() -> float | None:
    """Non-idle CPU seconds of the whole machine since boot (all cores)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_busy(window_s: float = 1.0) -> float:
    """Fraction of all cores busy over the next `window_s` seconds."""
    before = _cpu_busy_seconds()
    time.sleep(window_s)
    after = _cpu_busy_seconds()
    if before is None or after is None:
        return 0.0
    return max(0.0, (after - before) / (window_s * (os.cpu_count() or 1)))


def wait_for_quiet(threshold: float = 0.10, max_wait_s: float = 300.0) -> float:
    """Wait (up to `max_wait_s`) until other processes use under `threshold` of the
    CPUs; returns the last busy fraction seen."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu_busy()
    warned = False
    while busy > threshold and time.monotonic() < deadline:
        if not warned:
            print(
                f"  (machine busy: {busy:.0%} of the CPUs used by other processes; waiting for a quiet moment)",
                file=sys.stderr,
                flush=True,
            )
            warned = True
        busy = cpu_busy(2.0)
    return busy


# What a terminal does not show as text: escape sequences and white space.
_INVISIBLE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\s+")
TERMINAL_SIZE = (30, 100)  # rows, columns


def run_process(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 1800,
    terminal: bool = False,
) -> ProcessRun:
    """Run `argv`, feeding `stdin`, and measure it (see ProcessRun). With
    `terminal=True` its stdout is a pseudo-terminal (TERMINAL_SIZE, TERM=xterm)
    and `first_byte_s` is when the first visible text appeared on it: what a
    person at a terminal waits for, escape sequences not counted."""
    busy_before = _cpu_busy_seconds()
    screen = None
    if terminal:
        import fcntl
        import pty
        import struct
        import termios

        screen, stdout_target = pty.openpty()
        fcntl.ioctl(stdout_target, termios.TIOCSWINSZ, struct.pack("HHHH", *TERMINAL_SIZE, 0, 0))
        env = {k: v for k, v in (env or os.environ).items() if k != "NO_COLOR"}
        env.update(TERM="xterm-256color", LINES=str(TERMINAL_SIZE[0]), COLUMNS=str(TERMINAL_SIZE[1]))
    started = time.perf_counter()
    child = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=stdout_target if terminal else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    if terminal:
        os.close(stdout_target)
    errors: list[bytes] = []

    def feed() -> None:
        try:
            if stdin:
                child.stdin.write(stdin.encode("utf-8"))
            child.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def drain() -> None:
        errors.append(child.stderr.read())

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    for thread in threads:
        thread.start()
    out = bytearray()
    first: float | None = None
    descriptor = screen if screen is not None else child.stdout.fileno()
    deadline = started + timeout
    while True:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # a pseudo-terminal whose other end closed
            break
        if not chunk:
            break
        out += chunk
        if first is None and (screen is None or _INVISIBLE.sub(b"", bytes(out))):
            first = time.perf_counter() - started
        if time.perf_counter() > deadline:
            child.kill()
            break
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    busy_after = _cpu_busy_seconds()
    cpu_s = usage.ru_utime + usage.ru_stime
    foreign = 0.0
    if busy_before is not None and busy_after is not None and wall > 0:
        foreign = max(0.0, (busy_after - busy_before - cpu_s) / (wall * (os.cpu_count() or 1)))
    child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    if screen is not None:
        os.close(screen)
    for thread in threads:
        thread.join(timeout=10)
    return ProcessRun(
        argv=list(argv),
        returncode=child.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=b"".join(errors).decode("utf-8", "replace"),
        wall_s=wall,
        first_byte_s=first,
        max_rss_bytes=usage.ru_maxrss * 1024,
        cpu_s=cpu_s,
        foreign_cpu=foreign,
    )


def quiet_step(measure, noise: float, attempts: int = 6) -> dict:
    """Run `measure()` (which returns a dict with "foreign_cpu") after waiting for a
    quiet moment; repeat it while other processes took more than `noise` of the
    CPUs during the run (a 2-thread llama.cpp run sharing 2 cores with another
    busy process runs up to 10x slower, which no median repairs)."""
    for attempt in range(1, attempts + 1):
        wait_for_quiet(noise / 2)
        result = measure()
        result["attempts"] = attempt
        if result["foreign_cpu"] <= noise:
            break
    return result


# ---------------------------------------------------------------- llama-bench


def find_llama_bench(build: bool = True) -> Path | None:
    """llama-bench from PATH or benchmarks/.build/, building it there if allowed."""
    found = shutil.which("llama-bench")
    if found:
        return Path(found)
    for candidate in sorted(BUILD_DIR.glob("llama.cpp-*/bin/llama-bench")):
        if os.access(candidate, os.X_OK):
            return candidate
    if not build:
        return None
    script = HERE / "build_llama_bench.sh"
    print("llama-bench not found: building it from the llama-cpp-python sdist (several minutes) ...", file=sys.stderr)
    result = subprocess.run(
        ["bash", str(script)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHON": sys.executable}
    )
    if result.returncode != 0:
        return None
    path = Path(result.stdout.strip().splitlines()[-1])
    return path if path.exists() else None


@dataclass(frozen=True)
class BenchSettings:
    binary: Path
    model: Path
    threads: int
    repack: bool
    flash_attn: str = "auto"
    gpu_layers: int = 0
    # Run on these shared libraries instead of the ones llama-bench was built with
    # (llama-cpp-python's own, for a same-machine-code comparison).
    library_dir: Path | None = None


def shared_llama_bench() -> Path | None:
    """llama-bench built with `build_llama_bench.sh --shared`, if it is there."""
    candidate = BUILD_DIR / "llama.cpp-cpu-shared" / "bin" / "llama-bench"
    return candidate if os.access(candidate, os.X_OK) else None


def installed_llama_libraries() -> Path | None:
    """The folder of llama-cpp-python's own libllama/libggml."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return folder if (folder / "libllama.so").exists() else None


def llama_bench(settings: BenchSettings, n_prompt: int, n_gen: int, depth: int = 0, reps: int = 1) -> dict:
    """One llama-bench test; returns its JSON record (avg_ts = tokens/s)."""
    argv = [
        str(settings.binary),
        "-m",
        str(settings.model),
        "-t",
        str(settings.threads),
        "-p",
        str(n_prompt),
        "-n",
        str(n_gen),
        "-d",
        str(depth),
        "-r",
        str(reps),
        "-fa",
        settings.flash_attn,
        "--repack",
        "1" if settings.repack else "0",
        "-ngl",
        str(settings.gpu_layers),
        "-o",
        "json",
    ]
    env = None
    if settings.library_dir is not None:
        env = {**os.environ, "LD_LIBRARY_PATH": str(settings.library_dir)}
    run = run_process(argv, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({run.returncode}): {' '.join(argv)}\n{run.stderr[-2000:]}")
    records = json.loads(run.stdout)
    if not records:
        raise RuntimeError(f"llama-bench printed no result: {' '.join(argv)}")
    record = records[0]
    record["wall_s"] = run.wall_s
    record["foreign_cpu"] = run.foreign_cpu
    return record


# ---------------------------------------------------------------- chatllm


def chatllm_argv() -> list[str]:
    """The installed `chatllm` console script next to this Python (what users run)."""
    script = Path(sys.executable).with_name("chatllm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "chatllm"]


@dataclass
class Sandbox:
    """Config, data and cache folders of their own, so no user setting or earlier
    cache changes a measurement. `fresh_cache()` starts with an empty cache."""

    root: Path
    threads: int
    repack: bool
    extra: dict[str, str] = field(default_factory=dict)
    _caches: int = 0

    def __post_init__(self) -> None:
        for name in ("config", "data", "cache"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.cache = self.root / "cache"

    def fresh_cache(self) -> Path:
        self._caches += 1
        self.cache = self.root / f"cache-{self._caches}"
        self.cache.mkdir(parents=True, exist_ok=True)
        return self.cache

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLLM_")}
        env.update(
            XDG_CONFIG_HOME=str(self.root / "config"),
            XDG_DATA_HOME=str(self.root / "data"),
            XDG_CACHE_HOME=str(self.cache),
            NO_COLOR="1",
            HF_HUB_OFFLINE="1",
            CHATLLM_THREADS=str(self.threads),
            CHATLLM_WEIGHT_REPACK="1" if self.repack else "0",
        )
        env.update(self.extra)
        return env


def chatllm(
    sandbox: Sandbox, *args: str, stdin: str | None = None, timeout: float = 1800, terminal: bool = False
) -> ProcessRun:
    return run_process([*chatllm_argv(), *args], env=sandbox.env(), stdin=stdin, timeout=timeout, terminal=terminal)


def json_lines(run: ProcessRun) -> list[dict]:
    """The --json objects a chatllm command printed (one per line)."""
    objects = []
    for line in run.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            objects.append(json.loads(line))
    if not objects:
        raise RuntimeError(
            f"chatllm printed no JSON (exit {run.returncode}): {' '.join(run.argv)}\n{run.stderr[-2000:]}"
        )
    return objects


_STAT_LINE = re.compile(r"^([a-z ]+): ([0-9.]+)(?: of ([0-9]+))?", re.MULTILINE)


def stats_from_stderr(text: str) -> list[dict[str, float]]:
    """The `--stats` blocks on stderr, one dict per reply (keys as printed)."""
    blocks: list[dict[str, float]] = []
    for match in _STAT_LINE.finditer(text):
        key, value = match.group(1), float(match.group(2))
        if key == "load" or not blocks:
            blocks.append({})
        blocks[-1][key] = value
    return blocks
