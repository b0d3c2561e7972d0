"""`modeldepot prepare`: creates what the node-local fetcher needs, never through a symlink, and
chowns only what it created (run as a normal user here: chown to our own uid/gid)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from modeldepot import errors
from modeldepot.cli import main
from modeldepot.fetcher.prepare import directories_for, prepare

UID, GID = os.getuid(), os.getgid()


def test_directories_for_a_node_local_path() -> None:
    assert directories_for(PurePosixPath("ns/name")) == [
        ".modeldepot",
        ".modeldepot/store",
        ".modeldepot/staging",
        ".modeldepot/owners",
        ".modeldepot/blobs",
        ".modeldepot/blobs/sha256",
        ".modeldepot/blobs/git",
        "ns",
        ".modeldepot/store/ns",
        ".modeldepot/staging/ns",
    ]
    assert directories_for(PurePosixPath("name"))[-1] == ".modeldepot/blobs/git"


def test_creates_the_directories_once(tmp_path: Path) -> None:
    made = prepare(tmp_path / "ns" / "name", root=tmp_path, uid=UID, gid=GID)
    assert made == directories_for(PurePosixPath("ns/name"))
    for d in made:
        assert (tmp_path / d).is_dir()
    assert not (tmp_path / "ns" / "name").exists()  # the target is the fetcher's symlink
    assert prepare(tmp_path / "ns" / "name", root=tmp_path, uid=UID, gid=GID) == []


@pytest.mark.parametrize("planted", ["ns", ".modeldepot", ".modeldepot/store", ".modeldepot/staging/ns"])
def test_refuses_a_symlink_anywhere(tmp_path: Path, planted: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    parent = (root / planted).parent
    parent.mkdir(parents=True, exist_ok=True)
    (root / planted).symlink_to(outside)
    with pytest.raises(errors.PathConflictError, match="symlink"):
        prepare(root / "ns" / "name", root=root, uid=UID, gid=GID)
    assert list(outside.iterdir()) == []


def test_cli_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "ns").symlink_to("/etc")
    args = ["prepare", "--to", str(tmp_path / "ns" / "x"), "--root", str(tmp_path)]
    assert main([*args, "--uid", str(UID), "--gid", str(GID)]) == 2
    ok = ["prepare", "--to", str(tmp_path / "ok" / "x"), "--root", str(tmp_path)]
    assert main([*ok, "--uid", str(UID), "--gid", str(GID)]) == 0
