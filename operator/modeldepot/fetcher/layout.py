"""On-disk layout of one artifact inside a storage root (docs/internals.md "On-disk layout").

One module over ~400 lines, on purpose: it is one object, `Layout`, whose operations (claim,
versions, staging, publish, cleanup) all work through the same open root directory, the same
owner record under its lock and the same rule for which symlink is ours (`_version_of_link`);
that shared private state is what makes them safe on a root shared with other tenants. Split
across modules, each part would reach into the others' state. What has its own state is apart:
`partial` (partial.json), `owners` (the records), `safefs` (the fd-relative filesystem).

```
ROOT/P                                   -> relative symlink to .modeldepot/store/P/<version>
ROOT/.modeldepot/store/P/<version>/...   published, verified files + .modeldepot/manifest.json
ROOT/.modeldepot/staging/P/<version>/... files being downloaded + .modeldepot/partial.json
ROOT/.modeldepot/owners/<sha256 of P>.json  who owns P and which versions it made (`owners`)
ROOT/.modeldepot/blobs/sha256/<sha256>      each verified file once; versions hard-link it (`store`)
```
`<version>` is the commit, or `<commit>.1` when that commit is already published with another file
selection (so the published copy is never modified in place). Publishing renames the staging
directory into the store and swaps the symlink atomically; other versions are removed afterwards.

Everything below the root goes through `safefs` (no symlink is ever followed), and only versions
the owner record names are trusted or deleted: the root is shared with other tenants.

Adoption: a plain directory at `ROOT/P` (files copied by hand) is replaced by the symlink at
publish only after `allow_replacing_dir` named the files it may hold (the selection, whose
verified copies are in the new version); anything else in it is a `PathConflictError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from shutil import copyfileobj

from modeldepot import errors
from modeldepot.fetcher import safefs
from modeldepot.fetcher.manifest import MANIFEST_NAME, META_DIR, Manifest
from modeldepot.fetcher.owners import (
    LOCAL_OWNER,
    LockedRegistry,
    Owner,
    OwnerRecord,
    Registry,
    describe_conflict,
    is_version_name,
)
from modeldepot.fetcher.partial import PARTIAL_REL
from modeldepot.fetcher.safefs import Dir, Location
from modeldepot.fetcher.store import BlobStore

__all__ = ["DEFAULT_ROOT", "Layout", "default_root", "is_version_name"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/data")
_MANIFEST_REL = f"{META_DIR}/{MANIFEST_NAME}"


def default_root(target: Path) -> Path:
    """`/data` (the fetch pod's mount) when the target is below it, else the target's parent."""
    if DEFAULT_ROOT in target.parents:
        return DEFAULT_ROOT
    return target.parent


class Layout:
    """Paths and operations for artifact path `P` (the target) inside a storage root, for `owner`.

    `Path` attributes (`target`, `store_parent`, `store_dir()`, ...) are for messages and tests;
    all I/O below the root goes through `safefs`. Directories handed out (`prepare_staging`,
    `open_store`) stay open until `close()` (or the end of the `with` block).
    """

    def __init__(self, target: Path, root: Path | None = None, owner: Owner = LOCAL_OWNER) -> None:
        self.target = Path(os.path.abspath(target))
        self.root = Path(os.path.abspath(root)) if root is not None else default_root(self.target)
        if self.root not in self.target.parents:
            raise errors.InvalidSpecError(f"target {self.target} is not inside the storage root {self.root}")
        rel = PurePosixPath(self.target.relative_to(self.root).as_posix())
        if rel.parts[0] == META_DIR:
            raise errors.InvalidSpecError(f"invalid artifact path {rel}")
        safefs.split(rel)
        self.rel = rel
        self.owner = owner
        self.meta = self.root / META_DIR
        self.store_parent = self.meta / "store" / rel
        self.staging_parent = self.meta / "staging" / rel
        self._store_rel = f"{META_DIR}/store/{rel}"
        self._staging_rel = f"{META_DIR}/staging/{rel}"
        self._stack = contextlib.ExitStack()
        self._root_dir: Dir | None = None
        self._staging: dict[str, Dir] = {}
        self._replaceable: set[str] | None = None
        self.took_over = False
        """`claim()` took P over from an earlier uid of this artifact (re-created after Retain)."""

    def close(self) -> None:
        self._stack.close()
        self._root_dir = None
        self._staging.clear()

    def __enter__(self) -> Layout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store_dir(self, version: str) -> Path:
        return self.store_parent / version

    def staging_dir(self, version: str) -> Path:
        return self.staging_parent / version

    # -- root, registry -------------------------------------------------------------------------

    def _root(self) -> Dir:
        if self._root_dir is None:
            self._root_dir = self._stack.enter_context(Dir.open_root(self.root, create=True))
        return self._root_dir

    @contextlib.contextmanager
    def _registry(self) -> Iterator[LockedRegistry]:
        with self._root().open_dir(META_DIR, create=True) as meta, Registry(meta).locked() as reg:
            yield reg

    def claim(self) -> None:
        """Make P ours before anything is written (`PathConflictError` if another artifact has it)."""
        path = str(self.rel)
        with self._registry() as reg:
            other = reg.conflict(path, self.owner)
            if other is not None:
                raise errors.PathConflictError(describe_conflict(path, other))
            record = reg.get(path)
            if record is not None and record.owner == self.owner:
                return
            if record is None:
                record = OwnerRecord(path, self.owner)
            else:
                log.info(
                    "%s was re-created: it takes over %s from uid %s", self.owner, path, record.owner.uid
                )
                record.owner = self.owner
                self.took_over = True
            reg.put(record)

    def _own_record(self, reg: LockedRegistry) -> OwnerRecord:
        """Our record (created if P has none and no conflict); `PathConflictError` if P is not ours."""
        path = str(self.rel)
        record = reg.get(path)
        if record is None:
            if (other := reg.conflict(path, self.owner)) is not None:
                raise errors.PathConflictError(describe_conflict(path, other))
            return OwnerRecord(path, self.owner)
        if record.owner != self.owner:
            raise errors.PathConflictError(f"path {path} now belongs to {record.owner}, not {self.owner}")
        return record

    def _recorded_versions(self) -> list[str]:
        """Versions our record names ([] when P is not ours)."""
        with self._registry() as reg:
            record = reg.get(str(self.rel))
        return list(record.versions) if record is not None and record.owner == self.owner else []

    def _add_version(self, version: str) -> None:
        """Record `version` before its directory is created; refuse to adopt one that exists."""
        with self._registry() as reg:
            record = self._own_record(reg)
            if version in record.versions:
                return
            for parent in (self._store_rel, self._staging_rel):
                if self._root().exists(f"{parent}/{version}"):
                    raise errors.PathConflictError(
                        f"{self.root}/{parent}/{version} exists but {self.owner} did not create it; "
                        "refusing to use or delete it"
                    )
            record.versions.append(version)
            reg.put(record)

    # -- the published version ------------------------------------------------------------------

    @contextlib.contextmanager
    def _target_parent(self, *, create: bool) -> Iterator[Dir]:
        if len(self.rel.parts) == 1:
            yield self._root()
        else:
            with self._root().open_dir(self.rel.parent, create=create) as parent:
                yield parent

    def _link_value(self, version: str) -> str:
        return os.path.relpath(self.store_dir(version), self.target.parent)

    def _version_of_link(self, value: str) -> str | None:
        """The version a symlink value names, if it has exactly the form we write."""
        prefix = os.path.relpath(self.store_parent, self.target.parent) + "/"
        if not value.startswith(prefix):
            return None
        version = value[len(prefix) :]
        return version if is_version_name(version) else None

    def current_version(self) -> str | None:
        """The store version the target symlink points to, if it is one of ours and a directory."""
        try:
            with self._target_parent(create=False) as parent:
                value = parent.readlink(self.rel.name)
            version = self._version_of_link(value)
            if version is None:
                return None
            st = self._root().lstat(f"{self._store_rel}/{version}")
        except OSError:  # missing, or not a symlink (EINVAL)
            return None
        return version if stat.S_ISDIR(st.st_mode) else None

    def current(self) -> tuple[str, Manifest] | None:
        """(version, manifest) of the published copy, if there is a valid one our record names."""
        version = self.current_version()
        if version is None or version not in self._recorded_versions():
            return None
        try:
            with self._root().open_dir(f"{self._store_rel}/{version}") as store:
                manifest = Manifest.from_json(store.read_bytes(_MANIFEST_REL))
        except (OSError, ValueError, KeyError, TypeError, errors.PathConflictError):
            return None
        return version, manifest

    def version_for(self, commit: str) -> str:
        """Where to build `commit`: never the currently published directory."""
        return f"{commit}.1" if self.current_version() == commit else commit

    def open_store(self, version: str) -> Dir:
        """The store directory of `version` (open until `close()`)."""
        return self._stack.enter_context(self._root().open_dir(f"{self._store_rel}/{version}"))

    # -- staging --------------------------------------------------------------------------------

    def prepare_staging(self, version: str, keep: set[str]) -> Dir:
        """Record and create the staging dir, delete files in it that are not in `keep` (planned paths).

        Returns the open staging directory. A symlink or special file where a planned file goes is
        a `PathConflictError` (we never write through one); elsewhere it is simply removed.
        """
        self._add_version(version)
        staging = self._root().open_dir(f"{self._staging_rel}/{version}", create=True)
        self._stack.enter_context(staging)
        self._staging[version] = staging
        unusable = []
        for rel_dir, d in staging.walk_dirs(skip={META_DIR}):
            for entry in d.scandir():
                if entry.is_dir(follow_symlinks=False):
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if rel not in keep:
                    d.unlink(entry.name, missing_ok=True)
                elif not entry.is_file(follow_symlinks=False):
                    unusable.append(rel)
        if unusable:
            raise errors.PathConflictError(
                f"{staging.path}/{unusable[0]} is a symlink or special file; refusing to write through it"
            )
        return staging

    def link_into_staging(self, source: Location, staging: Dir, path: str) -> None:
        """Hard-link an already verified file into staging (copy if linking is impossible)."""
        dest = staging / path
        dest.make_parents()
        dest.unlink(missing_ok=True)
        try:
            source.base.link(source.rel, staging, path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise errors.InsufficientStorageError(f"no space left while linking {path}") from None
            with source.open("rb") as src, dest.open("xb") as dst:
                copyfileobj(src, dst, 1 << 20)
            return
        if not stat.S_ISREG(dest.stat().st_mode):  # the source was swapped for a symlink meanwhile
            dest.unlink()
            raise errors.PathConflictError(f"{source} is not a regular file; refusing to link it")

    def free_bytes(self) -> int:
        self._root()
        return shutil.disk_usage(self.root).free

    # -- the content-addressed store ------------------------------------------------------------

    def blob_store(self, *, trusted: bool = False) -> BlobStore:
        """The root's store (`store.BlobStore`); `trusted`: only fetchers write this root."""
        meta = self._stack.enter_context(self._root().open_dir(META_DIR, create=True))
        return BlobStore(meta, trusted=trusted)

    def referenced_blobs(self) -> set[str]:
        """The sha256 of every file a manifest of a recorded version names (any owner)."""
        referenced: set[str] = set()
        with self._registry() as reg:
            records = reg.records()
        for record in records:
            for version in record.versions:
                rel = f"{META_DIR}/store/{record.path}/{version}/{_MANIFEST_REL}"
                try:
                    manifest = Manifest.from_json(self._root().read_bytes(rel))
                except FileNotFoundError:
                    continue
                except (OSError, ValueError, KeyError, TypeError, errors.ModelDepotError) as exc:
                    log.debug("no manifest read from %s: %s", rel, exc)
                    continue
                referenced.update(f.sha256 for f in manifest.files)
        return referenced

    def collect_blobs(self) -> None:
        """Remove the store's blobs that no manifest names any more (best effort)."""
        try:
            self.blob_store().collect(self.referenced_blobs())
        except (OSError, errors.PathConflictError) as exc:
            log.warning("store garbage collection skipped: %s", exc)

    # -- adoption -------------------------------------------------------------------------------

    def unmanaged_dir(self) -> Dir | None:
        """The plain directory at the target (files put there by hand), open; None if there is none.
        A symlink is never followed (ours is not "unmanaged")."""
        try:
            with self._target_parent(create=False) as parent:
                st = parent.lstat(self.rel.name)
                if not stat.S_ISDIR(st.st_mode):
                    return None
                return self._stack.enter_context(parent.open_dir(self.rel.name))
        except (FileNotFoundError, errors.PathConflictError):
            return None

    def unexpected_in(
        self, d: Dir, allowed: set[str], *, skip: set[str] | frozenset[str] = frozenset()
    ) -> str | None:
        """The first entry below `d` that is not a regular file named in `allowed` (or a directory),
        outside the top-level directories `skip`."""
        for rel_dir, sub in d.walk_dirs(skip=skip):
            for entry in sub.scandir():
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_dir(follow_symlinks=False):
                    continue
                if rel not in allowed or not entry.is_file(follow_symlinks=False):
                    return rel
        return None

    def allow_replacing_dir(self, files: set[str]) -> None:
        """At publish, the plain directory at the target may be replaced if it holds only `files`
        (the selection: their verified copies are in the version being published)."""
        self._replaceable = set(files)

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, version: str, manifest: Manifest, *, fsync: bool = False) -> Path:
        """Write the manifest, move staging into the store, swap the symlink, drop other versions.

        With `fsync`, the directory entries are made durable too (file contents are the caller's).
        """
        root = self._root()
        with (
            root.open_dir(self._staging_rel) as staging_parent,
            staging_parent.open_dir(version) as staging,
            root.open_dir(self._store_rel, create=True) as store_parent,
        ):
            held = self._staging.get(version)
            if held is not None and not _same_file(held.fstat(), staging.fstat()):
                raise errors.PathConflictError(f"{staging.path} was replaced during the download")
            staging.mkdir(META_DIR)
            staging.write_atomic(_MANIFEST_REL, manifest.to_json(), fsync=True)
            staging.unlink(PARTIAL_REL, missing_ok=True)
            if store_parent.exists(version):
                # Left by a run that died between this rename and the symlink swap (never the published one).
                if self.current_version() == version:
                    raise errors.DownloadFailedError(
                        f"refusing to replace the published directory {self.store_dir(version)}"
                    )
                store_parent.rmtree(version)
            if fsync:
                for _, d in staging.walk_dirs():
                    d.fsync()
            staging_parent.rename(version, store_parent, version)
            if not _same_file(staging.fstat(), store_parent.lstat(version)):
                raise errors.PathConflictError(f"{staging.path} was replaced while it was published")
            if fsync:
                store_parent.fsync()
        self._swap_symlink(version, fsync=fsync)
        self.remove_other_versions(version)
        return self.store_dir(version)

    def _swap_symlink(self, version: str, *, fsync: bool = False) -> None:
        name = self.rel.name
        with self._target_parent(create=True) as parent:
            try:
                st: os.stat_result | None = parent.lstat(name)
            except FileNotFoundError:
                st = None
            if st is None:
                pass
            elif stat.S_ISLNK(st.st_mode):
                value = parent.readlink(name)
                if self._version_of_link(value) is None:
                    raise errors.PathConflictError(
                        f"{self.target} is a symlink modeldepot did not make (-> {value}); refusing to replace it"
                    )
            elif stat.S_ISDIR(st.st_mode):
                try:
                    parent.rmdir(name)
                except OSError:
                    self._replace_adopted_dir(parent, name)
            else:
                raise errors.PathConflictError(f"{self.target} exists and is not managed by modeldepot")
            tmp = f".modeldepot-link-{hashlib.sha256(name.encode()).hexdigest()[:16]}-{os.getpid()}"
            parent.unlink(tmp, missing_ok=True)
            parent.symlink(self._link_value(version), tmp)
            parent.rename(tmp, parent, name)
            if fsync:
                parent.fsync()

    def _replace_adopted_dir(self, parent: Dir, name: str) -> None:
        """Remove the adopted directory at the target (PathConflict unless adoption allowed it and
        it still holds only the selected files)."""
        unexpected = None
        if self._replaceable is not None:
            with parent.open_dir(name) as d:
                unexpected = self.unexpected_in(d, self._replaceable, skip={META_DIR})
        if self._replaceable is None or unexpected is not None:
            detail = f" ({unexpected} is not a selected file)" if unexpected else ""
            raise errors.PathConflictError(
                f"{self.target} exists and is a directory not managed by modeldepot{detail}"
            )
        log.info("replacing the adopted directory %s by the published version", self.target)
        try:
            parent.rmtree(name)
        except PermissionError as exc:
            raise errors.PathConflictError(
                f"{self.target} cannot be replaced by the verified version: {exc.strerror} "
                f"(the fetcher runs as uid {os.geteuid()}: make the directory and its files its own, "
                "or remove them)"
            ) from None

    def ensure_published(self, version: str) -> None:
        """Point the target at an existing store version (used when nothing had to be fetched)."""
        if self.current_version() != version:
            self._swap_symlink(version)
        self.remove_other_versions(version)

    def remove_other_versions(self, keep: str) -> None:
        """Delete the versions our record names, except `keep` in the store, and all staging dirs."""
        versions = self._recorded_versions()
        drop = [v for v in versions if v != keep]
        self._remove_versions(self._store_rel, drop)
        self._remove_versions(self._staging_rel, versions)
        with self._registry() as reg:
            record = reg.get(str(self.rel))
            if record is not None and record.owner == self.owner and drop:
                record.versions = [v for v in record.versions if v not in drop]
                reg.put(record)
        with contextlib.suppress(OSError):
            self._root().rmdir(self._staging_rel)
        if drop:
            self.collect_blobs()

    def _remove_versions(self, parent_rel: str, versions: list[str]) -> None:
        if not versions:
            return
        try:
            with self._root().open_dir(parent_rel) as parent:
                for version in versions:
                    parent.rmtree(version)
        except FileNotFoundError:
            pass

    # -- cleanup --------------------------------------------------------------------------------

    def remove_all(self) -> bool:
        """`modeldepot cleanup`: remove our versions, staging, the target link and our record.

        Returns False (and removes nothing) when P belongs to another owner; True otherwise (also
        when there was nothing). The target is removed only if it is a symlink into our store.
        """
        if not self.root.is_dir():
            return True
        path = str(self.rel)
        with self._registry() as reg:
            record = reg.get(path)
        if record is None:
            log.info("no owner record for %s: nothing of %s to remove", path, self.owner)
            return True
        if record.owner != self.owner:
            log.warning("%s belongs to %s, not %s: removing nothing", path, record.owner, self.owner)
            return False
        try:
            with self._target_parent(create=False) as parent:
                value = parent.readlink(self.rel.name)
                if self._version_of_link(value) is not None:
                    parent.unlink(self.rel.name)
        except OSError:  # missing, or not a symlink: not ours to remove
            pass
        except errors.PathConflictError as exc:
            log.warning("leaving %s alone: %s", self.target, exc)
        self._remove_versions(self._store_rel, record.versions)
        self._remove_versions(self._staging_rel, record.versions)
        with self._registry() as reg:
            if (again := reg.get(path)) is not None and again.owner == self.owner:
                reg.delete(path)
        self.collect_blobs()
        for rel, top in (
            (self._store_rel, f"{META_DIR}/store"),
            (self._staging_rel, f"{META_DIR}/staging"),
            (str(self.rel.parent), "."),
        ):
            self._remove_empty_dirs(rel, top)
        return True

    def _remove_empty_dirs(self, rel: str, top: str) -> None:
        """rmdir `rel` and its ancestors below `top` while they are empty."""
        parts = PurePosixPath(rel).parts
        stop = 0 if top == "." else len(PurePosixPath(top).parts)
        for n in range(len(parts), stop, -1):
            try:
                self._root().rmdir("/".join(parts[:n]))
            except (OSError, errors.PathConflictError):
                return


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and stat.S_ISDIR(b.st_mode) == stat.S_ISDIR(a.st_mode)
