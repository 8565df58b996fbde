"""The passages of the documents `chatllm ask` answers from, kept in the cache
folder so a folder is read once and then only its changed files again.

There is one index file per path given (a folder or a file), named by a hash
of its absolute path, holding each file's size, modification time, content
hash (SHA-256) and passages. A file whose size and time are unchanged is not
read again (as git does); one that changed is read, and when its content is
one the index already has (a file renamed or touched) its passages are reused.
A file that is not text is remembered with the reason, so the note about it
costs nothing next time (one that could not be opened, or was over the input
limit, is tried again: a permission or the limit may change). An index that cannot be read, or was written by
another version or with another passage size, is silently built again: it is
a cache, and nothing in it is the user's. It is written whole to a temporary
file and renamed into place (readers never see half of one), readable by the
user alone (0600, private_files.py): it holds the documents' text.

Each file is read within the input limit (--max-input-size, the
max_input_size setting), which bounds one document here, not a folder: a
folder is indexed once, never given to the model whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatllm.errors import InputError
from chatllm.inputs import input_limit
from chatllm.jobs.documents import (
    DOCUMENT_SUFFIXES,
    PASSAGE_TOKENS,
    Section,
    document_text,
    sections,
    split_sections,
    walk,
)
from chatllm.jobs.knowledge import Passage
from chatllm.private_files import write_private
from chatllm.sizes import format_size

# Bumped whenever what an index holds, or how passages are cut, changes.
INDEX_VERSION = 1
# A progress bar is worth showing from this many files to read.
PROGRESS_FROM_FILES = 20
Progress = Callable[[int, int], None]


@dataclass
class Collection:
    """The passages of every document given, and notes on the files left out."""

    passages: list[Passage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0  # documents with text
    read: int = 0  # files read this time (not taken from the index)


@dataclass
class _Entry:
    size: int
    mtime_ns: int
    sha256: str
    sections: list[Section]
    error: str = ""  # why the file could not be read ("" when it could)

    def as_json(self) -> dict[str, Any]:
        rows = [[s.heading, s.first, s.last, s.text] for s in self.sections]
        return {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "sha256": self.sha256,
            "sections": rows,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Entry:
        rows = [Section(str(h), _line(a), _line(b), str(t)) for h, a, b, t in data["sections"]]
        return cls(int(data["size"]), int(data["mtime_ns"]), str(data["sha256"]), rows, str(data.get("error", "")))


def _line(value: Any) -> int | None:
    return None if value is None else int(value)


class DocumentIndex:
    """The index of one folder (or one file): `root` as the user named it."""

    def __init__(self, root: Path, cache: Path | None) -> None:
        self.root = root
        self.absolute = root.resolve()
        key = hashlib.sha256(str(self.absolute).encode()).hexdigest()[:32]
        self.path = cache / f"{key}.json" if cache is not None else None
        self.entries = self._load()

    def files(self) -> list[tuple[str, Path]]:
        """(name in the index, path) of each document under the root."""
        if self.absolute.is_dir():
            return [(path.relative_to(self.absolute).as_posix(), path) for path in walk(self.absolute)]
        return [(self.absolute.name, self.absolute)]

    def update(self, on_progress: Progress | None = None) -> tuple[dict[str, _Entry], int]:
        """Every document's entry, reading the files that changed; and how many
        were read. The index is saved when anything changed."""
        current, stale = {}, []
        for name, path in self.files():
            try:
                stat = path.stat()
            except OSError:
                continue  # gone between the walk and now
            entry = self.entries.get(name)
            if entry is not None and (entry.size, entry.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                current[name] = entry
            else:
                stale.append((name, path, stat))
        known = {entry.sha256: entry for entry in self.entries.values() if entry.sha256}
        report = on_progress if len(stale) >= PROGRESS_FROM_FILES else None
        limit = input_limit()
        for done, (name, path, stat) in enumerate(stale):
            if report is not None:
                report(done, len(stale))
            current[name] = _read(path, stat, known, limit)
        if report is not None:
            report(len(stale), len(stale))
        changed = bool(stale) or current.keys() != self.entries.keys()
        self.entries = current
        if changed:
            self._save()
        return current, len(stale)

    def _load(self) -> dict[str, _Entry]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != INDEX_VERSION or data.get("passage_tokens") != PASSAGE_TOKENS:
                return {}
            return {str(name): _Entry.from_json(entry) for name, entry in data["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # missing, corrupt or foreign: built again

    def _save(self) -> None:
        if self.path is None:
            return
        document = {
            "version": INDEX_VERSION,
            "passage_tokens": PASSAGE_TOKENS,
            "root": str(self.absolute),
            # A file never read (not opened, over the limit) is read again next time.
            "files": {name: entry.as_json() for name, entry in self.entries.items() if entry.sha256},
        }
        try:
            write_private(self.path, json.dumps(document, ensure_ascii=False))
        except OSError:
            pass  # a cache that cannot be written is no error: the next run reads the files again


def _read(path: Path, stat: os.stat_result, known: dict[str, _Entry], limit: int) -> _Entry:
    if stat.st_size > limit:
        why = f"is {format_size(stat.st_size)}, over the {format_size(limit)} input limit (--max-input-size)"
        return _Entry(stat.st_size, stat.st_mtime_ns, "", [], why)
    try:
        data = path.read_bytes()
    except OSError as error:
        return _Entry(stat.st_size, stat.st_mtime_ns, "", [], f"cannot be read ({error.strerror})")
    digest = hashlib.sha256(data).hexdigest()
    if digest in known:
        return _Entry(stat.st_size, stat.st_mtime_ns, digest, known[digest].sections, known[digest].error)
    try:
        found = sections(path, document_text(path, data))
    except InputError as error:
        # Kept without the path ("is not UTF-8 text …"): the note names the file as the user knows it.
        reason = str(error).replace(f"'{path}'", "", 1).strip()
        return _Entry(stat.st_size, stat.st_mtime_ns, digest, [], reason)
    return _Entry(stat.st_size, stat.st_mtime_ns, digest, found)


def collect(
    paths: Sequence[Path], cache: Path | None, stdin_text: str | None = None, on_progress: Progress | None = None
) -> Collection:
    """The passages of `paths` (files and folders) and of `stdin_text` (when
    given, as a document named "stdin"). InputError when a path does not
    exist, a named file cannot be read, or nothing given has any text."""
    collection = Collection()
    if stdin_text is not None:
        _add(collection, "stdin", _Entry(0, 0, "", _stdin_sections(stdin_text)), named=True)
    for root in paths:
        if not root.exists():
            raise InputError(f"'{root}' does not exist")
        index = DocumentIndex(root, cache)
        entries, read = index.update(on_progress)
        collection.read += read
        if root.is_dir() and not entries:
            raise InputError(f"'{root}' has no documents ({', '.join(DOCUMENT_SUFFIXES)})")
        for name, entry in entries.items():
            shown = (root / name).as_posix() if root.is_dir() else str(root)
            _add(collection, shown, entry, named=not root.is_dir())
    if not collection.passages:
        given = ", ".join(f"'{p}'" for p in paths) or "the input"
        # The first reason, after a semicolon: a reason may hold parentheses of its own.
        first = collection.notes[0] if collection.notes else ""
        more = f" (and {len(collection.notes) - 1} more)" if len(collection.notes) > 1 else ""
        why = f"; {first[0].lower()}{first[1:-1]}{more}" if first else ""
        raise InputError(f"{given} {'has' if len(paths) < 2 else 'have'} no text to answer from{why}")
    return collection


def _stdin_sections(text: str) -> list[Section]:
    return split_sections(text.replace("\r\n", "\n"))


def _add(collection: Collection, shown: str, entry: _Entry, named: bool) -> None:
    if entry.error:
        if named:  # a file the user named, not one met in a folder
            raise InputError(f"'{shown}' {entry.error}")
        collection.notes.append(f"Skipped '{shown}': it {entry.error}.")
        return
    if entry.sections:
        collection.files += 1
    for section in entry.sections:
        lines = (section.first, section.last) if section.first is not None and section.last is not None else None
        collection.passages.append(Passage(shown, section.heading, section.text, lines))
