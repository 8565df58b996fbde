"""A Hugging Face Hub stand-in on 127.0.0.1 for tests: the few endpoints
huggingface_hub 2.x calls to list a repo and fetch files, and switches for the
faults a real network has.

  GET  /api/models/{repo}[/revision/{rev}][?blobs=true]   model_info (siblings, sha)
  HEAD /{repo}/resolve/{rev}/{path}   metadata (X-Repo-Commit, ETag, X-Linked-*)
  GET  /{repo}/resolve/{rev}/{path}   the file, or a redirect for LFS files
  GET  /cdn/{sha256}                  LFS bodies, with Range/206 (the "CDN")

`hostile` makes it a mirror that lies (tests/test_faults_hub.py): a commit, an
LFS sha256 or file names that would lead a careless client outside its cache.

LFS files (*.gguf) behave like on the Hub: `resolve` answers 302 to the CDN
URL with X-Linked-Etag (the sha256) and X-Linked-Size. Unknown repos get 401
with `X-Error-Code: RepoNotFound`, missing files 404 `EntryNotFound`, as the
Hub does, so huggingface_hub raises its usual exceptions.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".bin", ".safetensors")


@dataclass
class ServedFile:
    source: Path | bytes
    sha256: str
    size: int
    git_sha1: str

    def read(self, start: int, end: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start:end]
        with self.source.open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


@dataclass
class Faults:
    """Switches a test flips; counts apply to CDN GETs (file bodies)."""

    cut_after_bytes: int | None = None  # close the connection at this offset of the file…
    cuts_remaining: int = 0  # …for this many responses
    corrupt: bool = False  # flip one byte in every body served
    stall_after_bytes: int | None = None  # stop after this many bytes until `release` is set
    stall_reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    status_for_api: int | None = None  # answer model_info with this status


@dataclass
class Hostile:
    """What a hostile mirror claims instead of the truth (None: the truth).
    File names need no switch: serve a repo whose names are hostile."""

    commit: str | None = None  # the listing's sha and every X-Repo-Commit
    # Every LFS file's lfs.sha256 in the listing; its ETag is then a git sha1,
    # not a sha256, so a client falls back on the listing's value.
    lfs_sha256: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubServer:
    """Start with `start()`, point HF_ENDPOINT at `url`, stop with `stop()`."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, ServedFile]]] = {}
        self.blobs: dict[str, ServedFile] = {}
        self.faults = Faults()
        self.hostile = Hostile()
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_repo(self, repo: str, files: dict[str, Path | bytes], commit: str | None = None) -> str:
        """Serve `files` (repo path → bytes or a file on disk) as `repo`; returns the commit."""
        served = {}
        for path, source in files.items():
            data_hash, git_hash, size = _hashes(source)
            served[path] = ServedFile(source=source, sha256=data_hash, size=size, git_sha1=git_hash)
            self.blobs[data_hash] = served[path]
        commit = commit or hashlib.sha1(repr(sorted((p, f.sha256) for p, f in served.items())).encode()).hexdigest()
        self.repos[repo] = (commit, served)
        return commit

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """The same server under another host name, as the Hub's CDN is another
        host: clients must not follow it for metadata nor send the token to it."""
        assert self._server is not None
        return f"http://localhost:{self._server.server_address[1]}"

    def start(self) -> HubServer:
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.faults.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record(self, method: str, path: str, range_header: str | None, authorization: str | None) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, range_header, authorization))

    def body_requests(self) -> list[RequestRecord]:
        """GETs of file bodies (the downloads themselves)."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.startswith("/cdn/")]


def _hashes(source: Path | bytes) -> tuple[str, str, int]:
    sha256 = hashlib.sha256()
    size = 0
    chunks = [source] if isinstance(source, bytes) else _file_chunks(source)
    for chunk in chunks:
        sha256.update(chunk)
        size += len(chunk)
    git = hashlib.sha1(f"blob {size}\0".encode())
    for chunk in [source] if isinstance(source, bytes) else _file_chunks(source):
        git.update(chunk)
    return sha256.hexdigest(), git.hexdigest(), size


def _file_chunks(path: Path):
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.hub.record(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
        if match := _API.match(path):
            return self._model_info(match["repo"], parse_qs(split.query))
        # Matched before unquoting: a revision may hold an encoded '/'.
        if match := _RESOLVE.match(split.path):
            return self._resolve(unquote(match["repo"]), unquote(match["rev"]), unquote(match["path"]), head)
        if match := _CDN.match(path):
            served = self.hub.blobs.get(match["sha"])
            if served is None:
                return self._error(404, "EntryNotFound")
            return self._body(served, head, {"ETag": f'"{served.sha256}"'})
        if found := self._by_normalized_url(path):
            return self._resolve(found[0], "main", found[1], head)
        self._error(404, None)

    def _by_normalized_url(self, path: str) -> tuple[str, str] | None:
        """(repo, file) whose resolve URL an HTTP client sends as `path` once it
        has removed its dot segments (RFC 3986): `../x.gguf` arrives as `/x.gguf`."""
        for repo, (_commit, files) in self.hub.repos.items():
            for name in files:
                if posixpath.normpath(f"/{repo}/resolve/main/{name}") == path:
                    return repo, name
        return None

    def _repo(self, repo: str) -> tuple[str, dict[str, ServedFile]] | None:
        return self.hub.repos.get(repo)

    def _model_info(self, repo: str, query: dict[str, list[str]]) -> None:
        if self.hub.faults.status_for_api:
            return self._error(self.hub.faults.status_for_api, None)
        found = self._repo(repo)
        if found is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        commit, files = found
        hostile = self.hub.hostile
        with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, served in sorted(files.items()):
            entry: dict = {"rfilename": path}
            if with_blobs:
                entry.update(size=served.size, blobId=served.git_sha1)
                if path.endswith(LFS_SUFFIXES):
                    sha256 = hostile.lfs_sha256 or served.sha256
                    entry["lfs"] = {"size": served.size, "sha256": sha256, "pointerSize": 134}
            siblings.append(entry)
        body = {
            "_id": commit[:24],
            "id": repo,
            "modelId": repo,
            "sha": hostile.commit or commit,
            "private": False,
            "siblings": siblings,
            "tags": ["gguf"],
        }
        self._json(200, body)

    def _resolve(self, repo: str, rev: str, path: str, head: bool) -> None:
        found = self._repo(repo)
        if found is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        commit, files = found
        hostile = self.hub.hostile
        if rev not in ("main", commit, hostile.commit):
            return self._error(404, "RevisionNotFound")
        served = files.get(path)
        if served is None:
            return self._error(404, "EntryNotFound", extra={"X-Repo-Commit": commit})
        common = {"X-Repo-Commit": hostile.commit or commit}
        if path.endswith(LFS_SUFFIXES):
            location = f"{self.hub.cdn_url}/cdn/{served.sha256}?file={quote(path)}"
            etag = served.git_sha1 if hostile.lfs_sha256 else served.sha256
            self.send_response(302)
            for key, value in {
                **common,
                "Location": location,
                "ETag": f'"{etag}"',
                "X-Linked-Etag": f'"{etag}"',
                "X-Linked-Size": str(served.size),
                "Content-Length": "0",
            }.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self._body(served, head, {**common, "ETag": f'"{served.git_sha1}"'})

    def _body(self, served: ServedFile, head: bool, headers: dict[str, str]) -> None:
        start, end = 0, served.size
        status = 200
        requested = self.headers.get("Range")
        if requested and (match := _RANGE.match(requested)):
            start = int(match[1])
            end = int(match[2]) + 1 if match[2] else served.size
            if start >= served.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{served.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{served.size}")
        self.end_headers()
        if head:
            return
        self._stream(served, start, end)

    def _stream(self, served: ServedFile, start: int, end: int) -> None:
        faults = self.hub.faults
        cut = None
        with self.hub._lock:
            if faults.cut_after_bytes is not None and faults.cuts_remaining > 0:
                faults.cuts_remaining -= 1
                cut = faults.cut_after_bytes
        data = bytearray(served.read(start, end))
        if faults.corrupt and data:
            data[len(data) // 2] ^= 0xFF
        limit = len(data) if cut is None else max(0, min(cut - start, len(data)))
        stall = faults.stall_after_bytes
        if stall is not None and stall < limit:
            self.wfile.write(data[:stall])
            self.wfile.flush()
            faults.stall_reached.set()
            faults.release.wait(timeout=60)
            self.wfile.write(data[stall:limit])
        else:
            self.wfile.write(data[:limit])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(2)

    def _json(self, status: int, body: object, extra: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, code: str | None, message: str = "", extra: dict[str, str] | None = None) -> None:
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        self._json(status, {"error": message or code or "not found"}, headers)
