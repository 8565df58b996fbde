"""Hub references, downloads and the cache, against the local Hub stand-in
(tests/support/hub_server.py) serving real GGUF files. Nothing here reaches the internet."""

from __future__ import annotations

import errno
import hashlib
import signal
import time
from pathlib import Path

import pytest

from chatllm.errors import DownloadError, ModelError
from chatllm.hub import download as hub_download
from chatllm.hub import resolve as hub
from chatllm.hub.cache import cached_models, hub_cache_dir, is_verified, repo_folder
from chatllm.hub.files import HubReference, RepoFile, group_variants, parse_hub_reference, preferred_variant, quant_of
from chatllm.hub.gguf_info import read_gguf_info
from tests.support.cli import start_chatllm
from tests.support.hub_fixtures import NO_GGUF_REPO, TINY_REPO


def sha256_of(source: Path | bytes) -> str:
    return hashlib.sha256(source if isinstance(source, bytes) else source.read_bytes()).hexdigest()


def blob_files(repo: str = TINY_REPO) -> list[Path]:
    folder = repo_folder(repo) / "blobs"
    return sorted(folder.iterdir()) if folder.exists() else []


# References -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/repo", HubReference("org/repo")),
        ("org/repo:q5_k_m", HubReference("org/repo", quant="Q5_K_M")),
        ("hf:org/repo:Q8_0", HubReference("org/repo", quant="Q8_0")),
        ("hf:org/repo", HubReference("org/repo")),
        ("hf.co/org/repo:Q4_K_M", HubReference("org/repo", quant="Q4_K_M")),
        ("org/repo/sub/model-Q8_0.gguf", HubReference("org/repo", filename="sub/model-Q8_0.gguf")),
        ("hf:org/repo:model.gguf", HubReference("org/repo", filename="model.gguf")),
    ],
)
def test_hub_reference_forms(text: str, expected: HubReference) -> None:
    assert parse_hub_reference(text) == expected


@pytest.mark.parametrize("text", ["qwen", "org/", "org/repo:", "org/repo/README.md", "a b/c"])
def test_malformed_references_are_model_errors(text: str) -> None:
    with pytest.raises(ModelError):
        parse_hub_reference(text)


def test_alias_resolves_through_the_catalog_and_typos_get_a_suggestion(hub_env: Path) -> None:
    target = hub.parse_model_reference("qwen2.5:1.5b")
    assert target.hub == HubReference("Qwen/Qwen2.5-1.5B-Instruct-GGUF", quant="Q4_K_M")
    assert target.alias == "qwen2.5:1.5b"
    with pytest.raises(ModelError, match="did you mean 'qwen2.5:1.5b'"):
        hub.parse_model_reference("qwen2.5:1.5")


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Qwen3-4B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Llama-3.2-1B-Instruct-f16.gguf", "F16"),
        ("Q8_0/model-IQ4_XS.gguf", "IQ4_XS"),
        ("model.gguf", None),
    ],
)
def test_quantization_is_read_from_file_names(name: str, quant: str | None) -> None:
    assert quant_of(name) == quant


def test_variants_group_shards_skip_projectors_and_prefer_q4_k_m() -> None:
    files = [
        RepoFile(p, 10)
        for p in (
            "m-Q8_0.gguf",
            "m-Q5_K_M.gguf",
            "mmproj-m-f16.gguf",
            "README.md",
            "m-F16-00002-of-00002.gguf",
            "m-F16-00001-of-00002.gguf",
            "m-Q6_K-00001-of-00002.gguf",  # Q6_K lacks a shard
        )
    ]
    variants = group_variants(files)
    assert [v.quant for v in variants] == ["F16", "Q5_K_M", "Q8_0"]
    assert [f.path for f in variants[0].files] == ["m-F16-00001-of-00002.gguf", "m-F16-00002-of-00002.gguf"]
    assert preferred_variant(variants).quant == "Q5_K_M"  # no Q4: the closest
    assert preferred_variant(group_variants(files + [RepoFile("m-Q4_K_M.gguf", 10)])).quant == "Q4_K_M"


# Pulling ----------------------------------------------------------------------


def test_pull_picks_q4_k_m_into_the_standard_cache(hub_server, tiny_repo_files) -> None:
    result = hub.pull_model(TINY_REPO)
    path = result.model.path
    assert result.downloaded and path.name == "Tiny-Q4_K_M.gguf"
    assert path.read_bytes() == tiny_repo_files["Tiny-Q4_K_M.gguf"].read_bytes()
    # huggingface_hub's layout: a snapshot symlink to a blob named by its sha256, refs/main.
    folder = hub_cache_dir() / "models--test-org--Tiny-GGUF"
    assert path.is_symlink() and path.resolve().parent == folder / "blobs"
    assert path.resolve().name == sha256_of(tiny_repo_files["Tiny-Q4_K_M.gguf"])
    assert (folder / "refs" / "main").read_text() == path.parent.name
    assert is_verified(path.resolve())
    # huggingface_hub itself finds the file without a download.
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(TINY_REPO, "Tiny-Q4_K_M.gguf", cache_dir=hub_cache_dir()) == str(path)


def test_pull_again_downloads_nothing(hub_server) -> None:
    hub.pull_model(TINY_REPO)
    again = hub.pull_model(TINY_REPO)
    assert not again.downloaded
    assert len(hub_server.body_requests()) == 1


def test_pull_chooses_a_quantization_case_insensitively(hub_server) -> None:
    assert hub.pull_model(f"hf:{TINY_REPO}:q8_0").model.path.name == "Tiny-Q8_0.gguf"
    assert hub.pull_model(TINY_REPO, quant="Q4_K_M").model.path.name == "Tiny-Q4_K_M.gguf"


def test_unknown_quantization_lists_the_available_ones(hub_server) -> None:
    with pytest.raises(ModelError, match=r"no Q5_K_M file; available quantizations: Q4_K_M, Q8_0, F16$"):
        hub.pull_model(f"{TINY_REPO}:Q5_K_M")
    assert hub_server.body_requests() == []


def test_unknown_repo_and_repo_without_gguf_are_clear_errors(hub_server) -> None:
    with pytest.raises(ModelError, match="repo 'test-org/missing' not found"):
        hub.pull_model("test-org/missing")
    with pytest.raises(ModelError, match="has no GGUF model files"):
        hub.pull_model(NO_GGUF_REPO)
    with pytest.raises(ModelError, match="has no file 'nope.gguf'"):
        hub.pull_model(f"{TINY_REPO}/nope.gguf")


def test_hub_failures_and_invalid_names_are_clear_errors(hub_server) -> None:
    with pytest.raises(ModelError, match="not a valid Hub repo name"):
        hub.pull_model("test-org/bad..name")
    hub_server.faults.status_for_api = 503
    with pytest.raises(DownloadError, match="the Hub answered 503 for test-org/Tiny-GGUF; try again later"):
        hub.pull_model(TINY_REPO)


def test_no_network_is_a_download_error(hub_env, monkeypatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face Hub"):
        hub.pull_model(TINY_REPO)


def test_split_model_is_fetched_together_and_the_first_shard_returned(hub_server) -> None:
    model = hub.pull_model(f"{TINY_REPO}:F16").model
    assert model.path.name == "Tiny-F16-00001-of-00002.gguf"
    assert (model.path.parent / "Tiny-F16-00002-of-00002.gguf").is_file()
    info = read_gguf_info(model.path)
    assert info.split_count == 2 and info.tensor_count == 2 and info.parameter_count == 2 * 128 * 1024


def test_the_token_goes_to_the_hub_but_not_to_the_cdn(hub_server, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
    hub.pull_model(TINY_REPO)
    api = [r for r in hub_server.requests if not r.path.startswith("/cdn/")]
    assert api and all(r.authorization == "Bearer hf_testtoken" for r in api)
    assert all(r.authorization is None for r in hub_server.body_requests())


# Faults -----------------------------------------------------------------------


def test_cut_connection_resumes_with_a_range_request(hub_server, tiny_repo_files) -> None:
    hub_server.faults.cut_after_bytes, hub_server.faults.cuts_remaining = 100_000, 1
    path = hub.pull_model(TINY_REPO).model.path
    assert path.read_bytes() == tiny_repo_files["Tiny-Q4_K_M.gguf"].read_bytes()
    assert [r.range for r in hub_server.body_requests()] == [None, "bytes=100000-"]


def test_failed_download_keeps_its_part_and_the_next_pull_resumes(hub_server, tiny_repo_files) -> None:
    hub_server.faults.cut_after_bytes, hub_server.faults.cuts_remaining = 100_000, 1000
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        hub.pull_model(TINY_REPO)
    sha = sha256_of(tiny_repo_files["Tiny-Q4_K_M.gguf"])
    partial = repo_folder(TINY_REPO) / "blobs" / f"{sha}.incomplete"
    assert partial.stat().st_size == 100_000
    assert blob_files() == [partial]  # nothing under the final name
    hub_server.faults.cuts_remaining = 0
    hub_server.requests.clear()
    assert hub.pull_model(TINY_REPO).model.path.read_bytes() == tiny_repo_files["Tiny-Q4_K_M.gguf"].read_bytes()
    assert [r.range for r in hub_server.body_requests()] == ["bytes=100000-"]


def test_corrupted_body_is_deleted_and_never_used(hub_server) -> None:
    hub_server.faults.corrupt = True
    with pytest.raises(DownloadError, match="does not match its sha256"):
        hub.pull_model(TINY_REPO)
    assert blob_files() == [] and cached_models() == []
    with pytest.raises(ModelError, match="not downloaded yet"):
        hub.resolve_hub_model(TINY_REPO, allow_download=False)


def test_a_corrupt_file_already_in_the_cache_is_caught_before_use(hub_server) -> None:
    path = hub.pull_model(TINY_REPO).model.path
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))  # a new mtime: the verification marker no longer applies
    with pytest.raises(DownloadError, match="does not match its sha256 and was deleted"):
        hub.resolve_hub_model(TINY_REPO, allow_download=False)
    assert not blob.exists()


def test_not_enough_disk_space_is_refused_before_downloading(hub_server, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    with pytest.raises(DownloadError, match="not enough disk space"):
        hub.pull_model(TINY_REPO)
    assert hub_server.body_requests() == []


def test_disk_full_while_writing_leaves_no_file_under_the_final_name(hub_server, monkeypatch) -> None:
    def full_disk(handle, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hub_download, "write_chunk", full_disk)
    with pytest.raises(DownloadError, match="disk is full"):
        hub.pull_model(TINY_REPO)
    assert all(p.name.endswith(".incomplete") for p in blob_files())
    assert cached_models() == []


# Using cached models ----------------------------------------------------------


def test_cached_model_resolves_offline_without_any_request(hub_server, monkeypatch) -> None:
    pulled = hub.pull_model(TINY_REPO).model.path
    hub_server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = hub.resolve_hub_model(TINY_REPO, allow_download=False)
    assert resolved.path == pulled and resolved.name == "Tiny-Q4_K_M.gguf"
    assert hub_server.requests == []


def test_cached_model_resolves_with_the_hub_gone(hub_server) -> None:
    from chatllm.hub.models import resolve_model

    hub.pull_model(f"{TINY_REPO}:Q8_0")
    hub_server.stop()
    started = time.monotonic()
    resolved = resolve_model(f"hf:{TINY_REPO}:Q8_0")
    assert resolved.path.name == "Tiny-Q8_0.gguf"
    assert time.monotonic() - started < 1.0  # no network timeout on the way


def test_offline_missing_model_is_a_clear_error(hub_server, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not downloaded and HF_HUB_OFFLINE is set"):
        hub.resolve_hub_model(TINY_REPO, allow_download=True)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        hub.pull_model(TINY_REPO)
    assert hub_server.requests == []


def test_missing_model_downloads_only_when_allowed_or_confirmed(hub_server, monkeypatch) -> None:
    with pytest.raises(ModelError, match=r"add --pull to download it, or run `chatllm models pull"):
        hub.resolve_hub_model(TINY_REPO, allow_download=False)  # stdin is not a terminal here
    questions = []
    asking = hub.Interaction(confirm=lambda question: questions.append(question) or False)
    with pytest.raises(ModelError, match="nothing was run"):
        hub.resolve_hub_model(TINY_REPO, allow_download=False, interaction=asking)
    assert "Tiny-Q4_K_M.gguf (Q4_K_M, 524.9 KB)" in questions[0]
    agreeing = hub.Interaction(confirm=lambda question: True)
    assert hub.resolve_hub_model(TINY_REPO, allow_download=False, interaction=agreeing).name == "Tiny-Q4_K_M.gguf"
    assert hub.resolve_hub_model(f"{TINY_REPO}:Q8_0", allow_download=True).name == "Tiny-Q8_0.gguf"


def test_a_blob_from_another_tool_is_verified_once(hub_server, tiny_repo_files) -> None:
    from huggingface_hub import hf_hub_download

    path = Path(hf_hub_download(TINY_REPO, "Tiny-Q8_0.gguf", endpoint=hub_server.url, cache_dir=hub_cache_dir()))
    assert not is_verified(path.resolve())
    hub_server.requests.clear()
    assert hub.resolve_hub_model(f"{TINY_REPO}:Q8_0", allow_download=False).path == path
    assert is_verified(path.resolve()) and hub_server.requests == []


# Concurrency and interruption (real processes) ---------------------------------


def test_two_concurrent_pulls_download_once(hub_server, tiny_repo_files) -> None:
    hub_server.faults.stall_after_bytes = 100_000
    command = ("models", "pull", f"{TINY_REPO}:Q8_0")
    first = start_chatllm(*command, text=True)
    second = None
    try:
        assert hub_server.faults.stall_reached.wait(60), "the first pull never started downloading"
        second = start_chatllm(*command, text=True)
        waiting = second.stderr.readline()  # blocks until the second pull reports the lock
        assert "Waiting for another download of Tiny-Q8_0.gguf" in waiting
        hub_server.faults.release.set()
        outputs = [process.communicate(timeout=60) for process in (first, second)]
    finally:
        hub_server.faults.release.set()
        for process in (first, second):
            if process and process.poll() is None:
                process.kill()
    assert first.returncode == 0 and second.returncode == 0, outputs
    paths = {Path(stdout.strip()) for stdout, _ in outputs}
    assert len(paths) == 1
    assert paths.pop().read_bytes() == tiny_repo_files["Tiny-Q8_0.gguf"].read_bytes()
    assert len(hub_server.body_requests()) == 1


def test_ctrl_c_keeps_no_corrupt_file_and_the_next_pull_resumes(hub_server, tiny_repo_files) -> None:
    hub_server.faults.stall_after_bytes = 100_000
    sha = sha256_of(tiny_repo_files["Tiny-Q8_0.gguf"])
    partial = repo_folder(TINY_REPO) / "blobs" / f"{sha}.incomplete"
    process = start_chatllm("models", "pull", f"{TINY_REPO}:Q8_0", text=True)
    try:
        assert hub_server.faults.stall_reached.wait(60)
        deadline = time.monotonic() + 30  # the bytes are on their way through the socket
        while (partial.stat().st_size if partial.exists() else 0) < 100_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        hub_server.faults.release.set()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    assert partial.stat().st_size == 100_000 and blob_files() == [partial]
    hub_server.faults.stall_after_bytes = None
    hub_server.requests.clear()
    path = hub.pull_model(f"{TINY_REPO}:Q8_0").model.path
    assert path.read_bytes() == tiny_repo_files["Tiny-Q8_0.gguf"].read_bytes()
    assert [r.range for r in hub_server.body_requests()] == ["bytes=100000-"]
