"""Saved llama.cpp states of long system-prompt prefixes, shared between processes.

A persona or a long system prompt is evaluated once; later runs (new processes)
load the KV cache for that prefix from disk in milliseconds instead of
re-evaluating it. Files are keyed by the model's identity, the llama.cpp build
and the exact prefix tokens, so a file can only ever be loaded for the same
prefix of the same model. The folder is a cache: every failure here is a miss,
never an error for the user.

Each file is what `llama_state_seq_save_file` wrote plus a footer (magic, length,
sha256), checked before llama.cpp reads the file: llama.cpp aborts the whole
process on some truncated state files instead of reporting an error.

Imported by the engine (chatllm.engine.llama, chat_prompt); it needs llama_cpp.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chatllm.engine.bindings import llama_bindings, llama_cpp_version
from chatllm.private_files import new_private_file

llama_cpp = llama_bindings()

# Prefixes shorter than this are not worth a file. Measured with
# benchmarks/prefix_reuse.py (benchmarks/README.md, "Prefix states"): loading
# a saved state took under a millisecond for 8-32 tokens and 20 ms for 256,
# evaluating them 17 ms to 1 s on the embedded model and far more on a 1.5B
# model, so a file pays at any size a system prompt has; the floor only keeps
# a one-line system prompt from costing a file.
MIN_PREFIX_TOKENS = 16
STATE_SUFFIX = ".state"
_MIB = 1024 * 1024
# A temporary file this old belongs to a writer that died; nobody will rename it.
_STALE_TEMP_S = 3600.0
_FOOTER = struct.Struct("<8sQ32s")  # magic, length of the llama.cpp part, its sha256
_FOOTER_MAGIC = b"CHLLMST1"


def model_identity(path: Path) -> str:
    """A cheap fingerprint of a model file: size, mtime and sha256 of its first and
    last MiB. Never reads the whole file (models are gigabytes)."""
    info = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_MIB))
        if info.st_size > _MIB:
            handle.seek(max(_MIB, info.st_size - _MIB))
            digest.update(handle.read(_MIB))
    return f"{info.st_size}:{info.st_mtime_ns}:{digest.hexdigest()}"


class PrefixStateCache:
    """A folder of `<sha256>.state` files written by `llama_state_seq_save_file`.

    Writers use a temporary name and `os.replace`, so readers in other processes
    only ever see complete files. The folder is kept under `max_bytes` by
    deleting the least recently used files (by mtime; a load touches its file).
    """

    def __init__(self, folder: Path, max_bytes: int, identity: str | Callable[[], str]) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        # Everything besides the tokens that decides whether a saved state fits
        # this context: the model file, the llama.cpp build (state format) and
        # the KV layout settings. n_ctx is deliberately not part of it. A callable
        # is asked only when a state is first looked up (it may hash a file).
        self._identity = identity

    @functools.cached_property
    def _salt(self) -> bytes:
        identity = self._identity() if callable(self._identity) else self._identity
        return f"chatllm-prefix-state-v1\0{llama_cpp_version()}\0{identity}\0".encode()

    def path_for(self, tokens: Sequence[int]) -> Path:
        digest = hashlib.sha256(self._salt)
        digest.update(array("i", tokens).tobytes())
        return self.folder / (digest.hexdigest() + STATE_SUFFIX)

    def has(self, tokens: Sequence[int]) -> bool:
        return self.path_for(tokens).is_file()

    def load(self, ctx: Any, tokens: Sequence[int], seq_id: int = 0) -> bool:
        """Restore sequence `seq_id` of `ctx` to the state after `tokens`. The caller must
        have emptied that sequence; after False it may hold partial data and must
        be emptied again. A file that fails to load is deleted."""
        path = self.path_for(tokens)
        if not path.is_file():
            return False
        if not _footer_matches(path):
            _unlink(path)
            return False
        capacity = len(tokens)
        tokens_out = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        read = llama_cpp.llama_state_seq_load_file(
            ctx, os.fsencode(path), seq_id, tokens_out, capacity, ctypes.byref(count)
        )
        if not read or count.value != capacity or list(tokens_out) != list(tokens):
            _unlink(path)
            return False
        try:
            os.utime(path)  # most recently used: evicted last
        except OSError:
            pass
        return True

    def save(self, ctx: Any, tokens: Sequence[int], seq_id: int = 0) -> Path | None:
        """Write the state of sequence `seq_id` (which must hold exactly `tokens`), then
        trim the folder to its size cap. Returns the file, or None if it could not
        be written (full disk, read-only folder: the cache is best effort).
        A state holds the prompt: the file is private (0600, in a 0700 folder)
        from the start, llama.cpp writing into the file made for it."""
        path = self.path_for(tokens)
        try:
            temporary = new_private_file(self.folder, path.stem)
        except OSError:
            return None
        try:
            token_array = (llama_cpp.llama_token * len(tokens))(*tokens)
            written = llama_cpp.llama_state_seq_save_file(ctx, os.fsencode(temporary), seq_id, token_array, len(tokens))
            if not written:
                _unlink(temporary)
                return None
            _append_footer(temporary)
            os.replace(temporary, path)
        except OSError:
            _unlink(temporary)
            return None
        self.evict()
        return path if path.exists() else None

    def evict(self) -> None:
        """Delete least recently used state files until the folder fits the cap,
        and temporary files left behind by writers that died."""
        entries: list[tuple[float, int, Path]] = []
        now = time.time()
        try:
            children = list(self.folder.iterdir())
        except OSError:
            return
        for child in children:
            try:
                info = child.stat()
            except OSError:
                continue  # deleted by another process meanwhile
            if child.name.endswith(STATE_SUFFIX):
                entries.append((info.st_mtime, info.st_size, child))
            elif child.name.endswith(".tmp") and now - info.st_mtime > _STALE_TEMP_S:
                _unlink(child)
        total = sum(size for _, size, _ in entries)
        for _, size, child in sorted(entries):
            if total <= self.max_bytes:
                break
            _unlink(child)
            total -= size


def _sha256_of_prefix(handle, length: int) -> bytes:
    digest = hashlib.sha256()
    remaining = length
    while remaining > 0:
        block = handle.read(min(remaining, 4 * _MIB))
        if not block:
            break
        digest.update(block)
        remaining -= len(block)
    return digest.digest()


def _append_footer(path: Path) -> None:
    with path.open("r+b") as handle:
        length = os.fstat(handle.fileno()).st_size
        digest = _sha256_of_prefix(handle, length)
        handle.seek(length)
        handle.write(_FOOTER.pack(_FOOTER_MAGIC, length, digest))


def _footer_matches(path: Path) -> bool:
    """True when the file is complete and unchanged since it was saved."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < _FOOTER.size:
                return False
            handle.seek(size - _FOOTER.size)
            magic, length, digest = _FOOTER.unpack(handle.read(_FOOTER.size))
            if magic != _FOOTER_MAGIC or length != size - _FOOTER.size:
                return False
            handle.seek(0)
            return _sha256_of_prefix(handle, length) == digest
    except OSError:
        return False


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
