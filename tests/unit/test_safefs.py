"""safefs: nothing below a storage root is ever reached through a symlink, whatever is planted, when."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modeldepot import errors
from modeldepot.fetcher import safefs
from modeldepot.fetcher.safefs import Dir

Snapshot = dict[str, tuple[str, int, str]]


def snapshot(top: Path) -> Snapshot:
    """Every entry below `top` (and `top`): kind, mtime and content hash (files) or link value."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        d = Path(dirpath)
        found[str(d.relative_to(top))] = ("dir", d.lstat().st_mtime_ns, "")
        for name in dirnames + filenames:
            p = d / name
            st = p.lstat()
            if p.is_symlink():
                found[str(p.relative_to(top))] = ("link", st.st_mtime_ns, os.readlink(p))
            elif p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                found[str(p.relative_to(top))] = ("file", st.st_mtime_ns, digest)
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the root that a planted symlink points into; nothing may touch it."""
    out = tmp_path / "outside"
    (out / "b").mkdir(parents=True)
    (out / "b" / "c").write_bytes(b"outside b/c")
    (out / "c").write_bytes(b"outside c")
    (out / "secret").write_bytes(b"secret")
    os.utime(out / "b", ns=(1, 1))  # distinctive mtimes: any change shows
    os.utime(out, ns=(2, 2))
    return out


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Dir]:
    (tmp_path / "root").mkdir()
    with Dir.open_root(tmp_path / "root") as d:
        yield d


# -- path validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "",
        ".",
        "..",
        "a/../b",
        "a/./b",
        "a//b",
        "a/",
        "/etc/passwd",
        "a\0b",
        "x" * 256,
        "é" * 128,  # 256 bytes in UTF-8
        "a/" * 2000 + "a",
        "/".join(["x" * 200] * 21),  # 21 components, > 4096 bytes
    ],
)
def test_malformed_paths_are_invalid_spec(root: Dir, rel: str) -> None:
    with pytest.raises(errors.InvalidSpecError):
        safefs.split(rel)
    with pytest.raises(errors.InvalidSpecError):
        root.open_dir(rel, create=True)
    with pytest.raises(errors.InvalidSpecError):
        root.open(rel, "wb")
    assert root.listdir() == []


def test_limits_are_inclusive(root: Dir) -> None:
    assert safefs.split("x" * 255) == ("x" * 255,)
    assert len(safefs.split("/".join(["d"] * 64))) == 64
    with pytest.raises(errors.InvalidSpecError):
        safefs.split("/".join(["d"] * 65))
    root.mkdir("/".join(["d"] * 64))


# -- a symlink at every position ------------------------------------------------------------------

# The operations act on "a/b/c"; "x" is a regular file in the root.
OPS: dict[str, Callable[[Dir], object]] = {
    "open-read": lambda r: r.open("a/b/c", "rb").close(),
    "open-write": lambda r: r.open("a/b/c", "wb").close(),
    "open-rw": lambda r: r.open("a/b/c", "r+b").close(),
    "create": lambda r: r.open("a/b/c", "xb").close(),
    "write-atomic": lambda r: r.write_atomic("a/b/c", b"new"),
    "mkdir": lambda r: r.mkdir("a/b/c"),
    "open-dir": lambda r: r.open_dir("a/b/c").close(),
    "unlink": lambda r: r.unlink("a/b/c"),
    "rmdir": lambda r: r.rmdir("a/b/c"),
    "rmtree": lambda r: r.rmtree("a/b/c"),
    "rename-from": lambda r: r.rename("a/b/c", r, "moved"),
    "rename-to": lambda r: r.rename("x", r, "a/b/c"),
    "link-from": lambda r: r.link("a/b/c", r, "linked"),
    "link-to": lambda r: r.link("x", r, "a/b/c"),
    "symlink": lambda r: r.symlink("anything", "a/b/c"),
    "stat": lambda r: r.lstat("a/b/c"),
    "fsync": lambda r: (r / "a/b/c").fsync(),
    "flock": lambda r: r.flock("a/b/c").__enter__(),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("position", ["a", "a/b"])
def test_a_symlinked_directory_is_never_followed(
    root: Dir, tmp_path: Path, outside: Path, op: str, position: str
) -> None:
    # root child ("a" -> outside, so a/b/c would be outside/b/c) and middle ("a/b" -> outside: outside/c)
    real = tmp_path / "root"
    (real / position).parent.mkdir(parents=True, exist_ok=True)
    (real / position).symlink_to(outside)
    (real / "x").write_bytes(b"x")
    before = snapshot(outside)
    with pytest.raises(
        errors.PathConflictError, match=f"/root/{position} is a symlink; refusing to follow it$"
    ):
        OPS[op](root)
    assert snapshot(outside) == before
    assert (real / position).is_symlink()


# What each operation does when "a/b/c" itself is a symlink to a file outside: acts on the link
# itself (None) or refuses (the exception).
LEAF: dict[str, type[BaseException] | None] = {
    "open-read": errors.PathConflictError,
    "open-write": errors.PathConflictError,
    "open-rw": errors.PathConflictError,
    "create": FileExistsError,
    "write-atomic": None,  # replaces the link
    "mkdir": errors.PathConflictError,
    "open-dir": errors.PathConflictError,
    "unlink": None,  # removes the link
    "rmdir": NotADirectoryError,
    "rmtree": None,  # removes the link
    "rename-from": None,  # moves the link
    "rename-to": None,  # replaces the link
    "link-from": None,  # hard-links the link itself
    "link-to": FileExistsError,
    "symlink": FileExistsError,
    "stat": None,  # describes the link
    "fsync": errors.PathConflictError,
    "flock": errors.PathConflictError,
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_symlinked_leaf_is_never_followed(root: Dir, tmp_path: Path, outside: Path, op: str) -> None:
    real = tmp_path / "root"
    (real / "a" / "b").mkdir(parents=True)
    (real / "a" / "b" / "c").symlink_to(outside / "c")
    (real / "x").write_bytes(b"x")
    before = snapshot(outside)
    expected = LEAF[op]
    if expected is None:
        OPS[op](root)
    else:
        with pytest.raises(expected):
            OPS[op](root)
    assert snapshot(outside) == before
    if op == "stat":
        assert root.lstat("a/b/c").st_size == len(str(outside / "c"))


def test_rmtree_removes_symlinks_inside_without_following(root: Dir, tmp_path: Path, outside: Path) -> None:
    real = tmp_path / "root"
    (real / "t" / "d").mkdir(parents=True)
    (real / "t" / "d" / "f").write_bytes(b"f")
    (real / "t" / "to-dir").symlink_to(outside)
    (real / "t" / "d" / "to-file").symlink_to(outside / "secret")
    before = snapshot(outside)
    root.rmtree("t")
    assert not (real / "t").exists()
    assert snapshot(outside) == before


def test_walk_dirs_does_not_enter_symlinks(root: Dir, tmp_path: Path, outside: Path) -> None:
    real = tmp_path / "root"
    (real / "d" / "e").mkdir(parents=True)
    (real / "d" / "out").symlink_to(outside)
    (real / "skip").mkdir()
    assert [rel for rel, _ in root.walk_dirs(skip={"skip"})] == ["", "d", "d/e"]


# -- races: a directory swapped for a symlink after it was resolved ---------------------------------


def test_an_open_dir_keeps_writing_into_the_real_directory(root: Dir, tmp_path: Path, outside: Path) -> None:
    real = tmp_path / "root"
    with root.open_dir("staging/v", create=True) as staging:
        # another tenant moves the directory away and plants a symlink where it was
        (real / "staging" / "v").rename(real / "staging" / "moved")
        (real / "staging" / "v").symlink_to(outside)
        before = snapshot(outside)
        (staging / "sub/new.bin").make_parents()
        staging.mkdir("sub")
        with (staging / "sub/new.bin").open("wb") as fh:
            fh.write(b"data")
        staging.write_atomic("meta.json", b"{}")
        staging.rename("meta.json", staging, "meta2.json")
        staging.unlink("meta2.json")
        assert snapshot(outside) == before
        assert (real / "staging" / "moved" / "sub" / "new.bin").read_bytes() == b"data"
        # resolving the path again from the root refuses the symlink
        with pytest.raises(errors.PathConflictError, match="staging/v is a symlink"):
            root.open("staging/v/sub/new.bin", "rb")


def test_a_location_resolves_again_on_every_use(root: Dir, tmp_path: Path, outside: Path) -> None:
    real = tmp_path / "root"
    loc = root / "a/f"
    loc.make_parents()
    with loc.open("wb") as fh:
        fh.write(b"first")
    (real / "a").rename(real / "a.old")
    (real / "a").symlink_to(outside)
    (outside / "f").write_bytes(b"outside f")
    before = snapshot(outside)
    for use in (lambda: loc.open("r+b"), loc.stat, loc.unlink, loc.fsync, loc.read_bytes):
        with pytest.raises(errors.PathConflictError):
            use()
    assert snapshot(outside) == before
    assert (real / "a.old" / "f").read_bytes() == b"first"


def test_a_planted_fifo_does_not_block(root: Dir, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "root" / "fifo")
    done = threading.Event()

    def attempt() -> None:
        for mode in ("rb", "wb"):
            with pytest.raises(errors.PathConflictError, match="not a regular file"):
                root.open("fifo", mode)  # type: ignore[call-overload]
        done.set()

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set()


def test_a_shared_inode_is_never_modified_in_place(root: Dir, tmp_path: Path) -> None:
    real = tmp_path / "root"
    (real / "published").write_bytes(b"published bytes")
    os.link(real / "published", real / "staged")
    with pytest.raises(errors.PathConflictError, match="hard links"):
        root.open("staged", "r+b")
    with root.open("staged", "wb") as fh:  # truncating: the name gets a new inode
        fh.write(b"new")
    assert (real / "published").read_bytes() == b"published bytes"
    assert (real / "staged").read_bytes() == b"new"


def test_a_closed_dir_refuses_late_calls(tmp_path: Path) -> None:
    d = Dir.open_root(tmp_path)
    d.close()
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.mkdir("x")
    assert not (tmp_path / "x").exists()


def test_ordinary_use(root: Dir, tmp_path: Path) -> None:
    real = tmp_path / "root"
    with root.open_dir("p/q", create=True) as q:
        with q.open("f.txt", "w") as fh:
            fh.write("héllo")
        assert q.read_bytes("f.txt") == "héllo".encode()
        q.link("f.txt", q, "g.txt")
        q.symlink("f.txt", "l")
        assert q.readlink("l") == "f.txt"
        assert sorted(q.listdir()) == ["f.txt", "g.txt", "l"]
        q.fsync()
    assert (real / "p" / "q" / "g.txt").stat().st_nlink == 2
    with root.flock("lock"):
        assert (real / "lock").is_file()
    assert root.exists("p/q/l") and not root.exists("p/nope")
    root.rmtree("p")
    root.rmtree("p")  # missing is fine
    with pytest.raises(FileNotFoundError):
        root.rmtree("p", missing_ok=False)
    assert root.listdir() == ["lock"]
