"""What a transferred file must hash to (fetcher/verify.py), checked without a transfer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.verify import FileState, TransferItem, VerifiedFile, git_blob_id

DATA = b"hello world\n"


def test_git_blob_id_is_gits() -> None:
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object /dev/null`
    assert git_blob_id(DATA) == "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"


def item(root: Dir, *, sha256: str | None = None, blob_id: str = "", size: int = len(DATA)) -> TransferItem:
    return TransferItem(
        path="f", url="https://hub.invalid/f", dest=root / "f", size=size, blob_id=blob_id, sha256=sha256
    )


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Dir]:
    with Dir.open_root(tmp_path) as d:
        yield d


def feed(state: FileState, *pieces: bytes) -> FileState:
    for piece in pieces:
        state.hashers.update(piece)
        state.offset += len(piece)
    return state


def test_lfs_file_is_verified_by_sha256_in_any_case(root: Dir) -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    state = feed(FileState(item(root, sha256=sha.upper())), DATA[:5], DATA[5:])
    assert state.hashers.sha1 is None  # no blob hash needed
    assert state.verified() == VerifiedFile("f", len(DATA), sha)
    assert feed(FileState(item(root, sha256="0" * 64)), DATA).verified() is None


def test_small_file_is_verified_by_blob_id_and_reports_its_sha256(root: Dir) -> None:
    state = feed(FileState(item(root, blob_id=git_blob_id(DATA).upper())), DATA)
    assert state.verified() == VerifiedFile("f", len(DATA), hashlib.sha256(DATA).hexdigest())
    assert feed(FileState(item(root, blob_id=git_blob_id(b"other"))), DATA).verified() is None


def test_incomplete_file_is_not_verified_and_reset_starts_over(root: Dir) -> None:
    state = feed(FileState(item(root, blob_id=git_blob_id(DATA))), DATA[:4])
    assert state.verified() is None
    feed(state, b"junk")
    state.reset()
    assert state.offset == 0
    assert feed(state, DATA).verified() is not None
