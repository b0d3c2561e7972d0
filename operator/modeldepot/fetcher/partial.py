"""`staging/P/<version>/.modeldepot/partial.json`: which files of a staging directory are verified.

`{"commit", "files": {path: {"size", "sha256", "mtimeNs"}}}` (docs/internals.md "On-disk
layout"). An entry is trusted only while the file keeps the recorded size and mtime and is a
regular file; a record of another commit is ignored. Every access goes through the staging
directory's `safefs.Dir` (no symlink is followed).
"""

from __future__ import annotations

import json
import stat
import threading
import time
from dataclasses import dataclass

from modeldepot import errors
from modeldepot.fetcher.manifest import META_DIR, FileEntry
from modeldepot.fetcher.safefs import Dir

PARTIAL_NAME = "partial.json"
PARTIAL_REL = f"{META_DIR}/{PARTIAL_NAME}"


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

    def __init__(self, staging: Dir, commit: str, *, min_interval: float = 1.0) -> None:
        self._dir = staging
        self.commit = commit
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._last_save = float("-inf")
        self._dirty = False
        self.files: dict[str, StagedFile] = {}
        try:
            data = json.loads(staging.read_bytes(PARTIAL_REL))
            if data.get("commit") == commit:
                for path, f in data.get("files", {}).items():
                    self.files[path] = StagedFile(int(f["size"]), str(f["sha256"]), int(f["mtimeNs"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, errors.PathConflictError):
            pass

    def verified(self, path: str, size: int, sha256: str | None) -> FileEntry | None:
        """The entry if `path` is recorded as verified and still looks untouched on disk."""
        rec = self.files.get(path)
        if rec is None or rec.size != size or (sha256 is not None and rec.sha256 != sha256.lower()):
            return None
        try:
            st = self._dir.lstat(path)
        except (OSError, errors.PathConflictError):
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
            return None
        return FileEntry(path, rec.size, rec.sha256)

    def record(self, entry: FileEntry) -> None:
        mtime = self._dir.lstat(entry.path).st_mtime_ns
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
        self._dir.mkdir(META_DIR)
        self._dir.write_atomic(PARTIAL_REL, json.dumps(data).encode("utf-8"))
        self._last_save = time.monotonic()
        self._dirty = False
