"""Files that hold what a user wrote or set: readable by their owner only.

The history (history.db and SQLite's side files), the prompt states (they hold
the prompts), a persona judge's calibration, config.yaml (it can hold
`commands.serve.api_key`) and the REPL's input history are created 0600, in
folders created 0700 (as the XDG base directory spec asks of the folders it
names). A file is created with its mode (`os.open`, `tempfile.mkstemp`), never
chmod-ed afterwards, so there is no moment another user could open it, and
the umask can only take permissions away. A file or folder an older chatllm
left looser is tightened when chatllm next writes it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_GROUP_AND_OTHERS = 0o077


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter: it and any missing parent
    are created 0700; an existing `path` is tightened. OSError if it cannot
    be created."""
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            pass
    tighten(path)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read: created empty and 0600 when
    missing (its folder by `private_dir`), tightened when looser. For files a
    library then opens by name (SQLite, prompt_toolkit's history)."""
    private_dir(path.parent)
    handle = os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        _tighten_open(handle)
    finally:
        os.close(handle)
    return path


def new_private_file(folder: Path, name: str) -> Path:
    """A new, empty 0600 file in `folder` (made private) with a unique name
    based on `name` (`.NAME.xxxxxxxx.tmp`), for a writer to fill and then
    rename over `folder / name`."""
    private_dir(folder)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(handle)
    return Path(temporary)


def write_private(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Replace `path` with `data` atomically, as a private file: written to a
    0600 temporary file beside it, then renamed over it (a crash leaves the old
    file or the new one, never half of one). `durable`: fsync before the
    rename, for a file the user wrote by hand."""
    temporary = new_private_file(path.parent, path.name)
    try:
        with temporary.open("wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def tighten(path: Path) -> None:
    """Take group and other permissions from `path` when it has any and
    exists; a file chatllm does not own keeps its mode."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & _GROUP_AND_OTHERS:
            os.chmod(path, mode & ~_GROUP_AND_OTHERS)
    except (FileNotFoundError, PermissionError):  # PermissionError: not ours
        pass


def _tighten_open(handle: int) -> None:
    mode = stat.S_IMODE(os.fstat(handle).st_mode)
    if mode & _GROUP_AND_OTHERS:
        try:
            os.fchmod(handle, mode & ~_GROUP_AND_OTHERS)
        except PermissionError:  # not ours: keeps its mode
            pass
