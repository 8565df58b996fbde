"""The Hugging Face cache on disk, read and pruned without the network.

chatllm stores models exactly where huggingface_hub does, so models fetched by
other tools are reused and `hf cache` commands see ours:

  <cache>/models--org--repo/blobs/<sha256>            file contents
  <cache>/models--org--repo/snapshots/<commit>/<path> symlink to the blob
  <cache>/models--org--repo/refs/main                 commit of the last pull

Every path made here for writing, linking or deleting goes through
`within_cache`: a commit, file name or sha256 from a Hub is checked before it
gets here (chatllm.hub.untrusted), and this is the second, last line.

Paths are computed from the environment on every call (not from
huggingface_hub's import-time constants) so HF_HOME set by a test or a wrapper
script takes effect, and so completion never imports huggingface_hub.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from chatllm.config.settings import cache_dir
from chatllm.errors import DownloadError, ModelError
from chatllm.hub.files import HubReference, ModelVariant, RepoFile, choose_variant, group_variants, is_model_file

# huggingface_hub's REGEX_SHA256 (file_download.py), restated because listing
# the cache and completion do not import huggingface_hub; a test keeps them equal.
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
INCOMPLETE_SUFFIX = ".incomplete"


def hub_cache_dir() -> Path:
    """The folder huggingface_hub downloads into, by its own rules:
    HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


class CacheEscapeError(DownloadError):
    """A path that would leave the Hugging Face cache."""


def is_within_cache(path: Path) -> bool:
    """True when `path` stays inside the cache both as written (no `..` or
    absolute part leads out) and once symlinks are followed. A top-level entry
    the user moved to another disk and linked back (`models--org--repo` ->
    /mnt/big/…) counts as inside: what is below it is still the cache."""
    root = hub_cache_dir()
    written = Path(os.path.abspath(path))
    absolute_root = Path(os.path.abspath(root))
    if written == absolute_root or absolute_root not in written.parents:
        return False
    real = Path(os.path.realpath(written))
    top = absolute_root / written.relative_to(absolute_root).parts[0]
    return any(
        real == base or base in real.parents for base in {Path(os.path.realpath(root)), Path(os.path.realpath(top))}
    )


def within_cache(path: Path, what: str = "path") -> Path:
    """`path` itself, or CacheEscapeError: every path chatllm writes, links or
    deletes in the cache goes through here (blobs, partial files, snapshot
    links and their targets, refs, locks)."""
    if not is_within_cache(path):
        raise CacheEscapeError(
            f"refusing to use {what} {path}: it is outside the Hugging Face cache at {hub_cache_dir()}"
        )
    return path


def cache_path(*parts: str) -> Path:
    """`<cache>/<parts…>`, checked by `within_cache`."""
    return within_cache(hub_cache_dir().joinpath(*parts))


def repo_folder(repo: str) -> Path:
    return cache_path("models--" + repo.replace("/", "--"))


def lock_path(repo: str, sha256: str) -> Path:
    """The lock huggingface_hub itself takes for this blob, so a chatllm pull and
    an `hf download` of the same file also wait for each other."""
    return cache_path(".locks", repo_folder(repo).name, f"{sha256}.lock")


def blob_path(repo: str, sha256: str, suffix: str = "") -> Path:
    """`blobs/<sha256>` (with INCOMPLETE_SUFFIX: the partial download)."""
    return cache_path(repo_folder(repo).name, "blobs", sha256 + suffix)


def snapshot_path(repo: str, commit: str, path: str) -> Path:
    """`snapshots/<commit>/<path>`: the link to the blob, where tools open the file."""
    return cache_path(repo_folder(repo).name, "snapshots", commit, path)


def ref_path(repo: str, name: str = "main") -> Path:
    return cache_path(repo_folder(repo).name, "refs", name)


@dataclass(frozen=True)
class CachedModel:
    """A model variant present in the cache (every shard of a split model)."""

    repo: str
    commit: str
    variant: ModelVariant  # RepoFile.sha256 is the blob name when it is one
    paths: tuple[Path, ...]  # snapshot paths, first shard first: what llama.cpp opens

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def reference(self) -> str:
        """The shortest reference that selects this variant again."""
        if self.variant.quant:
            return f"{self.repo}:{self.variant.quant}"
        return f"{self.repo}/{self.variant.first.path}"

    def size_on_disk(self) -> int:
        return sum(_size(p) for p in self.paths)


def cached_models(repo: str | None = None) -> list[CachedModel]:
    """Every complete GGUF variant in the cache (of one repo when given), sorted
    by repo then file. For a file present in several snapshots, the one
    `refs/main` points to wins."""
    cache = hub_cache_dir()
    if repo is not None:
        folders = [repo_folder(repo)]
    else:
        try:
            folders = sorted(p for p in cache.iterdir() if p.name.startswith("models--"))
        except OSError:
            return []
    found: list[CachedModel] = []
    for folder in folders:
        found.extend(_models_in_folder(folder))
    return found


def find_cached_model(reference: HubReference) -> CachedModel | None:
    """The cached variant that `reference` selects, or None. `org/repo` alone
    picks among cached variants with the same preference as a pull."""
    models = cached_models(reference.repo)
    if not models:
        return None
    try:
        variant = choose_variant([m.variant for m in models], reference)
    except ModelError:  # not this quantization or file: not cached
        return None
    return next(m for m in models if m.variant == variant)


def _models_in_folder(folder: Path) -> list[CachedModel]:
    snapshots = folder / "snapshots"
    try:
        commits = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return []
    main = _read_ref(folder)
    # refs/main first, then newest: the first snapshot holding a path wins.
    commits.sort(key=lambda p: (p.name != main, -_mtime(p)))
    files: dict[str, tuple[str, RepoFile, Path]] = {}
    for commit_dir in commits:
        for local in _gguf_files(commit_dir):
            relative = local.relative_to(commit_dir).as_posix()
            if relative in files or not local.exists():  # a dangling link: blob deleted
                continue
            files[relative] = (commit_dir.name, RepoFile(relative, _size(local), _blob_sha256(local)), local)
    repo = folder.name.removeprefix("models--").replace("--", "/", 1)
    models = []
    for variant in group_variants([entry[1] for entry in files.values()]):
        paths = tuple(files[f.path][2] for f in variant.files)
        models.append(CachedModel(repo=repo, commit=files[variant.first.path][0], variant=variant, paths=paths))
    return models


def _gguf_files(commit_dir: Path) -> list[Path]:
    found: list[Path] = []
    for root, _dirs, names in os.walk(commit_dir):
        found.extend(Path(root) / n for n in names if is_model_file(n))
    return found


def _read_ref(folder: Path) -> str | None:
    try:
        return (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None


def _blob_sha256(snapshot_path: Path) -> str | None:
    """The sha256 a snapshot file should have: LFS blobs are named after it."""
    try:
        name = Path(os.readlink(snapshot_path)).name if snapshot_path.is_symlink() else None
    except OSError:
        return None
    return name if name and SHA256_PATTERN.fullmatch(name) else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# Verification markers -------------------------------------------------------
# Hashing a 5 GB file takes seconds, so a blob is hashed once and a marker
# remembers it, keyed by the blob's identity (path, size, mtime): a file that
# changes afterwards is hashed again.


def _marker_path(blob: Path) -> Path:
    key = hashlib.sha256(str(blob.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "verified" / key


def _identity(blob: Path) -> str:
    stat = blob.stat()
    return f"{blob.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def is_verified(blob: Path) -> bool:
    try:
        return _marker_path(blob).read_text() == _identity(blob)
    except OSError:
        return False


def mark_verified(blob: Path) -> None:
    """Record that `blob` matched its sha256. Best effort: a read-only cache
    folder only means hashing again next time."""
    marker = _marker_path(blob)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        temporary = marker.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(_identity(blob))
        os.replace(temporary, marker)
    except OSError:
        pass


def forget_verified(blob: Path) -> None:
    try:
        _marker_path(blob).unlink()
    except OSError:
        pass


def file_sha256(path: Path, chunk_size: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# Removal --------------------------------------------------------------------


def remove_cached_model(model: CachedModel) -> int:
    """Delete the model's snapshot links, the blobs no other snapshot links to,
    and its partial downloads; drop the repo folder once no file is left in
    any snapshot. Returns the bytes freed. A link that leads out of the cache
    is removed, never what it points to."""
    folder = repo_folder(model.repo)
    freed = 0
    blobs = set()
    for path in model.paths:
        if path.is_symlink() and is_within_cache(path.parent):
            if is_within_cache(path):  # where the link leads, too
                blobs.add(path.resolve())
        elif is_within_cache(path):
            freed += _size(path)  # no-symlink caches (Windows) hold copies
            forget_verified(path)
        else:
            continue
        path.unlink(missing_ok=True)
    still_linked = {p.resolve() for p in _all_snapshot_files(folder)}
    for blob in blobs - still_linked:
        freed += _size(blob)
        forget_verified(blob)
        blob.unlink(missing_ok=True)
    for shard in model.variant.files:
        if shard.sha256:
            for partial in (folder / "blobs").glob(f"{shard.sha256}*{INCOMPLETE_SUFFIX}"):
                freed += _size(partial)
                partial.unlink(missing_ok=True)
    _prune_empty_dirs(folder / "snapshots")
    if not _all_snapshot_files(folder):
        freed += _folder_size(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return freed


def _all_snapshot_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, _dirs, names in os.walk(folder / "snapshots"):
        files.extend(Path(root) / n for n in names)
    return files


def _prune_empty_dirs(top: Path) -> None:
    for root, _dirs, _names in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        if root != str(top):
            try:
                os.rmdir(root)
            except OSError:
                pass


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if not path.is_symlink():
                total += _size(path)
    return total


def cache_size() -> int:
    """Bytes used by the whole Hugging Face cache (blobs, not links)."""
    return _folder_size(hub_cache_dir())


def cached_model_references() -> list[str]:
    """`org/repo:QUANT` for every cached model: cheap (directory listings and
    symlink reads only), for shell completion."""
    return [model.reference for model in cached_models()]
