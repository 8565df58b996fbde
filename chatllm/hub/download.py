"""Downloading one Hub file into the Hugging Face cache: resumable, locked,
verified.

Why not `hf_hub_download`: huggingface_hub 1.x+ writes each download to a
process-unique temporary file and deletes it on any failure, so after a cut
connection or Ctrl-C the next attempt starts from zero; and it does not check
the sha256 of what it wrote. This module keeps the partial file at
`blobs/<sha256>.incomplete` (the name older huggingface_hub versions resumed
from), continues it with an HTTP Range request, hashes while writing, and only
a file whose sha256 equals the Hub's ETag is renamed to `blobs/<sha256>`: the
final name never holds a partial or corrupt file. It takes the same per-blob
lock as huggingface_hub, so concurrent pulls (ours or `hf download`) of one file
download it once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from chatllm.errors import DownloadError
from chatllm.hub import cache
from chatllm.hub.cache import INCOMPLETE_SUFFIX, file_sha256, is_verified, lock_path, mark_verified, within_cache
from chatllm.hub.environment import download_timeout_s, hub_endpoint

# Pause before each retry of a download that stopped making progress.
RETRY_DELAYS_S = (0.0, 1.0, 2.0, 4.0, 8.0)
CHUNK_SIZE = 1024 * 1024
# Keep this much free beyond the file itself, so the system keeps working.
DISK_HEADROOM_BYTES = 64 * 1024 * 1024
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch, as the Hub's HEAD response described it."""

    repo: str
    path: str  # inside the repo
    commit: str
    url: str  # where to GET it (the Hub's redirect target when there is one)
    sha256: str  # the ETag of an LFS file
    size: int | None


class TransferProgress(Protocol):
    """What the downloader reports; see chatllm.cli.download_progress for the terminal one."""

    def start(self, label: str, total: int | None, completed: int) -> None: ...
    def advance(self, byte_count: int) -> None: ...
    def finish(self) -> None: ...
    def note(self, message: str) -> None: ...


class SilentProgress:
    """No one is watching (a library caller, a test)."""

    def start(self, label: str, total: int | None, completed: int) -> None: ...
    def advance(self, byte_count: int) -> None: ...
    def finish(self) -> None: ...
    def note(self, message: str) -> None: ...


def fetch_file(remote: RemoteFile, *, headers: dict[str, str], progress: TransferProgress) -> bool:
    """Make `remote` present, verified and linked in the cache (at
    `cache.snapshot_path`); True when bytes had to be downloaded. Raises
    DownloadError (network, disk, checksum); KeyboardInterrupt leaves the
    partial file for the next call to resume."""
    from filelock import FileLock, Timeout

    blob = cache.blob_path(remote.repo, remote.sha256)
    lock_file = lock_path(remote.repo, remote.sha256)
    lock = FileLock(str(lock_file), mode=0o664)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            progress.note(f"Waiting for another download of {remote.path} to finish…")
            lock.acquire()
    except OSError as error:
        raise DownloadError(
            f"cannot write to the Hugging Face cache at {lock_file.parents[2]} ({error.strerror or error}); "
            "set HF_HOME to a writable folder"
        ) from None
    try:
        if blob.exists() and not _existing_blob_is_good(blob, remote, progress):
            blob.unlink()
        downloaded = not blob.exists()
        if downloaded:
            _download_blob(remote, blob, headers, progress)
        _link_snapshot(remote, blob)
        return downloaded
    finally:
        lock.release()


def _existing_blob_is_good(blob: Path, remote: RemoteFile, progress: TransferProgress) -> bool:
    """A blob another tool (or an older run) left: trust it once hashed."""
    if is_verified(blob):
        return True
    progress.note(f"Checking {remote.path} (sha256)…")
    if file_sha256(blob) == remote.sha256:
        mark_verified(blob)
        return True
    progress.note(f"{remote.path} in the cache does not match its sha256; downloading it again")
    return False


def _download_blob(remote: RemoteFile, blob: Path, headers: dict[str, str], progress: TransferProgress) -> None:
    partial = cache.blob_path(remote.repo, remote.sha256, INCOMPLETE_SUFFIX)
    blob.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    offset = _resume_offset(partial, remote, digest)
    _check_disk_space(blob.parent, (remote.size or 0) - offset, remote)
    request_headers = _download_headers(headers, remote.url)
    progress.start(remote.path, remote.size, offset)
    try:
        with partial.open("ab", buffering=0) as handle:
            offset, digest = _transfer(remote, handle, offset, digest, request_headers, progress)
    except KeyboardInterrupt:
        progress.note(f"Download of {remote.path} interrupted; run the same command again to resume.")
        raise
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DownloadError(
                f"the disk is full while downloading {remote.path} into {blob.parent}; "
                "free some space and run the same command again to resume"
            ) from None
        raise DownloadError(f"cannot write {partial}: {error.strerror or error}") from None
    finally:
        progress.finish()
    if remote.size is not None and offset != remote.size:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{remote.path} from {remote.repo} has {offset} bytes, the Hub said {remote.size}; run the pull again"
        )
    actual = digest.hexdigest()
    if actual != remote.sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{remote.path} from {remote.repo} does not match its sha256 (expected {remote.sha256[:12]}…, "
            f"got {actual[:12]}…); the download was deleted. Run the pull again; if this repeats, "
            "something between you and the Hub (proxy, mirror at HF_ENDPOINT) is altering the file"
        )
    os.replace(partial, blob)
    mark_verified(blob)


def _resume_offset(partial: Path, remote: RemoteFile, digest: hashlib._Hash) -> int:
    """Bytes already downloaded, fed into `digest`; a partial longer than the
    file is discarded."""
    try:
        size = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if remote.size is not None and size > remote.size:
        partial.unlink()
        return 0
    with partial.open("rb") as handle:
        while chunk := handle.read(8 * CHUNK_SIZE):
            digest.update(chunk)
    return size


def _transfer(
    remote: RemoteFile,
    handle: BinaryIO,
    offset: int,
    digest: hashlib._Hash,
    headers: dict[str, str],
    progress: TransferProgress,
) -> tuple[int, hashlib._Hash]:
    """GET the rest of the file into `handle`, retrying with Range after
    network errors. Returns the final size and the digest of the whole file."""
    import httpx2
    from huggingface_hub.utils import get_session, hf_raise_for_status

    timeout = download_timeout_s()
    failures = 0
    while remote.size is None or offset < remote.size:
        ranged = dict(headers, Range=f"bytes={offset}-") if offset else headers
        try:
            with get_session().stream(
                "GET", remote.url, headers=ranged, timeout=timeout, follow_redirects=True
            ) as response:
                if response.status_code == 416 and remote.size is not None and offset == remote.size:
                    break
                if response.status_code in _RETRY_STATUS:
                    raise _Retryable(f"the server answered {response.status_code}")
                hf_raise_for_status(response)
                if offset and response.status_code != 206:
                    # The server ignored Range: start over rather than append a second copy.
                    handle.truncate(0)
                    digest = hashlib.sha256()
                    progress.advance(-offset)
                    offset = 0
                # No chunk_size: bytes are written as they arrive, so a cut
                # connection loses nothing that was already received.
                for chunk in response.iter_bytes():
                    write_chunk(handle, chunk)
                    digest.update(chunk)
                    offset += len(chunk)
                    progress.advance(len(chunk))
                    failures = 0
            if remote.size is None:
                break
            if offset < remote.size:
                raise _Retryable("the connection closed early")
        except (httpx2.TransportError, _Retryable) as error:
            if failures >= len(RETRY_DELAYS_S):
                raise DownloadError(
                    f"download of {remote.path} failed: {_describe(error)}; "
                    f"{offset} of {remote.size or '?'} bytes are kept, run the same command again to resume"
                ) from None
            time.sleep(RETRY_DELAYS_S[failures])
            failures += 1
    return offset, digest


def write_chunk(handle: BinaryIO, chunk: bytes) -> None:
    """One write to the partial file (a seam for the full-disk test)."""
    handle.write(chunk)


class _Retryable(Exception):
    pass


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0]


def _download_headers(headers: dict[str, str], url: str) -> dict[str, str]:
    """Hub headers for the GET; the token is dropped when the file is served by
    another host (a CDN), as huggingface_hub does."""
    result = dict(headers, **{"Accept-Encoding": "identity"})
    if urlsplit(url).netloc != urlsplit(hub_endpoint()).netloc:
        result = {k: v for k, v in result.items() if k.lower() != "authorization"}
    return result


def _check_disk_space(folder: Path, needed: int, remote: RemoteFile) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > 0 and free < needed + DISK_HEADROOM_BYTES:
        raise DownloadError(
            f"not enough disk space for {remote.path}: it needs {format_bytes(needed)} more, "
            f"{format_bytes(free)} is free in {folder}; free some space or set HF_HOME to a bigger disk"
        )


def _link_snapshot(remote: RemoteFile, blob: Path) -> Path:
    """snapshots/<commit>/<path> → ../../blobs/<sha256>, and refs/main → commit."""
    pointer = cache.snapshot_path(remote.repo, remote.commit, remote.path)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(pointer) and pointer.resolve() != blob.resolve():
        pointer.unlink()
    if not os.path.lexists(pointer):
        target = os.path.relpath(blob, pointer.parent)
        within_cache(pointer.parent / target, "link target")
        try:
            os.symlink(target, pointer)
        except OSError:
            # No symlinks (Windows without developer mode): a hard link, else a copy.
            try:
                os.link(blob, pointer)
            except OSError:
                shutil.copyfile(blob, pointer)
    main = cache.ref_path(remote.repo)
    main.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.ref_path(remote.repo, f".main.{os.getpid()}.tmp")
    temporary.write_text(remote.commit)
    os.replace(temporary, main)
    return pointer


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
