"""On-disk layout of one artifact inside a storage root (docs/internals.md "On-disk layout").

```
ROOT/P                                   -> relative symlink to .modeldepot/store/P/<version>
ROOT/.modeldepot/store/P/<version>/...   published, verified files + .modeldepot/manifest.json
ROOT/.modeldepot/staging/P/<version>/... files being downloaded + .modeldepot/partial.json
```
`<version>` is the commit, or `<commit>.1` when that commit is already published with another file
selection (so the published copy is never modified in place). Publishing renames the staging
directory into the store and swaps the symlink atomically; other versions are removed afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modeldepot import errors
from modeldepot.fetcher.manifest import META_DIR, FileEntry, Manifest

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/data")
PARTIAL_NAME = "partial.json"
_VERSION_RE = re.compile(r"^[0-9a-fA-F]{7,64}(\.1)?$")


def is_version_name(name: str) -> bool:
    """Only such directories are ever deleted as "other versions" (paths of artifacts may nest)."""
    return _VERSION_RE.match(name) is not None


def default_root(target: Path) -> Path:
    """`/data` (the fetch pod's mount) when the target is below it, else the target's parent."""
    if DEFAULT_ROOT in target.parents:
        return DEFAULT_ROOT
    return target.parent


@dataclass(frozen=True)
class StagedFile:
    """A verified file in staging, as recorded in partial.json."""

    size: int
    sha256: str
    mtime_ns: int


class PartialState:
    """`staging/P/<version>/.modeldepot/partial.json`: files of the staging dir already verified.

    An entry is trusted only while the file keeps the recorded size and mtime. Saving is throttled
    (`min_interval`) because it rewrites the whole file; `flush()` forces it.
    """

    def __init__(self, staging_dir: Path, commit: str, *, min_interval: float = 1.0) -> None:
        self._dir = staging_dir
        self._path = staging_dir / META_DIR / PARTIAL_NAME
        self.commit = commit
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._last_save = float("-inf")
        self._dirty = False
        self.files: dict[str, StagedFile] = {}
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            if data.get("commit") == commit:
                for path, f in data.get("files", {}).items():
                    self.files[path] = StagedFile(int(f["size"]), str(f["sha256"]), int(f["mtimeNs"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    def verified(self, path: str, size: int, sha256: str | None) -> FileEntry | None:
        """The entry if `path` is recorded as verified and still looks untouched on disk."""
        rec = self.files.get(path)
        if rec is None or rec.size != size or (sha256 is not None and rec.sha256 != sha256.lower()):
            return None
        try:
            st = (self._dir / path).stat()
        except OSError:
            return None
        if st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
            return None
        return FileEntry(path, rec.size, rec.sha256)

    def record(self, entry: FileEntry) -> None:
        mtime = (self._dir / entry.path).stat().st_mtime_ns
        with self._lock:
            self.files[entry.path] = StagedFile(entry.size, entry.sha256, mtime)
            self._dirty = True
            if time.monotonic() - self._last_save >= self._min_interval:
                self._save_locked()

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._save_locked()

    def _save_locked(self) -> None:
        data = {
            "commit": self.commit,
            "files": {
                p: {"size": f.size, "sha256": f.sha256, "mtimeNs": f.mtime_ns} for p, f in self.files.items()
            },
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(PARTIAL_NAME + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self._path)
        self._last_save = time.monotonic()
        self._dirty = False


class Layout:
    """Paths and operations for artifact path `P` (the target) inside a storage root."""

    def __init__(self, target: Path, root: Path | None = None) -> None:
        self.target = Path(os.path.abspath(target))
        self.root = Path(os.path.abspath(root)) if root is not None else default_root(self.target)
        if self.root not in self.target.parents:
            raise errors.InvalidSpecError(f"target {self.target} is not inside the storage root {self.root}")
        rel = PurePosixPath(self.target.relative_to(self.root).as_posix())
        if rel.parts[0] == META_DIR or any(p in ("..", ".") for p in rel.parts):
            raise errors.InvalidSpecError(f"invalid artifact path {rel}")
        self.rel = rel
        self.meta = self.root / META_DIR
        self.store_parent = self.meta / "store" / rel
        self.staging_parent = self.meta / "staging" / rel

    def store_dir(self, version: str) -> Path:
        return self.store_parent / version

    def staging_dir(self, version: str) -> Path:
        return self.staging_parent / version

    def current_version(self) -> str | None:
        """The store version the target symlink points to, if it points into our store."""
        try:
            link = os.readlink(self.target)
        except OSError:
            return None
        resolved = Path(os.path.normpath(self.target.parent / link))
        if resolved.parent != self.store_parent or not resolved.is_dir():
            return None
        return resolved.name

    def current(self) -> tuple[str, Manifest] | None:
        """(version, manifest) of the published copy, if there is a valid one."""
        version = self.current_version()
        if version is None:
            return None
        manifest = Manifest.read(self.store_dir(version))
        return None if manifest is None else (version, manifest)

    def version_for(self, commit: str) -> str:
        """Where to build `commit`: never the currently published directory."""
        return f"{commit}.1" if self.current_version() == commit else commit

    def prepare_staging(self, version: str, keep: set[str]) -> Path:
        """Create the staging dir and delete files in it that are not in `keep` (planned paths)."""
        staging = self.staging_dir(version)
        staging.mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(staging, topdown=True):
            rel_dir = os.path.relpath(dirpath, staging)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != META_DIR]
            for name in filenames:
                rel = name if rel_dir == "." else f"{PurePosixPath(Path(rel_dir).as_posix())}/{name}"
                if rel not in keep:
                    (Path(dirpath) / name).unlink()
        return staging

    def link_into_staging(self, source: Path, staging: Path, path: str) -> None:
        """Hard-link an already verified file into staging (copy if linking is impossible)."""
        dest = staging / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(source, dest)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise errors.InsufficientStorageError(f"no space left while linking {path}") from None
            shutil.copyfile(source, dest)

    def free_bytes(self) -> int:
        self.meta.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.meta).free

    def publish(self, version: str, manifest: Manifest, *, fsync: bool = False) -> Path:
        """Write the manifest, move staging into the store, swap the symlink, drop other versions.

        With `fsync`, the directory entries are made durable too (file contents are the caller's).
        """
        staging = self.staging_dir(version)
        store = self.store_dir(version)
        manifest.write(staging)
        (staging / META_DIR / PARTIAL_NAME).unlink(missing_ok=True)
        self.store_parent.mkdir(parents=True, exist_ok=True)
        if store.exists():
            # Left by a run that died between this rename and the symlink swap (never the published one).
            if self.current_version() == version:
                raise errors.DownloadFailedError(f"refusing to replace the published directory {store}")
            shutil.rmtree(store)
        if fsync:
            for dirpath, _, _ in os.walk(staging):
                _fsync_dir(Path(dirpath))
        os.rename(staging, store)
        if fsync:
            _fsync_dir(self.store_parent)
        self._swap_symlink(store)
        if fsync:
            _fsync_dir(self.target.parent)
        self.remove_other_versions(version)
        return store

    def _swap_symlink(self, store: Path) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if self.target.is_dir() and not self.target.is_symlink():
            try:
                self.target.rmdir()
            except OSError:
                raise errors.InvalidSpecError(
                    f"{self.target} exists and is a directory not managed by modeldepot"
                ) from None
        elif self.target.exists() and not self.target.is_symlink():
            raise errors.InvalidSpecError(f"{self.target} exists and is not managed by modeldepot")
        tmp = self.target.with_name(f".{self.target.name}.modeldepot-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(store, self.target.parent), tmp)
        os.replace(tmp, self.target)

    def ensure_published(self, version: str) -> None:
        """Point the target at an existing store version (used when nothing had to be fetched)."""
        if self.current_version() != version:
            self._swap_symlink(self.store_dir(version))
        self.remove_other_versions(version)

    def remove_other_versions(self, keep: str) -> None:
        for parent in (self.store_parent, self.staging_parent):
            with contextlib.suppress(FileNotFoundError):
                for child in parent.iterdir():
                    if child.name == keep and parent == self.store_parent:
                        continue
                    if is_version_name(child.name) and child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.staging_parent.rmdir()

    def remove_all(self) -> None:
        """Delete the target link, `store/P` and `staging/P` and then-empty parents (`modeldepot cleanup`)."""
        if self.target.is_symlink():
            self.target.unlink()
        for parent in (self.store_parent, self.staging_parent):
            if parent.is_dir() and not parent.is_symlink():
                shutil.rmtree(parent)
        for leaf, top in (
            (self.store_parent.parent, self.meta / "store"),
            (self.staging_parent.parent, self.meta / "staging"),
            (self.target.parent, self.root),
        ):
            _remove_empty_parents(leaf, top)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_empty_parents(path: Path, top: Path) -> None:
    """rmdir `path` and its ancestors below `top` while they are empty."""
    while path != top and top in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
