"""The content-addressed store of one storage root: every verified file once, by sha256.

```
ROOT/.modeldepot/blobs/sha256/<sha256>   a verified file, read-only (0444); published versions
                                         are trees of hard links to these inodes
ROOT/.modeldepot/blobs/git/<blob id>     index of small (non-LFS) files, which the Hub names only
                                         by their git blob id: the sha256 of their blob, as text
```
`ingest` adds the files of a version about to be published (an atomic `link` of the verified
staging file: two fetchers writing the same blob never see a half-written one, the second finds
it there); `reuse` hard-links a blob into a staging directory instead of transferring it; `collect`
removes the blobs no manifest names any more (`modeldepot cleanup`, and each publish, which
drops the versions it replaces).

Trust (docs/security.md "The content-addressed store"): a blob is reused only after the staged
link to it is checked through its own fd (a regular file of the right size; a symlink or special
file planted in the store is removed, never followed), and re-hashed (sha256, plus the git blob
id of a small file) unless the root is `trusted`: a node-local root, which only the fetcher
writes, where a blob owned by the fetcher's uid and writable by nobody is taken as the fetcher
left it. A blob that does not hash to its name is dropped from the store and the file is
transferred instead: a planted or modified blob is never published.

No lock is needed: every change is one atomic call (`link`, `unlink`), and the published trees
never depend on a store name existing (they hold their own links to the inodes). `collect` only
removes a blob no manifest names and no other tree links (`st_nlink == 1`), so a fetch that has
just linked one into its staging directory keeps its file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from modeldepot import errors
from modeldepot.fetcher.manifest import HASH_CHUNK, META_DIR, FileEntry
from modeldepot.fetcher.safefs import Dir

__all__ = ["BLOBS_DIR", "BlobStore", "Reused", "hash_fd"]

log = logging.getLogger(__name__)

BLOBS_DIR = "blobs"
"""Below `ROOT/.modeldepot/`."""
_SHA256 = "sha256"
_GIT = "git"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_BLOB_ID_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
BLOB_MODE = 0o444
REUSING_DIR = f"{META_DIR}/reusing"
"""Below a staging directory: blobs linked there while they are checked."""


def hash_fd(fd: int, size: int, *, git: bool = False) -> tuple[str, str | None]:
    """(sha256, git blob id if `git`) of the first `size` bytes of `fd`, read from offset 0."""
    h = hashlib.sha256()
    g = None
    if git:
        g = hashlib.sha1(usedforsecurity=False)
        g.update(b"blob %d\0" % size)
    offset = 0
    while offset < size:
        data = os.pread(fd, min(HASH_CHUNK, size - offset), offset)
        if not data:
            break
        h.update(data)
        if g is not None:
            g.update(data)
        offset += len(data)
    return h.hexdigest(), None if g is None else g.hexdigest()


@dataclass(frozen=True)
class Reused:
    """A blob linked into staging: the entry for the manifest."""

    entry: FileEntry


class BlobStore:
    """The store below `meta` (the open `ROOT/.modeldepot`).

    `trusted`: the root is written by fetchers only (node-local), so a frozen blob (ours, 0444)
    is not re-hashed before reuse; otherwise (a claim tenant pods may mount read-write, or a run
    on a laptop) every reused blob is re-hashed.
    """

    def __init__(self, meta: Dir, *, trusted: bool = False) -> None:
        self._meta = meta
        self.trusted = trusted

    def _open(self, kind: str, *, create: bool = False) -> Dir:
        return self._meta.open_dir(f"{BLOBS_DIR}/{kind}", create=create)

    # -- reuse ----------------------------------------------------------------------------------

    def reuse(self, staging: Dir, path: str, *, size: int, sha256: str | None, blob_id: str) -> Reused | None:
        """Hard-link the blob of this content as `staging/path` if the store holds a good one.

        `sha256`: the Hub's LFS hash; None for a small file known only by its `blob_id`. Returns
        None (and leaves nothing at `staging/path`) when there is no usable blob.
        """
        sha = sha256.lower() if sha256 is not None else self._sha_of_blob_id(blob_id.lower())
        if sha is None or not _SHA256_RE.match(sha):
            return None
        # linked under a temporary name first: a partial download at `path` survives a bad blob
        tmp = f"{REUSING_DIR}/{hashlib.sha256(path.encode()).hexdigest()[:32]}"
        try:
            with self._open(_SHA256) as blobs:
                if not self._plausible(blobs, sha, size):
                    return None
                staging.mkdir(REUSING_DIR)
                staging.unlink(tmp, missing_ok=True)
                try:
                    blobs.link(sha, staging, tmp)
                except FileNotFoundError:  # collected meanwhile
                    return None
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise errors.InsufficientStorageError(f"no space left while linking {path}") from None
                    if exc.errno in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                        return None
                    raise
                if not self._check_linked(blobs, sha, staging, tmp, size, sha256 is None, blob_id):
                    return None
                dest = staging / path
                dest.make_parents()
                staging.rename(tmp, staging, path)
        except FileNotFoundError:
            return None
        except (errors.PathConflictError, PermissionError) as exc:  # a planted symlink; not ours to write
            log.warning("not reusing from the store: %s", exc)
            return None
        return Reused(FileEntry(path, size, sha))

    def _sha_of_blob_id(self, blob_id: str) -> str | None:
        if not _BLOB_ID_RE.match(blob_id):
            return None
        try:
            with self._open(_GIT) as index:
                fd = index.open_fd(blob_id, os.O_RDONLY)
                try:
                    text = os.pread(fd, 65, 0).decode("ascii", "replace").strip()
                finally:
                    os.close(fd)
        except (OSError, errors.PathConflictError):
            return None
        return text if _SHA256_RE.match(text) else None

    def _plausible(self, blobs: Dir, sha: str, size: int) -> bool:
        """Whether `blobs/sha` is a regular file of `size` bytes; anything else there is removed."""
        try:
            st = blobs.lstat(sha)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            log.warning("removing %s/%s from the store: not a regular file", blobs.path, sha)
            blobs.rmtree(sha)
            return False
        return st.st_size == size

    def _check_linked(
        self, blobs: Dir, sha: str, staging: Dir, path: str, size: int, small: bool, blob_id: str
    ) -> bool:
        """Check the inode now linked at `staging/path` (through its own fd, so it cannot be swapped
        between the check and its use); unlink it and drop the blob if it is not the content."""
        try:
            fd = staging.open_fd(path, os.O_RDONLY)
        except errors.PathConflictError:  # the blob was swapped for a symlink before the link
            staging.unlink(path, missing_ok=True)
            return False
        try:
            st = os.fstat(fd)
            frozen = st.st_uid == os.geteuid() and not st.st_mode & 0o222
            rehash = small or not (self.trusted and frozen)
            ok = st.st_size == size
            if ok and rehash:
                got, got_git = hash_fd(fd, size, git=small)
                ok = got == sha and (not small or got_git == blob_id.lower())
        finally:
            os.close(fd)
        if not ok:
            log.warning(
                "the store's blob %s is not the file it names (modified or planted): dropped, the file "
                "is transferred instead",
                sha[:12],
            )
            staging.unlink(path, missing_ok=True)
            with contextlib.suppress(OSError):
                if _same_inode(blobs.lstat(sha), st):
                    blobs.unlink(sha)
            return False
        return True

    # -- ingest ---------------------------------------------------------------------------------

    def ingest(self, staging: Dir, entries: Iterable[FileEntry], git_ids: dict[str, str]) -> int:
        """Make every verified staging file a blob (read-only) unless the store has that content.

        `git_ids`: path -> git blob id of the small files (indexed under `git/`). Returns how many
        files became blobs. A file the store already holds stays a separate inode in this version.
        """
        try:
            with self._open(_SHA256, create=True) as blobs, self._open(_GIT, create=True) as index:
                return self._ingest(staging, entries, git_ids, blobs, index)
        except (errors.PathConflictError, PermissionError) as exc:  # a planted symlink; not ours to write
            log.warning("not adding to the store: %s", exc)
            return 0

    def _ingest(
        self, staging: Dir, entries: Iterable[FileEntry], git_ids: dict[str, str], blobs: Dir, index: Dir
    ) -> int:
        added = 0
        for e in entries:
            if not _SHA256_RE.match(e.sha256):
                continue
            try:
                fd = staging.open_fd(e.path, os.O_RDONLY)
            except (FileNotFoundError, errors.PathConflictError):
                continue
            try:
                st = os.fstat(fd)
                if st.st_size != e.size:
                    continue
                if st.st_mode & 0o777 != BLOB_MODE:
                    os.fchmod(fd, BLOB_MODE)
            except PermissionError:  # not ours (only on a root others write): not a blob
                continue
            finally:
                os.close(fd)
            if self._link_new(staging, e, blobs):
                added += 1
            blob_id = (git_ids.get(e.path) or "").lower()
            if _BLOB_ID_RE.match(blob_id) and _sha_in(index, blob_id) != e.sha256:
                index.write_atomic(blob_id, e.sha256.encode("ascii"))
        return added

    def _link_new(self, staging: Dir, e: FileEntry, blobs: Dir) -> bool:
        """Link the staging file as blob `e.sha256` unless a plausible blob is there already."""
        for _ in range(2):
            try:
                staging.link(e.path, blobs, e.sha256)
                return True
            except FileExistsError:
                if self._plausible(blobs, e.sha256, e.size):
                    return False
                blobs.rmtree(e.sha256)  # a stray of another size: replaced by the verified file
            except OSError as exc:
                if exc.errno in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                    return False
                raise
        return False

    # -- garbage collection ---------------------------------------------------------------------

    def collect(self, referenced: set[str]) -> tuple[int, int]:
        """Remove blobs whose sha256 is not in `referenced` (the manifests of the root) and that no
        tree links any more; then index entries whose blob is gone. (blobs removed, bytes freed)."""
        removed = freed = 0
        try:
            blobs = self._open(_SHA256)
        except (FileNotFoundError, errors.PathConflictError):
            return 0, 0
        with blobs:
            names = set()
            for entry in blobs.scandir():
                try:
                    st = blobs.lstat(entry.name)
                except FileNotFoundError:
                    continue
                keep = entry.name in referenced or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)
                if keep and _SHA256_RE.match(entry.name) and stat.S_ISREG(st.st_mode):
                    names.add(entry.name)
                    continue
                blobs.rmtree(entry.name)
                removed += 1
                freed += st.st_size if stat.S_ISREG(st.st_mode) else 0
        with contextlib.suppress(FileNotFoundError, errors.PathConflictError), self._open(_GIT) as index:
            for entry in index.scandir():
                if _sha_in(index, entry.name) not in names:
                    index.rmtree(entry.name)
        if removed:
            log.info("store: removed %d blobs no manifest names (%d bytes)", removed, freed)
        return removed, freed


def _sha_in(index: Dir, name: str) -> str | None:
    try:
        text = index.read_bytes(name)[:65].decode("ascii", "replace").strip()
    except (OSError, errors.PathConflictError):
        return None
    return text if _SHA256_RE.match(text) else None


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
