"""Canonical manifest of a published model directory and its digest (docs/internals.md).

The digest is `"sha256:" + sha256("".join(f"{path}\\t{size}\\t{sha256}\\n" ...))` over the files
sorted by their UTF-8 path bytes; nothing under `.modeldepot/` takes part.

This canonical form is unambiguous: a path never contains a tab or a newline, because the fetcher
refuses every file name with a control character (C0 or DEL, `remote.check_remote_path`), a size is
a non-negative decimal integer and a sha256 is hex. `compute_digest` (and so `Manifest.digest`)
raises ValueError for an entry that breaks this, and `Manifest.from_dict` refuses one, so two
different file sets can never share a digest by playing with separators.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

META_DIR = ".modeldepot"
MANIFEST_NAME = "manifest.json"
HASH_CHUNK = 8 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, order=True)
class FileEntry:
    """One file of a manifest: POSIX path relative to the model root, size and hex sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def sort_entries(files: Iterable[FileEntry]) -> list[FileEntry]:
    """Sort by the UTF-8 bytes of the path (the canonical order)."""
    return sorted(files, key=lambda f: f.path.encode("utf-8"))


def check_entry(f: FileEntry) -> FileEntry:
    """`f` if the canonical form can encode it unambiguously, else ValueError.

    The path must be non-empty UTF-8 without control characters (no tab, no newline), the size a
    non-negative int and the sha256 free of control characters too.
    """
    if not isinstance(f.path, str) or not f.path or _CONTROL.search(f.path):
        raise ValueError(f"file name not allowed in a manifest: {f.path!r:.200}")
    f.path.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if not isinstance(f.size, int) or isinstance(f.size, bool) or f.size < 0:
        raise ValueError(f"invalid size in a manifest entry: {f.size!r:.50}")
    if not isinstance(f.sha256, str) or _CONTROL.search(f.sha256):
        raise ValueError(f"invalid sha256 in a manifest entry: {f.sha256!r:.100}")
    return f


def compute_digest(files: Iterable[FileEntry]) -> str:
    """The canonical digest of a set of files (ValueError for an entry `check_entry` refuses)."""
    h = hashlib.sha256()
    for f in sort_entries(check_entry(f) for f in files):
        h.update(f"{f.path}\t{f.size}\t{f.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def utc_now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class Manifest:
    """`.modeldepot/manifest.json` of a published version."""

    repo: str
    repo_type: str
    revision: str
    commit: str
    files: list[FileEntry]
    created_at: str = field(default_factory=utc_now_rfc3339)

    def __post_init__(self) -> None:
        self.files = sort_entries(self.files)

    @property
    def digest(self) -> str:
        return compute_digest(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "repoType": self.repo_type,
            "revision": self.revision,
            "commit": self.commit,
            "files": [f.to_dict() for f in self.files],
            "digest": self.digest,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        files = [
            check_entry(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"]))) for f in data["files"]
        ]
        return cls(
            repo=str(data["repo"]),
            repo_type=str(data.get("repoType", "model")),
            revision=str(data.get("revision", "")),
            commit=str(data["commit"]),
            files=files,
            created_at=str(data.get("createdAt", "")),
        )

    def to_json(self) -> bytes:
        """The bytes of `manifest.json`."""
        return (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse `manifest.json` (ValueError, KeyError or TypeError when malformed)."""
        return cls.from_dict(json.loads(data))

    def write(self, model_dir: Path) -> Path:
        """Write atomically to `model_dir/.modeldepot/manifest.json` (the fetcher goes through safefs)."""
        meta = model_dir / META_DIR
        meta.mkdir(parents=True, exist_ok=True)
        path = meta / MANIFEST_NAME
        tmp = meta / (MANIFEST_NAME + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, model_dir: Path) -> Manifest | None:
        """The manifest of `model_dir`, or None if missing or unreadable."""
        try:
            with (model_dir / META_DIR / MANIFEST_NAME).open(encoding="utf-8") as fh:
                return cls.from_dict(json.load(fh))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def entries_of_dir(model_dir: Path) -> list[FileEntry]:
    """Hash every regular file under `model_dir` (following a top-level symlink, skipping `.modeldepot/`)."""
    root = Path(os.path.realpath(model_dir))
    entries: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != META_DIR]
        for name in filenames:
            full = Path(dirpath) / name
            rel = name if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{name}"
            entries.append(FileEntry(rel, full.stat().st_size, sha256_of_file(full)))
    return sort_entries(entries)


def digest_of_dir(model_dir: Path) -> str:
    """The canonical digest of the files actually on disk under `model_dir`."""
    return compute_digest(entries_of_dir(model_dir))
