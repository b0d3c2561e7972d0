"""Staging/store/symlink layout, partial state and version cleanup on a tmp storage root."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modeldepot import errors
from modeldepot.fetcher.layout import Layout, default_root, is_version_name
from modeldepot.fetcher.manifest import FileEntry, Manifest, digest_of_dir, sha256_of_file
from modeldepot.fetcher.partial import PartialState
from modeldepot.fetcher.safefs import Dir

C1 = "1" * 40
C2 = "2" * 40


@pytest.fixture(autouse=True)
def _close_layouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Layouts keep directory fds open until closed: close every one a test made."""
    made: list[Layout] = []
    init: Callable[..., None] = Layout.__init__

    def tracking_init(self: Layout, *args: object, **kw: object) -> None:
        init(self, *args, **kw)
        made.append(self)

    monkeypatch.setattr(Layout, "__init__", tracking_init)
    yield
    for lay in made:
        lay.close()


def _stage(layout: Layout, version: str, files: dict[str, bytes]) -> Manifest:
    layout.prepare_staging(version, keep=set(files))
    staging = layout.staging_dir(version)
    entries = []
    for path, data in files.items():
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(data)
        entries.append(FileEntry(path, len(data), sha256_of_file(staging / path)))
    return Manifest(repo="org/m", repo_type="model", revision="main", commit=version[:40], files=entries)


def test_default_root() -> None:
    assert default_root(Path("/data/ns/name")) == Path("/data")
    assert default_root(Path("/home/u/models/m")) == Path("/home/u/models")


def test_paths_follow_the_contract(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "ns" / "name", root=tmp_path)
    assert lay.store_dir(C1) == tmp_path / ".modeldepot/store/ns/name" / C1
    assert lay.staging_dir(C1) == tmp_path / ".modeldepot/staging/ns/name" / C1


@pytest.mark.parametrize("target", [".modeldepot/x", "."])
def test_rejects_bad_paths(tmp_path: Path, target: str) -> None:
    with pytest.raises(errors.InvalidSpecError):
        Layout(Path(f"{tmp_path}/{target}"), root=tmp_path)


def test_rejects_target_outside_root(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidSpecError):
        Layout(tmp_path / "x", root=tmp_path / "y")


def test_publish_makes_relative_symlink_and_manifest(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "ns" / "m", root=tmp_path)
    m = _stage(lay, C1, {"a.json": b"{}", "sub/w.bin": b"w" * 100})
    store = lay.publish(C1, m)
    link = os.readlink(tmp_path / "ns" / "m")
    assert not os.path.isabs(link)
    assert link == f"../.modeldepot/store/ns/m/{C1}"
    assert (tmp_path / "ns" / "m" / "sub" / "w.bin").read_bytes() == b"w" * 100
    assert not lay.staging_dir(C1).exists()
    assert digest_of_dir(tmp_path / "ns" / "m") == m.digest
    assert Manifest.read(store) is not None
    assert not (store / ".modeldepot" / "partial.json").exists()
    assert lay.current_version() == C1
    cur = lay.current()
    assert cur is not None and cur[1].digest == m.digest


def test_new_version_swaps_and_removes_old(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "m", root=tmp_path)
    lay.publish(C1, _stage(lay, C1, {"a": b"1"}))
    lay.prepare_staging("3" * 40, keep=set())  # stale staging of another commit
    lay.publish(C2, _stage(lay, C2, {"a": b"2"}))
    assert (tmp_path / "m" / "a").read_bytes() == b"2"
    assert sorted(p.name for p in lay.store_parent.iterdir()) == [C2]
    assert not lay.staging_parent.exists()


def test_version_for_never_targets_the_published_dir(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "m", root=tmp_path)
    assert lay.version_for(C1) == C1
    lay.publish(C1, _stage(lay, C1, {"a": b"1"}))
    assert lay.version_for(C1) == C1 + ".1"
    assert lay.version_for(C2) == C2
    lay.publish(C1 + ".1", _stage(lay, C1 + ".1", {"a": b"1", "b": b"2"}))
    assert lay.version_for(C1) == C1
    assert sorted(p.name for p in lay.store_parent.iterdir()) == [C1 + ".1"]


def test_cleanup_only_touches_version_dirs(tmp_path: Path) -> None:
    # Never delete anything that is not one of our version directories (defence against nesting).
    lay = Layout(tmp_path / "models", root=tmp_path)
    foreign = lay.store_parent / "bert"
    foreign.mkdir(parents=True)
    lay.publish(C1, _stage(lay, C1, {"a": b"a"}))
    lay.publish(C2, _stage(lay, C2, {"a": b"b"}))
    assert foreign.is_dir()
    assert not lay.store_dir(C1).exists()
    assert is_version_name(C1) and is_version_name(C1 + ".1")
    assert not is_version_name("bert") and not is_version_name(C1 + ".2")


def test_prepare_staging_drops_unplanned_files(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "m", root=tmp_path)
    lay.prepare_staging(C1, keep=set())
    staging = lay.staging_dir(C1)
    (staging / "d").mkdir()
    (staging / "d" / "keep.bin").write_bytes(b"k")
    (staging / "drop.bin").write_bytes(b"d")
    (staging / ".modeldepot").mkdir()
    (staging / ".modeldepot" / "partial.json").write_text("{}")
    lay.prepare_staging(C1, keep={"d/keep.bin"})
    assert (staging / "d" / "keep.bin").exists()
    assert not (staging / "drop.bin").exists()
    assert (staging / ".modeldepot" / "partial.json").exists()


def test_partial_state_survives_restart_and_detects_changes(tmp_path: Path) -> None:
    staging = tmp_path / "s"
    staging.mkdir()
    (staging / "f").write_bytes(b"abc")
    sha = sha256_of_file(staging / "f")
    with Dir.open_root(staging) as d:
        p = PartialState(d, C1, min_interval=0)
        p.record(FileEntry("f", 3, sha))
        again = PartialState(d, C1)
        assert again.verified("f", 3, sha) == FileEntry("f", 3, sha)
        assert again.verified("f", 3, None) == FileEntry("f", 3, sha)  # non-LFS: no sha256 known upfront
        assert again.verified("f", 4, sha) is None
        assert again.verified("f", 3, "0" * 64) is None
        assert PartialState(d, C2).verified("f", 3, sha) is None  # recorded for another commit
        (staging / "f").write_bytes(b"abd")
        os.utime(staging / "f", ns=(1, 1))
        assert PartialState(d, C1).verified("f", 3, sha) is None


def test_partial_state_throttles_writes(tmp_path: Path) -> None:
    staging = tmp_path / "s"
    staging.mkdir()
    for n in ("a", "b"):
        (staging / n).write_bytes(n.encode())
    with Dir.open_root(staging) as d:
        p = PartialState(d, C1, min_interval=3600)
        p.record(FileEntry("a", 1, "x"))  # first record saves (nothing saved yet)
        p.record(FileEntry("b", 1, "y"))  # throttled
        assert set(PartialState(d, C1).files) == {"a"}
        p.flush()
        assert set(PartialState(d, C1).files) == {"a", "b"}


def test_unmanaged_target_dir(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "m", root=tmp_path)
    (tmp_path / "m").mkdir()
    lay.publish(C1, _stage(lay, C1, {"a": b"1"}))  # an empty directory is replaced
    assert (tmp_path / "m").is_symlink()
    lay2 = Layout(tmp_path / "n", root=tmp_path)
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "user-file").write_text("mine")
    with pytest.raises(errors.PathConflictError):
        lay2.publish(C1, _stage(lay2, C1, {"a": b"1"}))
    assert (tmp_path / "n" / "user-file").read_text() == "mine"


def test_link_into_staging_hardlinks(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "m", root=tmp_path)
    src = tmp_path / "src"
    src.write_bytes(b"data")
    staging = lay.prepare_staging(C1, keep={"x/y"})
    with Dir.open_root(tmp_path) as root:
        lay.link_into_staging(root / "src", staging, "x/y")
    assert (lay.staging_dir(C1) / "x" / "y").stat().st_ino == src.stat().st_ino


def test_remove_all(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "m", root=tmp_path)
    lay.publish(C1, _stage(lay, C1, {"a": b"1"}))
    lay.prepare_staging(C2, keep=set())
    lay.remove_all()
    assert not (tmp_path / "m").exists() and not (tmp_path / "m").is_symlink()
    assert not lay.store_parent.exists() and not lay.staging_parent.exists()
    lay.remove_all()  # nothing there is fine
