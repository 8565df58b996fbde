"""A Hub mirror that lies: nothing it sends may lead `chatllm models pull`
outside the Hugging Face cache.

HF_ENDPOINT can point at any server. Each case here is a hostile stand-in
(tests/support/hub_server.py, `Hostile`) claiming a commit, a file name or an
LFS sha256 that, joined into a cache path, lands beside the cache: in
`outside/`, a sentinel tree with files the attack aims at. The real CLI runs
in a subprocess; every case must end in one `Error:` line naming the mirror,
with the sentinel tree (and everything else beside the cache) exactly as it was.

    tmp/
      hf/hub/models--test-org--Evil-GGUF/{blobs,snapshots,refs}   the cache
      outside/                                                      the sentinel tree
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.support.cli import run_chatllm

EVIL_REPO = "test-org/Evil-GGUF"
COMMIT = "c0ffee" + "0" * 34
VICTIM = "victim-Q4_K_M.gguf"
PRECIOUS = b"a file that belongs to the user, not to the cache\n"
# A file named like a blob (64 hex characters), as an earlier attack or
# another tool could have left it, that a poisoned cache link points at.
HEX_NAMED = "ab" * 32


@pytest.fixture
def outside(hub_server, tmp_path: Path) -> Path:
    """The sentinel tree beside the cache (HF_HOME is tmp/hf, the cache exists)."""
    (tmp_path / "hf" / "hub").mkdir(parents=True)
    folder = tmp_path / "outside"
    (folder / "nested").mkdir(parents=True)
    (folder / VICTIM).write_bytes(PRECIOUS)
    (folder / "victim").write_bytes(PRECIOUS)
    (folder / HEX_NAMED).write_bytes(PRECIOUS)
    (folder / "nested" / "keep.txt").write_text("keep\n")
    return folder


def tree(top: Path, leave_out: set[Path] = frozenset()) -> dict[str, tuple]:
    """Every entry under `top` but those in `leave_out`: kind, mode, and a
    file's mtime and content hash or a link's target."""
    found: dict[str, tuple] = {}
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if Path(root) / d not in leave_out]
        for name in dirs + names:
            path = Path(root) / name
            info = path.lstat()
            key = str(path.relative_to(top))
            if stat.S_ISLNK(info.st_mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[key] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[key] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, digest)
    return found


def tree_beside_the_cache(tmp_path: Path) -> dict[str, tuple]:
    """Everything under tmp/ but the cache and chatllm's own folders."""
    return tree(tmp_path, {tmp_path / "hf" / "hub", tmp_path / "cache", tmp_path / "config", tmp_path / "data"})


def pull_refused(tmp_path: Path, server, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `chatllm models pull ARGS`; assert a one-line error, a non-zero exit
    and nothing changed, beside the cache or in it. Returns the message."""
    before, cache_before = tree_beside_the_cache(tmp_path), tree(tmp_path / "hf" / "hub")
    result = run_chatllm("models", "pull", *args, env=env, timeout=120)
    stderr = result.stderr.decode()
    assert tree_beside_the_cache(tmp_path) == before, stderr
    assert tree(tmp_path / "hf" / "hub") == cache_before, "refused, yet something was written in the cache"
    assert (tmp_path / "outside" / VICTIM).read_bytes() == PRECIOUS
    assert result.returncode != 0 and result.stdout == b"", stderr
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr


def test_a_commit_that_climbs_out_of_the_cache_is_refused(hub_server, outside, tmp_path, tiny_repo_files) -> None:
    # snapshots/<commit>/file: four levels up from snapshots/ is tmp/.
    hub_server.add_repo(EVIL_REPO, {"Evil-Q4_K_M.gguf": tiny_repo_files["Tiny-Q4_K_M.gguf"]})
    hub_server.hostile.commit = "../../../../outside/pwned"
    message = pull_refused(tmp_path, hub_server, EVIL_REPO)
    assert f"{hub_server.url} (HF_ENDPOINT)" in message and "'../../../../outside/pwned'" in message
    assert "commit" in message


@pytest.mark.parametrize("commit", ["main", "C0FFEE" + "0" * 34, "0" * 39, "0" * 40 + "/x"])
def test_a_commit_that_is_not_40_hex_characters_is_refused(
    hub_server, outside, tmp_path, tiny_repo_files, commit
) -> None:
    hub_server.add_repo(EVIL_REPO, {"Evil-Q4_K_M.gguf": tiny_repo_files["Tiny-Q4_K_M.gguf"]})
    hub_server.hostile.commit = commit
    message = pull_refused(tmp_path, hub_server, EVIL_REPO)
    assert "(HF_ENDPOINT)" in message and "40 lower-case hex characters" in message


@pytest.mark.parametrize(
    "name",
    [
        "../../../../../outside/" + VICTIM,  # five levels up from snapshots/<commit>/ is tmp/
        "{outside}/" + VICTIM,  # absolute: joining it drops the cache folder
        "sub/../../../../../../outside/" + VICTIM,
        "sub\\..\\..\\Evil-Q4_K_M.gguf",
        "sub//Evil-Q4_K_M.gguf",
        "C:/Evil-Q4_K_M.gguf",
        "Evil-Q4_K_M\x1b[2J.gguf",
    ],
    ids=["dot-dot", "absolute", "dot-dot-inside", "backslashes", "empty-part", "drive", "control-character"],
)
def test_a_file_name_that_leaves_its_snapshot_is_refused(hub_server, outside, tmp_path, tiny_repo_files, name) -> None:
    name = name.format(outside=outside)
    hub_server.add_repo(EVIL_REPO, {name: tiny_repo_files["Tiny-Q4_K_M.gguf"]}, commit=COMMIT)
    message = pull_refused(tmp_path, hub_server, EVIL_REPO)
    assert f"{hub_server.url} (HF_ENDPOINT)" in message and "file name" in message
    assert "\x1b" not in message  # what the mirror sent is shown escaped, never raw


@pytest.mark.parametrize(
    "sha256",
    ["../../../../outside/victim", "z" * 64, "AB" * 32, "ab" * 31],
    ids=["climbs-out", "not-hex", "upper-case", "too-short"],
)
def test_an_lfs_sha256_that_is_not_64_hex_characters_is_refused(
    hub_server, outside, tmp_path, tiny_repo_files, sha256
) -> None:
    # blobs/<sha256>: four levels up from blobs/ is tmp/, where `outside/victim`
    # waits to be "verified" against that name, found wrong and deleted.
    hub_server.add_repo(EVIL_REPO, {"Evil-Q4_K_M.gguf": tiny_repo_files["Tiny-Q4_K_M.gguf"]}, commit=COMMIT)
    (tmp_path / "hf" / "hub" / "models--test-org--Evil-GGUF" / "blobs").mkdir(parents=True)  # an earlier pull's
    hub_server.hostile.lfs_sha256 = sha256
    message = pull_refused(tmp_path, hub_server, EVIL_REPO)
    assert f"{hub_server.url} (HF_ENDPOINT)" in message and "sha256" in message and "64 lower-case hex" in message


def poison_cache(tmp_path: Path, target: Path) -> Path:
    """A cache entry whose snapshot link leads out of the cache, to `target`:
    what an older chatllm left after a hostile pull, or another tool wrote."""
    folder = tmp_path / "hf" / "hub" / ("models--" + EVIL_REPO.replace("/", "--"))
    link = folder / "snapshots" / COMMIT / "Evil-Q4_K_M.gguf"
    link.parent.mkdir(parents=True)
    (folder / "blobs").mkdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    link.symlink_to(os.path.relpath(target, link.parent))
    return link


def test_a_cache_link_that_leads_outside_is_not_followed_to_delete(hub_server, outside, tmp_path) -> None:
    # The link's target is named like a blob but does not match that sha256:
    # "verifying" it would delete the user's file.
    link = poison_cache(tmp_path, outside / HEX_NAMED)
    message = pull_refused(tmp_path, hub_server, EVIL_REPO, env={"HF_HUB_OFFLINE": "1"})
    assert "outside the Hugging Face cache" in message and str(link) in message
    assert (outside / HEX_NAMED).read_bytes() == PRECIOUS


def test_removing_a_cache_entry_that_links_outside_removes_only_the_link(hub_server, outside, tmp_path) -> None:
    link = poison_cache(tmp_path, outside / HEX_NAMED)
    before = tree_beside_the_cache(tmp_path)
    result = run_chatllm("models", "rm", EVIL_REPO, "--yes", timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    assert tree_beside_the_cache(tmp_path) == before
    assert (outside / HEX_NAMED).read_bytes() == PRECIOUS and not os.path.lexists(link)


def test_an_honest_pull_still_works_and_its_paths_stay_inside(hub_server, outside, tmp_path, tiny_repo_files) -> None:
    hub_server.add_repo(EVIL_REPO, {"sub/Evil-Q4_K_M.gguf": tiny_repo_files["Tiny-Q4_K_M.gguf"]}, commit=COMMIT)
    before = tree_beside_the_cache(tmp_path)
    result = run_chatllm("models", "pull", EVIL_REPO, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    path = Path(result.stdout.decode().strip())
    assert path == tmp_path / "hf" / "hub" / "models--test-org--Evil-GGUF" / "snapshots" / COMMIT / "sub" / (
        "Evil-Q4_K_M.gguf"
    )
    assert path.resolve().parent.name == "blobs" and tree_beside_the_cache(tmp_path) == before


def test_a_cache_reached_through_symlinks_still_works(hub_server, tmp_path, tiny_repo_files, monkeypatch) -> None:
    """The checks follow links without refusing a cache the user moved: HF_HOME
    itself a link, and a repo folder moved to another disk and linked back."""
    (tmp_path / "real-hf").mkdir()
    (tmp_path / "linked-hf").symlink_to(tmp_path / "real-hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "linked-hf"))
    hub_server.add_repo(EVIL_REPO, {"Evil-Q4_K_M.gguf": tiny_repo_files["Tiny-Q4_K_M.gguf"]}, commit=COMMIT)
    assert run_chatllm("models", "pull", EVIL_REPO, timeout=120).returncode == 0
    folder = tmp_path / "real-hf" / "hub" / "models--test-org--Evil-GGUF"
    folder.rename(tmp_path / "other-disk")
    folder.symlink_to(tmp_path / "other-disk")
    offline = run_chatllm("models", "pull", EVIL_REPO, env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert offline.returncode == 0, offline.stderr.decode()
    online = run_chatllm("models", "pull", EVIL_REPO, timeout=120)
    assert online.returncode == 0, online.stderr.decode()
    removed = run_chatllm("models", "rm", EVIL_REPO, "--yes", timeout=120)
    assert removed.returncode == 0 and not list((tmp_path / "other-disk" / "blobs").iterdir())
