"""Hostile and careless input, against the real CLI (issue 21).

Every input is read in pieces within a limit (--max-input-size, the
max_input_size setting), checked for text as it comes, and Ctrl-C is felt at
once; a long input says how many parts and how long before any model works
on it. Each case runs `chatllm` in a subprocess, as a user would, and the
endless ones are watched: a child past the memory bound is killed and the
test fails, rather than the machine.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import chatllm_command, cli_env, run_chatllm, start_chatllm

MEMORY_BOUND_KB = 1024 * 1024  # the bound: under 1 GB on /dev/zero
ARTICLES = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "quality" / "summarize"


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: str
    seconds: float
    peak_rss_kb: int


def run_watched(*args: str, stdin, timeout: float = 60) -> Finished:
    """Run `chatllm ARGS…` with `stdin` (a file object), killing it if its
    memory passes the bound or it outlives `timeout`; its peak memory comes from
    the kernel's own count (wait4)."""
    started = time.monotonic()
    process = subprocess.Popen(
        chatllm_command(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env()
    )
    out: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, pipe=pipe: out.__setitem__(name, pipe.read()))
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr))
    ]
    for reader in readers:
        reader.start()
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if _rss_kb(process.pid) > MEMORY_BOUND_KB or time.monotonic() - started > timeout:
            process.kill()
        time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return Finished(
        process.returncode, out["stdout"], out["stderr"].decode(), time.monotonic() - started, usage.ru_maxrss
    )


def _rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmRSS:\s+(\d+)", status)
    return int(found.group(1)) if found else 0


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------- endless and binary input


@pytest.mark.slow
@pytest.mark.parametrize("as_file", [False, True], ids=["stdin", "file argument"])
def test_dev_zero_is_refused_at_once_in_bounded_memory(embedded_model: Path, as_file: bool) -> None:
    with open("/dev/zero", "rb") as zero:
        if as_file:
            result = run_watched("summarize", "--max-tokens", "8", "/dev/zero", stdin=subprocess.DEVNULL)
        else:
            result = run_watched("summarize", "--max-tokens", "8", stdin=zero)
    assert result.peak_rss_kb < MEMORY_BOUND_KB, f"peak {result.peak_rss_kb} KB"
    assert result.returncode == 1, result.stderr[-2000:]
    assert "binary" in one_error_line(result.stderr)
    assert result.stdout == b""
    assert result.seconds < 30


def test_dev_urandom_is_refused_at_once() -> None:
    result = run_watched("summarize", "--dry-run", "/dev/urandom", stdin=subprocess.DEVNULL)
    assert result.peak_rss_kb < MEMORY_BOUND_KB
    assert result.returncode == 1
    assert "'/dev/urandom' is not UTF-8 text" in one_error_line(result.stderr)
    assert result.seconds < 30


@pytest.mark.slow
def test_chat_in_a_pipe_refuses_an_endless_line(embedded_model: Path) -> None:
    """chat reads stdin a line at a time: /dev/zero is one endless line."""
    with open("/dev/zero", "rb") as zero:
        result = run_watched("chat", "--max-tokens", "8", stdin=zero)
    assert result.peak_rss_kb < MEMORY_BOUND_KB
    assert result.returncode == 1
    assert "binary" in one_error_line(result.stderr)


def test_a_nul_byte_after_the_first_8_kb_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(b"Plain words and more plain words.\n" * 400 + b"\x00 and text after it.\n")
    for args in (["summarize", str(data)], ["chat", "-p", "support", "--kb", str(data)]):
        result = run_chatllm(*args, "--dry-run", input="hello\n")
        assert result.returncode == 1
        assert f"'{data}' looks like a binary file" in one_error_line(result.stderr.decode())


@pytest.mark.parametrize("bom, codec", [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")])
def test_text_with_a_byte_order_mark_is_read_as_text(tmp_path: Path, bom: bytes, codec: str) -> None:
    text = "Der Bus fährt um 9:30 Uhr. 公交车九点半出发。\r\nZweite Zeile.\r\n"
    source = tmp_path / "notes.txt"
    for args in (["summarize", str(source)], ["translate", "--to", "fr", str(source)]):
        prompts = []
        for data in (bom + text.encode(codec), codecs.BOM_UTF8 + text.encode(), text.encode()):
            source.write_bytes(data)
            result = run_chatllm(*args, "--dry-run")
            assert result.returncode == 0, result.stderr.decode()
            prompts.append(result.stdout.decode())
        assert "Der Bus fährt um 9:30 Uhr. 公交车九点半出发。\\nZweite Zeile." in prompts[0]
        assert prompts[0] == prompts[1] == prompts[2]  # as read from UTF-8, with or without its mark


# ---------------------------------------------------------------- the size limit


@pytest.mark.parametrize(
    "command",
    [
        ["summarize"],
        ["translate", "--to", "fr"],
        ["run", "summarize"],
        ["classify", "--labels", "good,bad"],
        ["extract", "--schema", "name"],
    ],
)
def test_every_command_that_reads_input_has_the_limit(command: list[str]) -> None:
    over = b"Some words of text.\n" * 100  # 2,000 bytes
    refused = run_chatllm(*command, "--dry-run", "--max-input-size", "1K", input=over)
    assert refused.returncode == 1 and refused.stdout == b""
    line = one_error_line(refused.stderr.decode())
    assert "over the 1 KiB input limit" in line and "--max-input-size" in line and "max_input_size" in line
    raised = run_chatllm(*command, "--dry-run", "--max-input-size", "4K", input=over)
    assert raised.returncode == 0, raised.stderr.decode()


def test_a_file_over_the_default_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"word " * (16 * 1024 * 1024 // 5) + b"\n\n")  # 16 MiB and one byte
    result = run_chatllm("summarize", "--dry-run", str(big))
    assert result.returncode == 1
    line = one_error_line(result.stderr.decode())
    assert f"'{big}' is 16,777,217 bytes, over the 16 MiB input limit" in line


def test_knowledge_files_and_the_setting_are_bounded_too(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Hours\nWe open at 9:00 every weekday, and close at 18:00.\n" * 60)  # ~3.5 KB
    result = run_chatllm("chat", "-p", "support", "--kb", str(faq), "--max-input-size", "2K", "--dry-run")
    assert result.returncode == 1 and "over the 2 KiB input limit" in one_error_line(result.stderr.decode())

    assert run_chatllm("config", "set", "max_input_size", "2K").returncode == 0
    result = run_chatllm("summarize", "--dry-run", str(faq))
    assert result.returncode == 1 and "over the 2 KiB input limit" in one_error_line(result.stderr.decode())
    assert run_chatllm("summarize", "--dry-run", "--max-input-size", "8K", str(faq)).returncode == 0
    result = run_chatllm("summarize", "--dry-run", str(faq), env={"CHATLLM_MAX_INPUT_SIZE": "1M"})
    assert result.returncode == 0, result.stderr.decode()
    assert run_chatllm("config", "set", "max_input_size", "lots").returncode != 0


# ---------------------------------------------------------------- Ctrl-C


def _wait_reading_stdin(process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the process waits on its stdin pipe (the kernel names where it sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if "pipe" in Path(f"/proc/{process.pid}/wchan").read_text():
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail("the process never waited on its stdin")


def _interrupted(process: subprocess.Popen, within: float = 10) -> str:
    """Ctrl-C; the process must stop within `within` seconds with one line."""
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"still running {within} s after Ctrl-C")
    assert process.returncode == 130
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = text.strip().splitlines()
    assert lines and lines[-1] == "Interrupted." and "Traceback" not in text, text
    return text


def test_ctrl_c_while_waiting_for_slow_stdin() -> None:
    process = start_chatllm("summarize", "--dry-run", stdin=subprocess.PIPE)
    _wait_reading_stdin(process)
    assert _interrupted(process).strip() == "Interrupted."


def test_ctrl_c_while_reading_an_endless_stdin() -> None:
    """`yes` writes faster than anything reads: chatllm is never left waiting
    on the pipe, yet Ctrl-C stops it at once (it did nothing: the whole input
    was read in one call, and memory grew by gigabytes)."""
    endless = subprocess.Popen(["yes", "An endless line of text."], stdout=subprocess.PIPE)
    try:
        limit = {"CHATLLM_MAX_INPUT_SIZE": "100G"}  # the setting: no flag, which main would refuse
        process = start_chatllm("summarize", "--dry-run", stdin=endless.stdout, env=limit)
        deadline = time.monotonic() + 60
        while _bytes_read(process.pid) < 20_000_000 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "it stopped reading by itself"
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline and _rss_kb(process.pid) < MEMORY_BOUND_KB:
            time.sleep(0.01)
        if process.poll() is None:
            process.kill()
            pytest.fail(f"still reading after Ctrl-C, {_rss_kb(process.pid)} KB of memory")
        _interrupted(process)
    finally:
        endless.kill()
        endless.wait()


@pytest.mark.slow
def test_ctrl_c_while_a_huge_input_is_split(embedded_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "huge.md"
    source.write_text(long_prose(15_000_000), encoding="utf-8")
    process = start_chatllm("summarize", "--ctx", "512", str(source))
    deadline = time.monotonic() + 60
    while _bytes_read(process.pid) < source.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # read: now it is counting and splitting, seconds of work before its first part
    assert process.poll() is None
    assert _interrupted(process, within=5).strip() == "Interrupted."  # no part was announced yet


def _bytes_read(pid: int) -> int:
    try:
        return int(re.search(r"rchar: (\d+)", Path(f"/proc/{pid}/io").read_text()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return 0


# ---------------------------------------------------------------- long input: parts, estimate, progress


def long_prose(size: int) -> str:
    articles = [path.read_text(encoding="utf-8") for path in sorted(ARTICLES.glob("*.en.md"))]
    pieces: list[str] = []
    length = 0
    while length < size:
        pieces.append(f"\n\n## Part {len(pieces)}\n\n" + articles[len(pieces) % len(articles)])
        length += len(pieces[-1])
    return "".join(pieces)


ANNOUNCED = re.compile(r"^(Summarizing|Translating): ([\d,]+) tokens in ([\d,]+) parts; about (\d+ (s|min|h)).*Ctrl-C")


@pytest.mark.slow
@pytest.mark.parametrize("command", [["summarize"], ["translate", "--to", "fr"]])
def test_a_long_input_says_parts_and_time_before_any_model_work(
    embedded_model: Path, tmp_path: Path, command: list[str]
) -> None:
    source = tmp_path / "long.md"
    source.write_text(long_prose(300_000), encoding="utf-8")
    process = start_chatllm(*command, "--ctx", "512", "--max-tokens", "8", str(source), env={"CHATLLM_HINTS": "0"})
    assert process.stderr is not None and process.stdout is not None
    output_began: list[float] = []
    threading.Thread(target=lambda: output_began.append(time.monotonic()) if process.stdout.read(1) else None).start()
    try:
        first = process.stderr.readline().decode()
        announced_at = time.monotonic()
        found = ANNOUNCED.match(first)
        assert found, first
        assert int(found.group(3).replace(",", "")) > 50  # many parts, each from the whole text
        assert not output_began or output_began[0] > announced_at  # nothing was translated before it
        status = process.stderr.readline().decode()  # a pipe gets plain lines, no escape codes
        assert re.match(r"^(Summarizing|Translating): part 1 of [\d,]+ done; about \d+ (s|min|h)", status), status
        assert "\x1b" not in first + status
        _interrupted(process)  # during the map steps
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow
def test_a_long_input_shows_a_progress_bar_on_a_terminal(embedded_model: Path, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    source = tmp_path / "long.md"
    source.write_text(long_prose(200_000), encoding="utf-8")
    program, *args = chatllm_command("summarize", "--ctx", "512", "--max-tokens", "8", str(source))
    env = cli_env(TERM="xterm-256color", COLUMNS="120", LINES="30")
    child = pexpect.spawn(program, args, env=env, dimensions=(30, 120), encoding="utf-8", timeout=120)
    try:
        child.expect(r"Summarizing: [\d,]+ tokens in [\d,]+ parts; about")
        child.expect(r"summarizing.*\d+/[\d,]+.*left")  # the bar: parts done, time left
        child.sendintr()
        child.expect("Interrupted.")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
