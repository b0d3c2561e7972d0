"""File content of emulated repos: what the Hub advertises about a file, and where its bytes are.

Content is hashed once when a repo is added. Small files live in memory; large files are served
from disk. Synthetic content `(size, seed)` is deterministic; files above `memory_limit` are
generated once into `cache_dir` (default `~/.cache/modeldepot/hubemu`, env
`MODELDEPOT_HUBEMU_CACHE`) and their hashes are cached next to them, keyed by path, size, mtime and
inode, so a second run does not hash a GiB again.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import random
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

DEFAULT_LFS_THRESHOLD = 10 * 1000 * 1000
DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.onnx", "*.h5", "*.msgpack", "*.gguf",
    "*.pkl", "*.pickle", "*.npy", "*.npz", "*.tflite", "*.ot", "*.model", "*.arrow", "*.parquet",
    "*.zip", "*.tar", "*.tar.gz", "*.tgz", "*.gz", "*.zst", "*.7z", "*.wasm",
)  # fmt: skip
DEFAULT_MEMORY_LIMIT = 8 << 20
_COPY_CHUNK = 4 << 20
_GEN_CHUNK = 1 << 20

# A file's content: bytes or str (in memory), a Path (served from disk), or (size, seed) for
# deterministic pseudo-random bytes.
FileSpec = bytes | str | Path | tuple[int, int | str]


def default_cache_dir() -> Path:
    env = os.environ.get("MODELDEPOT_HUBEMU_CACHE")
    return Path(env) if env else Path.home() / ".cache/modeldepot/hubemu"


def git_blob_header(size: int) -> bytes:
    return b"blob %d\0" % size


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


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
class Hashes:
    sha256: str
    sha1: str  # git blob id of the content


def _hash_chunks(size: int, chunks: Iterable[bytes]) -> Hashes:
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(git_blob_header(size))
    for chunk in chunks:
        h256.update(chunk)
        h1.update(chunk)
    return Hashes(h256.hexdigest(), h1.hexdigest())


def _read_file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            yield chunk


@dataclass(frozen=True)
class Entry:
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
        return lfs_pointer(self.sha256, self.size)

    @property
    def oid(self) -> str:
        """The git blob id the Hub lists: the LFS pointer's for LFS files."""
        if not self.lfs:
            return self.content_oid
        pointer = self.pointer
        return hashlib.sha1(git_blob_header(len(pointer)) + pointer).hexdigest()

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

    def read(self, file: Any, start: int, end: int) -> bytes:
        """Bytes `start`..`end`; `file` is this entry's open disk file (None for in-memory data)."""
        if self.data is not None:
            return self.data[start:end]
        file.seek(start)
        return cast(bytes, file.read(end - start))


class ContentMaker:
    """Turns a `FileSpec` into an `Entry`: hashes it, decides LFS, keeps big content on disk."""

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.lfs_threshold = lfs_threshold
        self.lfs_patterns = tuple(lfs_patterns)
        self.memory_limit = memory_limit
        self._meta_lock = threading.Lock()

    def is_lfs(self, path: str, size: int) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= self.lfs_threshold or any(fnmatch.fnmatch(name, pat) for pat in self.lfs_patterns)

    def make_entry(self, path: str, spec: FileSpec) -> Entry:
        if isinstance(spec, str):
            spec = spec.encode()
        if isinstance(spec, bytes):
            hashes = _hash_chunks(len(spec), [spec])
            return Entry(path, len(spec), hashes.sha256, hashes.sha1, self.is_lfs(path, len(spec)), data=spec)
        if isinstance(spec, Path):
            size = spec.stat().st_size
            if size <= min(self.memory_limit, 1 << 20):
                return self.make_entry(path, spec.read_bytes())
            hashes = self._disk_hashes(spec)
            return Entry(path, size, hashes.sha256, hashes.sha1, self.is_lfs(path, size), disk=spec)
        size, seed = spec
        if size <= self.memory_limit:
            return self.make_entry(path, b"".join(_generate(size, seed)))
        disk = self._synthetic_file(size, seed)
        hashes = self._disk_hashes(disk)
        return Entry(path, size, hashes.sha256, hashes.sha1, self.is_lfs(path, size), disk=disk)

    def _synthetic_file(self, size: int, seed: int | str) -> Path:
        target = self.cache_dir / "synthetic" / f"{_seed_int(seed):016x}-{size}.bin"
        if target.is_file() and target.stat().st_size == size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        h256 = hashlib.sha256()
        h1 = hashlib.sha1(git_blob_header(size))
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
        self._store_meta(target, Hashes(h256.hexdigest(), h1.hexdigest()))
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

    def _store_meta(self, path: Path, hashes: Hashes) -> None:
        with self._meta_lock:
            meta = self._load_meta()
            meta[self._meta_key(path)] = {"sha256": hashes.sha256, "sha1": hashes.sha1}
            with contextlib.suppress(OSError):
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".hashes-")
                with os.fdopen(fd, "w") as f:
                    json.dump(meta, f)
                os.replace(tmp, self._meta_file())

    def _disk_hashes(self, path: Path) -> Hashes:
        """Hashes of a large disk file, cached by (path, size, mtime, inode) across runs."""
        with self._meta_lock:
            cached = self._load_meta().get(self._meta_key(path))
        if cached:
            return Hashes(cached["sha256"], cached["sha1"])
        hashes = _hash_chunks(path.stat().st_size, _read_file_chunks(path))
        self._store_meta(path, hashes)
        return hashes
