"""Transfer: hashing in the same pass, blob-id verification, Range resume, redirects, errors."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot import errors
from modeldepot.fetcher.hub import HubClient
from modeldepot.fetcher.receive import pwrite_all
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.transfer import RetryPolicy, Transfer, TransferItem
from modeldepot.fetcher.verify import git_blob_id

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Iterator[Dir]:
    """`tmp_path`, open: transfer destinations are `safefs` locations below a directory fd."""
    with Dir.open_root(tmp_path) as d:
        yield d


def test_git_blob_id_matches_git() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


@pytest.mark.parametrize("pieces", [[b"x"], [b"x", b"y"]])
def test_enospc_is_insufficient_storage(
    tmp_dir: Dir, monkeypatch: pytest.MonkeyPatch, pieces: list[bytes]
) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.pwrite", full)
    monkeypatch.setattr("os.pwritev", full)
    item = TransferItem("f", "http://x/f", tmp_dir / "f", 2, "0", None)
    with pytest.raises(errors.InsufficientStorageError):
        pwrite_all(3, pieces, 0, item)


def test_a_short_positional_write_is_completed(
    tmp_path: Path, tmp_dir: Dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev
    monkeypatch.setattr("os.pwritev", lambda fd, bufs, off: real(fd, [bytes(bufs[0])[:3]], off))
    item = TransferItem("f", "http://x/f", tmp_dir / "f", 10, "0", None)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        pwrite_all(fd, [b"abcde", b"fgh"], 2, item)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"\0\0abcdefgh"


class _NoRangeHandler(BaseHTTPRequestHandler):
    """Serves DATA, ignoring Range (200 with the full body), like some proxies do."""

    seen: list[str | None] = []
    cut_first: bool = True

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Range"))
        body = DATA
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[:300_000])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def norange() -> Iterator[str]:
    _NoRangeHandler.seen = []
    _NoRangeHandler.cut_first = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoRangeHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/f"
    server.shutdown()
    server.server_close()


def _transfer(**kw: Any) -> Transfer:
    kw.setdefault("headers", {})
    kw.setdefault("retry", RetryPolicy(3, 0.01, 0.02))
    return Transfer(**kw)


def test_server_ignoring_range_restarts_the_file(norange: str, tmp_path: Path, tmp_dir: Dir) -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    item = TransferItem("f", norange, tmp_dir / "f", len(DATA), "unused", sha)
    done: list[int] = []
    adjust: list[int] = []
    with _transfer(on_bytes=done.append, on_adjust=adjust.append) as t:
        v = t.fetch(item)
    assert v.sha256 == sha
    assert (tmp_path / "f").read_bytes() == DATA
    assert _NoRangeHandler.seen == [None, "bytes=300000-"]
    # progress: the 300 kB of the cut attempt were taken back when the file restarted
    assert sum(done) + sum(adjust) == len(DATA)


def test_non_lfs_file_is_verified_by_blob_id(norange: str, tmp_path: Path, tmp_dir: Dir) -> None:
    _NoRangeHandler.cut_first = False
    good = TransferItem("f", norange, tmp_dir / "f", len(DATA), git_blob_id(DATA), None)
    with _transfer() as t:
        assert t.fetch(good).sha256 == hashlib.sha256(DATA).hexdigest()
    bad = TransferItem("g", norange, tmp_dir / "g", len(DATA), git_blob_id(DATA + b"x"), None)
    with _transfer() as t, pytest.raises(errors.ChecksumMismatchError):
        t.fetch(bad)
    assert not (tmp_path / "g").exists()


def test_a_verified_file_is_fsynced_before_it_is_reported_and_a_bad_one_never(
    norange: str, tmp_path: Path, tmp_dir: Dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _NoRangeHandler.cut_first = False
    synced: list[str] = []
    reported: list[tuple[str, list[str]]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr("os.fsync", fsync)
    good = TransferItem("f", norange, tmp_dir / "f", len(DATA), git_blob_id(DATA), None)
    bad = TransferItem("g", norange, tmp_dir / "g", len(DATA), git_blob_id(DATA + b"x"), None)
    with _transfer(fsync=True, on_file=lambda v: reported.append((v.path, list(synced)))) as t:
        t.fetch(good)
        with pytest.raises(errors.ChecksumMismatchError):
            t.fetch(bad)
    assert reported == [("f", ["f"])]  # durable when reported (recorded as verified)
    assert synced == ["f"] and not (tmp_path / "g").exists()


def test_longer_body_than_listed_is_a_mismatch(norange: str, tmp_dir: Dir) -> None:
    _NoRangeHandler.cut_first = False
    item = TransferItem("f", norange, tmp_dir / "f", len(DATA) - 1, "0", "0" * 64)
    with _transfer() as t, pytest.raises(errors.ChecksumMismatchError):
        t.fetch(item)


def test_cdn_redirect_drops_the_token(tmp_path: Path, tmp_dir: Dir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_TOKEN", "hf_redirect_secret")
    with HubEmulator(lfs_redirect=True) as hub:
        hub.add_repo_from_files("org/r", {"w.bin": (1 << 20, 5), "c.json": b"{}"})
        hub.set_gated("org/r", "hf_redirect_secret")
        client = HubClient(endpoint=hub.url)
        snap = client.snapshot("org/r")
        items = [
            TransferItem(f.path, f.url, tmp_dir / f.path, f.size, f.blob_id, f.sha256) for f in snap.files
        ]
        with _transfer(headers=client.download_headers()) as t:
            results = {v.path: v for v in t.fetch_all(items)}
        assert results["w.bin"].sha256 == hub.repo_files("org/r")["w.bin"]["sha256"]
        gets = [r for r in hub.requests if r["method"] == "GET" and r.get("file") == "w.bin"]
        assert [r["auth"] for r in gets] == [True, False]  # Hub with token, then "CDN" without
        assert [r["status"] for r in gets] == [302, 200]


def test_cancel_stops_all_workers(tmp_path: Path, tmp_dir: Dir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with HubEmulator(throttle_bps=1 << 20) as hub:
        hub.add_repo_from_files("org/s", {f"f{i}.bin": (1 << 20, i) for i in range(4)})
        snap = HubClient(endpoint=hub.url).snapshot("org/s")
        items = [
            TransferItem(f.path, f.url, tmp_dir / f.path, f.size, f.blob_id, f.sha256) for f in snap.files
        ]
        cancel = threading.Event()
        got: list[int] = []

        def on_bytes(n: int) -> None:
            got.append(n)
            if sum(got) > 200_000:
                cancel.set()

        with (
            _transfer(cancel=cancel, on_bytes=on_bytes, concurrency=4) as t,
            pytest.raises(errors.InterruptedFetchError),
        ):
            t.fetch_all(items)
        kept = sum(p.stat().st_size for p in tmp_path.glob("f*.bin"))
        assert 0 < kept < 4 << 20
