"""What one file of a transfer must be, and the running check of the bytes written so far.

A `TransferItem` names a file, where it goes and what it must hash to: the LFS sha256, or for a
small file only its git blob id (sha1 of `b"blob <size>\\0" + content`). `FileState` hashes the
bytes of one file as they are written (sha256 always, the blob sha1 when that is what the Hub
gave) and says at the end whether they are the file (`verified`). No network, no disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from modeldepot.fetcher.safefs import Location


@dataclass(frozen=True)
class TransferItem:
    """One file to bring into `dest`, and what it must hash to.

    `dest` is a `safefs.Location`: every access resolves it beneath the staging directory without
    following symlinks (the storage root is shared with other tenants).
    """

    path: str
    url: str
    dest: Location
    size: int
    blob_id: str
    sha256: str | None
    """Expected sha256 (LFS files); None: verify against `blob_id`."""


@dataclass(frozen=True)
class VerifiedFile:
    path: str
    size: int
    sha256: str


class Hashers:
    """sha256 of the bytes so far, plus the git blob sha1 for a file known only by its blob id."""

    def __init__(self, item: TransferItem) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1: Any = None
        if item.sha256 is None:
            self.sha1 = hashlib.sha1(usedforsecurity=False)
            self.sha1.update(b"blob %d\0" % item.size)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class FileState:
    """Bytes of one file hashed so far (from byte 0, in order)."""

    def __init__(self, item: TransferItem) -> None:
        self.item = item
        self.offset = 0
        self.hashers = Hashers(item)

    def reset(self) -> None:
        self.offset = 0
        self.hashers = Hashers(self.item)

    def verified(self) -> VerifiedFile | None:
        if self.offset != self.item.size:
            return None
        sha256 = self.hashers.sha256.hexdigest()
        if self.item.sha256 is not None:
            ok = sha256 == self.item.sha256.lower()
        else:
            ok = self.hashers.sha1 is not None and self.hashers.sha1.hexdigest() == self.item.blob_id.lower()
        return VerifiedFile(self.item.path, self.item.size, sha256) if ok else None
