"""The steps of one fetch, in the order `run._fetch_into` takes them.

```
resolve_snapshot      the revision's commit and the selected files (progress knows the totals)
already_published     that very selection is the published copy: point at it, nothing to fetch
start_staging         the version to build and its staging directory (stray files removed)
reuse_verified        files already in place: verified in an earlier run (partial.json), the
                      same content in the published copy or in the root's store (hard-linked)
adopt_in_place        files of a plain directory at the target (copied by hand), hashed in place
                      and hard-linked; the rest is to transfer
check_free_space      InsufficientStorage before a byte is downloaded
transfer_missing      download, hash and verify the rest; each verified file is recorded
publish_version       new blobs into the root's store, manifest, symlink swap (layout.publish)
```
Pure helpers beside them (`same_selection`, `find_reusable`, `bytes_still_needed`,
`require_free_space`, `transfer_item`, `manifest_of`, `ready_result`) decide; the steps do the I/O.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot import errors
from modeldepot.fetcher import modelinfo
from modeldepot.fetcher.job import FetchRequest, FetchResult
from modeldepot.fetcher.layout import Layout
from modeldepot.fetcher.manifest import META_DIR, FileEntry, Manifest
from modeldepot.fetcher.partial import PartialState
from modeldepot.fetcher.progress import ProgressTracker
from modeldepot.fetcher.ranges import RANGES_DIR, load_coverage
from modeldepot.fetcher.remote import RemoteFile, RepoSnapshot
from modeldepot.fetcher.safefs import Dir, Location
from modeldepot.fetcher.settings import FetchSettings
from modeldepot.fetcher.store import REUSING_DIR, BlobStore, hash_fd
from modeldepot.fetcher.transfer import RetryPolicy, Transfer
from modeldepot.fetcher.verify import TransferItem, VerifiedFile, git_blob_id
from modeldepot.vocabulary import Phase

if TYPE_CHECKING:
    from modeldepot.fetcher.hub import HubClient

log = logging.getLogger(__name__)

Published = tuple[Dir, Manifest]
"""The open store directory of the published version, and its manifest."""


@dataclass
class Staged:
    """A version being built: where, and which files are in place or still to transfer."""

    version: str
    staging: Dir
    partial: PartialState
    entries: dict[str, FileEntry] = field(default_factory=dict)
    """Verified files, by path."""
    items: list[TransferItem] = field(default_factory=list)
    """Files to transfer."""
    reused: int = 0
    """Files hard-linked (or copied) from the published copy or the root's store."""
    reused_bytes: int = 0
    adopted: int = 0
    """Files verified in place in the directory found at the target (adoption)."""
    adopted_bytes: int = 0


# -- resolve ----------------------------------------------------------------------------------


def resolve_snapshot(
    hub: HubClient, request: FetchRequest, tracker: ProgressTracker, cancel: threading.Event
) -> RepoSnapshot:
    """The commit and the selected files; progress learns the totals and each retry of the Hub's
    metadata calls. Interrupted if stopped meanwhile."""
    tracker.phase = Phase.DOWNLOADING  # summary: "Resolving files" until the plan is known
    snap = hub.snapshot(
        request.repo_id,
        revision=request.revision,
        repo_type=request.repo_type,
        include=request.include,
        exclude=request.exclude,
        on_retry=tracker.note_retry,
    )
    tracker.resolved_revision = snap.commit
    tracker.plan(bytes_total=snap.total_bytes, files_total=len(snap.files))
    if cancel.is_set():
        raise errors.InterruptedFetchError("stop requested before the download started")
    return snap


# -- the published copy -----------------------------------------------------------------------


def same_selection(manifest: Manifest, snap: RepoSnapshot) -> bool:
    """Whether `manifest` is exactly the snapshot's commit and files (sizes, LFS hashes)."""
    if manifest.commit != snap.commit or len(manifest.files) != len(snap.files):
        return False
    have = {e.path: e for e in manifest.files}
    for f in snap.files:
        e = have.get(f.path)
        if e is None or e.size != f.size or (f.sha256 is not None and e.sha256 != f.sha256.lower()):
            return False
    return True


def ready_result(
    target: str,
    manifest: Manifest,
    downloaded: int = 0,
    reused: int = 0,
    *,
    reused_bytes: int = 0,
    adopted_bytes: int = 0,
    model: dict[str, Any] | None = None,
) -> FetchResult:
    return FetchResult(
        phase=Phase.READY,
        path=target,
        commit=manifest.commit,
        digest=manifest.digest,
        total_bytes=manifest.total_bytes,
        file_count=len(manifest.files),
        downloaded_bytes=downloaded,
        reused_files=reused,
        reused_bytes=reused_bytes,
        adopted_bytes=adopted_bytes,
        model=model or {},
    )


def already_published(
    layout: Layout,
    snap: RepoSnapshot,
    current: tuple[str, Manifest] | None,
    tracker: ProgressTracker,
    store: BlobStore | None = None,
) -> FetchResult | None:
    """If the published copy is this very selection: keep it (and drop other versions); else None.

    A copy taken over from an earlier uid of the artifact (re-created after `deletionPolicy:
    Retain`) is adopted: every file is hashed again first (None if one does not match). Files
    the root's `store` lacks (a copy published before the store existed) become blobs.
    """
    if current is None or not same_selection(current[1], snap):
        return None
    version, manifest = current
    adopted = 0
    if layout.took_over:
        if not verify_published(layout, version, snap):
            log.warning("%s: the copy left by an earlier artifact does not verify; fetching", layout.target)
            return None
        adopted = snap.total_bytes
        tracker.bytes_adopted += adopted
    log.info("%s@%s is already published at %s; nothing to do", snap.repo_id, snap.commit[:12], layout.target)
    layout.ensure_published(version)
    tracker.add_bytes(snap.total_bytes, transferred=False)
    tracker.files_done = len(snap.files)
    published = layout.open_store(version)
    if store is not None:
        store.ingest(published, manifest.files, {f.path: f.blob_id for f in snap.files if f.sha256 is None})
    model = describe_model(published, manifest)
    return ready_result(str(layout.target), manifest, adopted_bytes=adopted, model=model)


def describe_model(d: Dir, manifest: Manifest) -> dict[str, Any]:
    """What the model is (`modelinfo`), from the verified files below `d`; {} if it cannot tell."""
    try:
        return modelinfo.inspect(d, [(f.path, f.size) for f in manifest.files]).to_dict()
    except (OSError, errors.ModelDepotError) as exc:  # display only: never fails a fetch
        log.warning("could not tell what the model is: %s", exc)
        return {}


def verify_published(layout: Layout, version: str, snap: RepoSnapshot) -> bool:
    """Whether every file of the published `version` hashes to what the Hub says (read by fd)."""
    store = layout.open_store(version)
    return all(hash_matches(store, f.path, f) is not None for f in snap.files)


def hash_matches(d: Dir, path: str, f: RemoteFile) -> str | None:
    """The sha256 of the regular file `d/path` if it is `f` (Hub sha256, or git blob id), else None."""
    try:
        fd = d.open_fd(path, os.O_RDONLY)
    except (OSError, errors.PathConflictError, errors.InvalidSpecError):
        return None
    try:
        if os.fstat(fd).st_size != f.size:
            return None
        sha, blob = hash_fd(fd, f.size, git=f.sha256 is None)
    finally:
        os.close(fd)
    ok = sha == f.sha256.lower() if f.sha256 is not None else blob == f.blob_id.lower()
    return sha if ok else None


# -- staging and reuse ------------------------------------------------------------------------


def start_staging(layout: Layout, snap: RepoSnapshot) -> Staged:
    """The version to build, its staging directory (files not selected removed) and partial.json."""
    version = layout.version_for(snap.commit)
    staging = layout.prepare_staging(version, keep={f.path for f in snap.files})
    return Staged(version, staging, PartialState(staging, snap.commit))


def find_reusable(
    f: RemoteFile, current: Published | None, by_sha: dict[tuple[str, int], FileEntry]
) -> tuple[Location, FileEntry] | None:
    """A file of the published version (a regular file, never a symlink) with exactly this content."""
    if current is None:
        return None
    store, manifest = current
    if f.sha256 is not None:
        hit = by_sha.get((f.sha256.lower(), f.size))
        candidates = [hit] if hit else []
    else:
        candidates = [e for e in manifest.files if e.path == f.path and e.size == f.size]
    for entry in candidates:
        try:
            source = store / entry.path
            st = source.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                continue
            # Small (non-LFS) files are known only by their git blob id: check it on the local copy.
            if f.sha256 is None and git_blob_id(source.read_bytes()) != f.blob_id:
                continue
        except (OSError, errors.PathConflictError, errors.InvalidSpecError):
            continue
        return source, FileEntry(f.path, f.size, entry.sha256)
    return None


def transfer_item(f: RemoteFile, staging: Dir) -> TransferItem:
    """The download of `f` into its place in staging."""
    return TransferItem(
        path=f.path, url=f.url, dest=staging / f.path, size=f.size, blob_id=f.blob_id, sha256=f.sha256
    )


def reuse_verified(
    layout: Layout,
    snap: RepoSnapshot,
    staged: Staged,
    current: tuple[str, Manifest] | None,
    tracker: ProgressTracker,
    store: BlobStore | None = None,
) -> None:
    """Fill `staged.entries` with files already in place and `staged.items` with the rest.

    In place: verified by an earlier run (partial.json), else the same content in the published
    copy or the root's `store` (checked by `BlobStore.reuse`), hard-linked into staging. All count
    as done in progress without a transfer.
    """
    published = None if current is None else (layout.open_store(current[0]), current[1])
    by_sha = {} if current is None else {(e.sha256, e.size): e for e in current[1].files}
    for f in snap.files:
        entry = staged.partial.verified(f.path, f.size, f.sha256)
        if entry is None:
            entry = _reuse_one(layout, f, staged, published, by_sha, store)
            if entry is not None:
                staged.partial.record(entry)
                staged.reused += 1
                staged.reused_bytes += f.size
                tracker.bytes_reused += f.size
        if entry is not None:
            staged.entries[f.path] = entry
            tracker.add_bytes(f.size, transferred=False)
            tracker.file_done()
        else:
            staged.items.append(transfer_item(f, staged.staging))
    staged.partial.flush()
    staged.staging.rmtree(REUSING_DIR)


def _reuse_one(
    layout: Layout,
    f: RemoteFile,
    staged: Staged,
    published: Published | None,
    by_sha: dict[tuple[str, int], FileEntry],
    store: BlobStore | None,
) -> FileEntry | None:
    """`f` hard-linked into staging from the published copy, else from the store; None if neither has it."""
    if (hit := find_reusable(f, published, by_sha)) is not None:
        source, entry = hit
        layout.link_into_staging(source, staged.staging, f.path)
        return entry
    if store is not None:
        reused = store.reuse(staged.staging, f.path, size=f.size, sha256=f.sha256, blob_id=f.blob_id)
        return reused.entry if reused is not None else None
    return None


# -- adoption -----------------------------------------------------------------------------------


def adopt_in_place(
    layout: Layout, snap: RepoSnapshot, staged: Staged, tracker: ProgressTracker, cancel: threading.Event
) -> None:
    """Take the files of a plain directory at the target (copied by hand) instead of transferring.

    Each file still to transfer that the directory holds with the right size is hard-linked into
    staging under a temporary name, hashed through its own fd against the Hub's sha256 (or git blob
    id) and only then moved to its place; one that does not match stays to be transferred. The
    directory is replaced by the published version; anything in it but selected files is a
    `PathConflictError` before a byte is hashed (modeldepot never deletes files it was not asked for).
    """
    found = layout.unmanaged_dir()
    if found is None or not staged.items:
        return
    selection = {f.path for f in snap.files}
    # a copy of a published directory brings its .modeldepot/manifest.json: ours, not the user's
    if (unexpected := layout.unexpected_in(found, selection, skip={META_DIR})) is not None:
        raise errors.PathConflictError(
            f"{layout.target} is a directory modeldepot does not manage, and it holds {unexpected}, "
            "which is not a selected file: a directory is adopted only when it holds nothing but "
            "selected files (move the others away, or select them)"
        )
    layout.allow_replacing_dir(selection)
    by_path = {f.path: f for f in snap.files}
    candidates = [i for i in staged.items if _same_size(found, i.path, i.size)]
    if not candidates:
        return
    with ThreadPoolExecutor(max_workers=min(4, len(candidates)), thread_name_prefix="adopt") as pool:
        results = list(
            pool.map(lambda i: _adopt_one(found, staged.staging, by_path[i.path], cancel), candidates)
        )
    adopted = {e.path: e for e in results if e is not None}
    for entry in adopted.values():
        staged.partial.record(entry)
        staged.entries[entry.path] = entry
        staged.adopted += 1
        staged.adopted_bytes += entry.size
        tracker.bytes_adopted += entry.size
        tracker.add_bytes(entry.size, transferred=False)
        tracker.file_done()
    staged.items = [i for i in staged.items if i.path not in adopted]
    staged.partial.flush()
    staged.staging.rmtree(_ADOPT_TMP)
    if cancel.is_set():
        raise errors.InterruptedFetchError("stop requested while verifying files in place")
    log.info(
        "adopted %d files (%d bytes) found at %s, verified in place",
        len(adopted),
        staged.adopted_bytes,
        layout.target,
    )


def _same_size(d: Dir, path: str, size: int) -> bool:
    try:
        st = d.lstat(path)
    except (OSError, errors.PathConflictError, errors.InvalidSpecError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


_ADOPT_TMP = ".modeldepot/adopting"


def _copy_regular(src_dir: Dir, src: str, dst_dir: Dir, dst: str) -> None:
    """Copy the regular file `src_dir/src` to a new `dst_dir/dst` (never through a symlink)."""
    with src_dir.open(src, "rb") as fin, dst_dir.open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _adopt_one(found: Dir, staging: Dir, f: RemoteFile, cancel: threading.Event) -> FileEntry | None:
    """Link `found/f.path` into staging (copy it where a link is refused), verify the staged inode,
    move it into place."""
    if cancel.is_set():
        return None
    tmp = f"{_ADOPT_TMP}/{hashlib.sha256(f.path.encode()).hexdigest()[:32]}"
    staging.mkdir(_ADOPT_TMP)
    staging.unlink(tmp, missing_ok=True)
    try:
        try:
            found.link(f.path, staging, tmp)
        except OSError as exc:
            # another owner's file (fs.protected_hardlinks) or another filesystem: a local copy
            # still costs no Hub bytes
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK):
                raise
            _copy_regular(found, f.path, staging, tmp)
    except (OSError, errors.PathConflictError, errors.InvalidSpecError) as exc:
        log.info("not adopting %s: %s", f.path, exc)
        staging.unlink(tmp, missing_ok=True)
        return None
    sha = hash_matches(staging, tmp, f)
    if sha is None:
        log.warning("not adopting %s: its content is not the Hub's file", f.path)
        staging.unlink(tmp, missing_ok=True)
        return None
    dest = staging / f.path
    dest.make_parents()
    dest.unlink(missing_ok=True)
    staging.rename(tmp, staging, f.path)
    return FileEntry(f.path, f.size, sha)


# -- space --------------------------------------------------------------------------------------


def bytes_still_needed(size: int, have: int) -> int:
    """Bytes a file of `size` still needs when `have` are in staging (more than `size`: all of it)."""
    return size - have if have <= size else size


def require_free_space(needed: int, free: int, root: Path) -> None:
    """InsufficientStorage when `needed` bytes exceed the `free` bytes under `root`."""
    if needed > free:
        raise errors.InsufficientStorageError(
            f"{needed} more bytes are needed under {root} but only {free} are free"
        )


def check_free_space(layout: Layout, items: Iterable[TransferItem]) -> None:
    """InsufficientStorage unless the storage root has room for the bytes still missing."""
    needed = 0
    for item in items:
        try:
            have = item.dest.stat().st_size
        except OSError:
            have = 0
        # A file written by several streams has holes: its sidecar says how much of it is there.
        if have and (written := load_coverage(item, item.dest.base, have)) is not None:
            have = written.done()
        needed += bytes_still_needed(item.size, have)
    require_free_space(needed, layout.free_bytes(), layout.root)


def log_plan(snap: RepoSnapshot, staged: Staged) -> None:
    log.info(
        "%s@%s: %d files, %d bytes; %d already in place (%d, %d bytes, reused from the published copy or "
        "the root's store; %d, %d bytes, adopted), %d to fetch",
        snap.repo_id,
        snap.commit[:12],
        len(snap.files),
        snap.total_bytes,
        len(staged.entries),
        staged.reused,
        staged.reused_bytes,
        staged.adopted,
        staged.adopted_bytes,
        len(staged.items),
    )


# -- transfer and publish -----------------------------------------------------------------------


def transfer_missing(
    hub: HubClient,
    staged: Staged,
    *,
    concurrency: int,
    settings: FetchSettings,
    tracker: ProgressTracker,
    cancel: threading.Event,
) -> int:
    """Download and verify `staged.items` into staging, recording each; the bytes downloaded.
    Progress learns of every retry before its wait."""
    if not staged.items:
        return 0

    def on_file(v: VerifiedFile) -> None:
        staged.partial.record(FileEntry(v.path, v.size, v.sha256))
        tracker.file_done()

    downloaded = 0
    headers = hub.download_headers()
    with Transfer(
        headers=headers,
        concurrency=concurrency,
        chunk_size=settings.chunk_size,
        streams=settings.streams,
        streams_min_size=settings.streams_min_size,
        part_size=settings.part_size,
        retry=RetryPolicy(
            settings.max_retries, settings.backoff_base, settings.backoff_max, on_retry=tracker.note_retry
        ),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        cancel=cancel,
        on_bytes=tracker.add_bytes,
        on_adjust=lambda n: tracker.add_bytes(n, transferred=False),
        on_file=on_file,
        stop_grace=settings.stop_grace,
        fsync=settings.fsync,
        min_bytes_per_second=settings.min_bytes_per_second,
        stall_window=settings.stall_window,
        tls=hub.tls_context(),
    ) as transfer:
        try:
            for v in transfer.fetch_all(staged.items):
                staged.entries[v.path] = FileEntry(v.path, v.size, v.sha256)
                downloaded += v.size
        finally:
            staged.partial.flush()
    # Range records left by files no longer selected (each verified file dropped its own).
    staged.staging.rmtree(RANGES_DIR)
    return downloaded


def manifest_of(snap: RepoSnapshot, entries: dict[str, FileEntry]) -> Manifest:
    """The manifest of the snapshot's files, as verified (`KeyError` if one is missing)."""
    return Manifest(
        repo=snap.repo_id,
        repo_type=snap.repo_type,
        revision=snap.revision,
        commit=snap.commit,
        files=[entries[f.path] for f in snap.files],
    )


def publish_version(
    layout: Layout, snap: RepoSnapshot, staged: Staged, *, fsync: bool, store: BlobStore | None = None
) -> Manifest:
    """Make the new files blobs of the root's `store`, write the manifest, move staging into the
    version store and swap the symlink."""
    manifest = manifest_of(snap, staged.entries)
    if store is not None:
        git_ids = {f.path: f.blob_id for f in snap.files if f.sha256 is None}
        store.ingest(staged.staging, manifest.files, git_ids)
    layout.publish(staged.version, manifest, fsync=fsync)
    log.info("published %s@%s at %s (%s)", snap.repo_id, snap.commit[:12], layout.target, manifest.digest)
    return manifest
