"""Hashing behind the writers (fetcher/hashing.py): in order, bounded, exact, without a server."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot import errors
from modeldepot.fetcher import hashing
from modeldepot.fetcher.hashing import InlineHasher, OrderedHasher
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.verify import FileState, TransferItem, git_blob_id

DATA = os.urandom(3 << 20)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Dir]:
    with Dir.open_root(tmp_path) as d:
        yield d


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "w.bin").write_bytes(DATA)
    fd = os.open(tmp_path / "w.bin", os.O_RDONLY)
    yield fd
    os.close(fd)


def state(root: Dir, *, lfs: bool = True) -> FileState:
    sha = hashlib.sha256(DATA).hexdigest() if lfs else None
    return FileState(TransferItem("w.bin", "u", root / "w.bin", len(DATA), git_blob_id(DATA), sha))


@pytest.mark.parametrize("kind", [InlineHasher, OrderedHasher])
@pytest.mark.parametrize("lfs", [True, False])
def test_disk_ranges_and_pieces_are_hashed_in_the_order_given(
    root: Dir, fd: int, kind: type[InlineHasher], lfs: bool
) -> None:
    st = state(root, lfs=lfs)
    with kind(st, fd, read_size=100_000) as h:
        h.put_disk(700_001)  # the prefix already on disk
        h.put_disk(500)  # behind what is queued: nothing
        h.put([DATA[700_001:800_000], DATA[800_000:1_000_000]])  # handed over in memory
        assert h.queued == 1_000_000
        h.put_disk(2_500_000)  # written by other streams, read back
        h.put([DATA[2_500_000:]])
        assert h.wait() == len(DATA)
    assert st.verified() is not None


@pytest.mark.parametrize("kind", [InlineHasher, OrderedHasher])
def test_reset_starts_over_from_byte_zero(root: Dir, fd: int, kind: type[InlineHasher]) -> None:
    st = state(root)
    with kind(st, fd) as h:
        h.put([b"junk from a response that ignored the range"])
        h.reset()
        assert h.queued == 0 and st.offset == 0
        h.put([DATA[:10]])
        h.put_disk(len(DATA))
        h.wait()
    assert st.verified() is not None


@pytest.mark.parametrize("kind", [InlineHasher, OrderedHasher])
def test_a_file_shorter_than_what_was_written_is_an_error(
    root: Dir, tmp_path: Path, kind: type[InlineHasher]
) -> None:
    (tmp_path / "w.bin").write_bytes(DATA[:1000])  # truncated by someone else
    fd = os.open(tmp_path / "w.bin", os.O_RDONLY)
    try:
        with (
            kind(state(root), fd) as h,
            pytest.raises(errors.DownloadFailedError, match="changed by someone"),
        ):
            h.put_disk(5000)
            h.wait()
    finally:
        os.close(fd)


def test_the_queue_is_bounded_so_memory_is(root: Dir, fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    st = state(root)
    gate = threading.Event()
    real = st.hashers.update

    def slow(data: bytes | bytearray | memoryview) -> None:
        gate.wait()
        real(data)

    monkeypatch.setattr(st.hashers, "update", slow)
    with OrderedHasher(st, fd, depth=2) as h:
        pieces = [DATA[i : i + 1000] for i in range(0, 10_000, 1000)]

        def writer() -> None:
            for p in pieces:
                h.put([p])

        put = threading.Thread(target=writer, daemon=True)
        put.start()
        put.join(0.3)
        assert put.is_alive()  # one being hashed, two queued: the writer waits for the hasher
        assert h.queued <= 4000
        gate.set()
        put.join(5)
        assert h.wait() == 10_000


def test_an_error_on_the_hashing_thread_reaches_the_writer_and_never_blocks_it(
    root: Dir, fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = state(root)

    def broken(data: bytes | bytearray | memoryview) -> None:
        raise OSError("boom")

    monkeypatch.setattr(st.hashers, "update", broken)
    with OrderedHasher(st, fd, depth=1) as h:
        h.put([b"x"])
        with pytest.raises(OSError, match="boom"):
            for _ in range(10):  # the dead hasher keeps draining: no put blocks for ever
                h.put([b"y"])
        with pytest.raises(OSError, match="boom"):
            h.wait()


def test_write_back_is_started_behind_the_hasher(root: Dir, fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(hashing, "start_writeback", lambda fd, start, end: calls.append((start, end)))
    with OrderedHasher(state(root), fd, read_size=1 << 20, sync_every=1 << 20) as h:
        h.put_disk(len(DATA))
        h.wait()
    assert calls and calls[0][0] == 0 and calls[-1][1] == len(DATA)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(calls))


def test_start_writeback_is_harmless_on_a_real_file(fd: int) -> None:
    hashing.start_writeback(fd, 0, len(DATA))  # sync_file_range, or nothing where it is missing


def test_a_caller_that_must_not_wait_skips_a_disk_range_while_the_hasher_is_behind(
    root: Dir, fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = state(root)
    gate = threading.Event()
    real = st.hashers.update

    def slow(data: bytes | bytearray | memoryview) -> None:
        gate.wait()
        real(data)

    monkeypatch.setattr(st.hashers, "update", slow)
    with OrderedHasher(st, fd, depth=1) as h:
        h.put_disk(1000)  # taken by the thread, which now waits
        h.put_disk(2000)  # queued: the queue is full
        h.put_disk(3000, block=False)  # skipped, at once
        assert h.queued == 2000
        gate.set()
        h.put_disk(len(DATA), block=False)  # a later, larger end covers what was skipped
        h.put_disk(len(DATA))
        assert h.wait() == len(DATA)
    assert st.verified() is not None
