"""The steps of one fetch (fetcher/steps.py), each on its own: no Hub, a real storage root in tmp_path."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot import errors
from modeldepot.fetcher import steps
from modeldepot.fetcher.job import FetchRequest
from modeldepot.fetcher.layout import Layout
from modeldepot.fetcher.manifest import FileEntry, Manifest
from modeldepot.fetcher.progress import ProgressTracker
from modeldepot.fetcher.ranges import Coverage, save_coverage
from modeldepot.fetcher.remote import RemoteFile, RepoSnapshot
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.verify import git_blob_id

C1, C2 = "1" * 40, "2" * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote_file(path: str, data: bytes, *, lfs: bool = False) -> RemoteFile:
    return RemoteFile(
        path=path,
        size=len(data),
        blob_id=git_blob_id(data),
        sha256=sha(data).upper() if lfs else None,  # the Hub's case does not matter
        url=f"https://hub.invalid/{path}",
    )


def snapshot(commit: str, files: dict[str, bytes], lfs: frozenset[str] = frozenset()) -> RepoSnapshot:
    return RepoSnapshot(
        repo_id="org/m",
        repo_type="model",
        revision="main",
        commit=commit,
        files=tuple(remote_file(p, d, lfs=p in lfs) for p, d in sorted(files.items())),
    )


def manifest(commit: str, files: dict[str, bytes]) -> Manifest:
    entries = [FileEntry(p, len(d), sha(d)) for p, d in files.items()]
    return Manifest(repo="org/m", repo_type="model", revision="main", commit=commit, files=entries)


# -- pure decisions -----------------------------------------------------------------------------


def test_same_selection() -> None:
    files = {"a.bin": b"aa", "c.json": b"{}"}
    snap = snapshot(C1, files, lfs=frozenset({"a.bin"}))
    assert steps.same_selection(manifest(C1, files), snap)
    assert not steps.same_selection(manifest(C2, files), snap)  # another commit
    assert not steps.same_selection(manifest(C1, {"a.bin": b"aa"}), snap)  # fewer files
    assert not steps.same_selection(manifest(C1, {"a.bin": b"aa", "d.json": b"{}"}), snap)  # other names
    assert not steps.same_selection(manifest(C1, {"a.bin": b"ab", "c.json": b"{}"}), snap)  # LFS hash
    assert not steps.same_selection(manifest(C1, {"a.bin": b"aa", "c.json": b"{ }"}), snap)  # size
    # a small file is known by its blob id only: same path and size is the same selection
    assert steps.same_selection(manifest(C1, {"a.bin": b"aa", "c.json": b"[]"}), snap)


@pytest.mark.parametrize(("size", "have", "needed"), [(10, 0, 10), (10, 4, 6), (10, 10, 0), (10, 12, 10)])
def test_bytes_still_needed(size: int, have: int, needed: int) -> None:
    assert steps.bytes_still_needed(size, have) == needed


def test_require_free_space() -> None:
    steps.require_free_space(100, 100, Path("/data"))
    with pytest.raises(
        errors.InsufficientStorageError, match="101 more bytes are needed under /data but only 100"
    ):
        steps.require_free_space(101, 100, Path("/data"))


def test_manifest_of_takes_every_snapshot_file_from_the_entries() -> None:
    files = {"b": b"2", "a": b"1"}
    snap = snapshot(C1, files)
    entries = {p: FileEntry(p, len(d), sha(d)) for p, d in files.items()}
    m = steps.manifest_of(snap, entries)
    assert (m.repo, m.commit, [f.path for f in m.files]) == ("org/m", C1, ["a", "b"])
    del entries["b"]
    with pytest.raises(KeyError):
        steps.manifest_of(snap, entries)


def test_ready_result() -> None:
    m = manifest(C1, {"a": b"123", "b": b"4"})
    result = steps.ready_result("/data/m", m, downloaded=3, reused=1)
    assert (result.phase, result.path, result.commit, result.digest) == ("Ready", "/data/m", C1, m.digest)
    assert (result.total_bytes, result.file_count, result.downloaded_bytes, result.reused_files) == (
        4,
        2,
        3,
        1,
    )


# -- steps on a storage root --------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    with Layout(tmp_path / "models" / "m", tmp_path) as lay:
        lay.claim()
        yield lay


def publish(layout: Layout, commit: str, files: dict[str, bytes], lfs: frozenset[str] = frozenset()) -> None:
    """Build and publish a version the way a fetch does, with the bytes written directly."""
    snap = snapshot(commit, files, lfs)
    staged = steps.start_staging(layout, snap)
    for path, data in files.items():
        dest = staged.staging / path
        dest.make_parents()
        with dest.open("wb") as fh:
            fh.write(data)
        staged.entries[path] = FileEntry(path, len(data), sha(data))
    steps.publish_version(layout, snap, staged, fsync=False)


def test_find_reusable_by_lfs_hash_or_verified_blob_id(tmp_path: Path) -> None:
    store_files = {"w.bin": b"weights", "c.json": b"{}", "moved/old.bin": b"same"}
    with Dir.open_root(tmp_path) as root:
        for path, data in store_files.items():
            (root / path).make_parents()
            with (root / path).open("wb") as fh:
                fh.write(data)
        m = manifest(C1, store_files)
        current = (root, m)
        by_sha = {(e.sha256, e.size): e for e in m.files}

        hit = steps.find_reusable(remote_file("renamed.bin", b"same", lfs=True), current, by_sha)
        assert hit is not None and str(hit[0]).endswith("/moved/old.bin")
        assert hit[1] == FileEntry("renamed.bin", 4, sha(b"same"))
        assert steps.find_reusable(remote_file("c.json", b"{}"), current, by_sha) is not None
        assert steps.find_reusable(remote_file("c.json", b"[]"), current, by_sha) is None  # blob id differs
        assert steps.find_reusable(remote_file("x.json", b"{}"), current, by_sha) is None  # small: path too
        assert steps.find_reusable(remote_file("w.bin", b"weightz", lfs=True), current, by_sha) is None
        assert steps.find_reusable(remote_file("w.bin", b"weights", lfs=True), None, {}) is None

        root.unlink("w.bin")
        root.symlink("c.json", "w.bin")  # a planted symlink is never reused
        assert steps.find_reusable(remote_file("w.bin", b"weights", lfs=True), current, by_sha) is None


def test_already_published_only_for_the_same_selection(layout: Layout) -> None:
    files = {"a.bin": b"aa", "c.json": b"{}"}
    publish(layout, C1, files)
    tracker = ProgressTracker()
    current = layout.current()
    assert steps.already_published(layout, snapshot(C2, files), current, tracker) is None
    assert steps.already_published(layout, snapshot(C1, {"a.bin": b"aa"}), current, tracker) is None
    assert tracker.bytes_done == 0
    result = steps.already_published(layout, snapshot(C1, files), current, tracker)
    assert result is not None and result.commit == C1 and result.downloaded_bytes == 0
    assert (tracker.bytes_done, tracker.files_done) == (4, 2)


def test_reuse_verified_links_published_files_and_plans_the_rest(layout: Layout) -> None:
    publish(layout, C1, {"w.bin": b"weights", "c.json": b"{}", "r.md": b"old"}, lfs=frozenset({"w.bin"}))
    new = {"w.bin": b"weights", "c.json": b"{}", "r.md": b"new!", "n.txt": b"added"}
    snap = snapshot(C2, new, lfs=frozenset({"w.bin"}))
    tracker = ProgressTracker()
    staged = steps.start_staging(layout, snap)
    assert staged.version == C2
    steps.reuse_verified(layout, snap, staged, layout.current(), tracker)
    assert sorted(staged.entries) == ["c.json", "w.bin"] and staged.reused == 2
    assert sorted(i.path for i in staged.items) == ["n.txt", "r.md"]
    assert (staged.staging / "w.bin").read_bytes() == b"weights"
    assert (tracker.bytes_done, tracker.files_done) == (9, 2)
    item = next(i for i in staged.items if i.path == "r.md")
    assert (item.url, item.size, item.sha256, str(item.dest)) == (
        "https://hub.invalid/r.md",
        4,
        None,
        f"{staged.staging.path}/r.md",
    )


def test_reuse_verified_trusts_partial_state_of_an_earlier_run(layout: Layout, tmp_path: Path) -> None:
    files = {"a.bin": b"aaaa", "b.bin": b"bb"}
    snap = snapshot(C1, files, lfs=frozenset(files))
    first = steps.start_staging(layout, snap)
    with (first.staging / "a.bin").open("wb") as fh:
        fh.write(b"aaaa")
    first.partial.record(FileEntry("a.bin", 4, sha(b"aaaa")))
    first.partial.flush()

    with Layout(tmp_path / "models" / "m", tmp_path) as again:  # the next run
        staged = steps.start_staging(again, snap)
        tracker = ProgressTracker()
        steps.reuse_verified(again, snap, staged, again.current(), tracker)
        assert list(staged.entries) == ["a.bin"] and staged.reused == 0
        assert [i.path for i in staged.items] == ["b.bin"]
        steps.check_free_space(again, staged.items)  # 2 bytes fit


def test_check_free_space_counts_only_missing_bytes(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = snapshot(C1, {"a.bin": b"x" * 100}, lfs=frozenset({"a.bin"}))
    staged = steps.start_staging(layout, snap)
    steps.reuse_verified(layout, snap, staged, None, ProgressTracker())
    with (staged.staging / "a.bin").open("wb") as fh:
        fh.write(b"x" * 60)  # a partial download
    monkeypatch.setattr(layout, "free_bytes", lambda: 40)
    steps.check_free_space(layout, staged.items)
    monkeypatch.setattr(layout, "free_bytes", lambda: 39)
    with pytest.raises(errors.InsufficientStorageError, match="40 more bytes"):
        steps.check_free_space(layout, staged.items)


def test_check_free_space_counts_the_holes_of_a_multi_stream_file(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = snapshot(C1, {"a.bin": b"x" * 100}, lfs=frozenset({"a.bin"}))
    staged = steps.start_staging(layout, snap)
    steps.reuse_verified(layout, snap, staged, None, ProgressTracker())
    (item,) = staged.items
    with (staged.staging / "a.bin").open("wb") as fh:
        fh.write(b"x" * 90)  # 90 bytes long, but only two ranges were written
    save_coverage(item, staged.staging, Coverage(100, [(0, 10), (80, 90)]))
    monkeypatch.setattr(layout, "free_bytes", lambda: 79)
    with pytest.raises(errors.InsufficientStorageError, match="80 more bytes"):
        steps.check_free_space(layout, staged.items)


def test_resolve_snapshot_stops_when_cancelled_before_the_download() -> None:
    snap = snapshot(C1, {"a": b"1"})

    class OneSnapshot:  # the one HubClient method this step calls
        def snapshot(self, repo_id: str, **kw: object) -> RepoSnapshot:
            return snap

    tracker = ProgressTracker()
    cancel = threading.Event()
    request = FetchRequest(repo_id="org/m", target=Path("/data/m"))
    assert steps.resolve_snapshot(OneSnapshot(), request, tracker, cancel) is snap  # type: ignore[arg-type]
    assert (tracker.phase, tracker.resolved_revision, tracker.bytes_total, tracker.files_total) == (
        "Downloading",
        C1,
        1,
        1,
    )
    cancel.set()
    with pytest.raises(errors.InterruptedFetchError):
        steps.resolve_snapshot(OneSnapshot(), request, tracker, cancel)  # type: ignore[arg-type]
