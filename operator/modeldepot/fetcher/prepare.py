"""`modeldepot prepare`: the root init step of node-local fetch Jobs.

hostPath directories are created root-owned and `fsGroup` does not apply to hostPath, so before the
fetcher (uid 65532) runs, a root container with only CAP_CHOWN and CAP_DAC_OVERRIDE creates the
directories it writes into: the root's metadata directories and the parents of the artifact path
`P` under the root, the store and staging. It walks every path one component at a time from its
parent's fd without following symlinks (`safefs`), and chowns only directories it has just created
itself, through their fd: a directory that already exists is left as it is, whoever owns it, and a
symlink anywhere on the way is refused (`PathConflict`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path, PurePosixPath

from modeldepot import errors
from modeldepot.fetcher import safefs
from modeldepot.fetcher.layout import default_root
from modeldepot.fetcher.manifest import META_DIR

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
METADATA_DIRS = ("store", "staging", "owners", "blobs", "blobs/sha256", "blobs/git")
"""Below `.modeldepot/`; `blobs/`: the content-addressed store (`store.py`)."""


def directories_for(rel: PurePosixPath) -> list[str]:
    """The directories (relative to the root) the fetcher of artifact path `rel` writes into."""
    parent = rel.parent.parts if len(rel.parts) > 1 else ()
    dirs = [META_DIR, *(f"{META_DIR}/{d}" for d in METADATA_DIRS)]
    for base in ("", f"{META_DIR}/store", f"{META_DIR}/staging"):
        for depth in range(1, len(parent) + 1):
            dirs.append("/".join(filter(None, (base, *parent[:depth]))))
    return dirs


def _ensure(root_fd: int, rel: str, uid: int, gid: int) -> bool:
    """Create `rel` beneath the root if missing; True when this call created (and chowned) it."""
    parts = safefs.split(rel)
    fd = os.dup(root_fd)
    created = False
    try:
        for i, name in enumerate(parts):
            created = False
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                pass
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    shown = "/".join(parts[: i + 1])
                    raise errors.PathConflictError(
                        f"{shown} is a symlink or not a directory; refusing to follow it"
                    ) from None
                raise
            os.close(fd)
            fd = child
            if created:
                # through the fd we just opened with O_NOFOLLOW: never a swapped-in symlink
                os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    return created


def prepare(target: Path, *, root: Path | None = None, uid: int, gid: int) -> list[str]:
    """Create the directories for artifact path `target`; returns those this call created."""
    target = Path(os.path.abspath(target))
    root = Path(os.path.abspath(root)) if root is not None else default_root(target)
    if root not in target.parents:
        raise errors.InvalidSpecError(f"target {target} is not inside the storage root {root}")
    rel = PurePosixPath(target.relative_to(root).as_posix())
    safefs.split(str(rel))
    if rel.parts[0] == META_DIR:
        raise errors.InvalidSpecError(f"invalid artifact path {rel}")
    made = []
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        for directory in directories_for(rel):
            if _ensure(root_fd, directory, uid, gid):
                made.append(directory)
    finally:
        with contextlib.suppress(OSError):
            os.close(root_fd)
    log.info("prepared %s: created %s", root, ", ".join(made) or "nothing (all present)")
    return made
