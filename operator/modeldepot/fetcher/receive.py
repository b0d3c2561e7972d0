"""One HTTP response body onto disk: the GET, the throughput floor, batched positional writes.

`Receiver` wraps the transfer's shared `httpx2.Client`. `open` sends a GET (`Authorization` only to
the origin the Hub's URL names: a URL the Hub redirected us to is fetched without it, as httpx2 does
when it follows the redirect itself). `copy_body` reads the body in network-sized pieces and hands
them to a `flush(pieces, n)` callback in batches of about `chunk_size` bytes (or every 0.25 s on
slow links), so writes and hash updates are few and large; what arrived before a broken connection
is still flushed, so a retry resumes after it. A body slower than its share of the throughput floor
over the stall window is cut (`Transient`, stalled). `pwrite_all` writes a batch at its offset
without joining it (`pwritev`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator

import httpcore2
import httpx2

from modeldepot import errors
from modeldepot.fetcher.retry import Transient
from modeldepot.fetcher.verify import TransferItem

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SOCKET_READ = 1 << 20
_MAX_IOV = 512
"""Most pieces given to one pwritev (IOV_MAX is 1024 on Linux); more are joined first."""
_THREAD = threading.local()

Flush = Callable[[list[bytes], int], None]


class _ReadSize:
    """httpcore2's `HTTP11Connection.READ_NUM_BYTES`, as set for the calling thread (`read_size`)."""

    def __get__(self, obj: object, owner: type | None = None) -> int:
        return getattr(_THREAD, "read_size", _SOCKET_READ)


def tune_httpcore() -> None:
    """Read sockets 1 MiB at a time instead of httpcore2's 64 KiB, unless a thread asks otherwise.

    Per-read h11 parsing is the main CPU cost of a large download after sha256 (measured ~25% less
    client CPU per GiB on loopback). Each read allocates that much and the body passes through three
    buffers of it, so the streams of a multi-stream download (each far slower than one loopback
    stream) read less at a time (`read_size`): 8 streams x 1 MiB reads measured ~40 MB more peak
    RSS than one. A private class attribute: if it disappears, nothing changes.
    """
    conn = getattr(getattr(httpcore2, "_sync", None), "http11", None)
    cls = getattr(conn, "HTTP11Connection", None)
    if (
        cls is not None
        and hasattr(cls, "READ_NUM_BYTES")
        and not isinstance(cls.__dict__.get("READ_NUM_BYTES"), _ReadSize)
    ):
        cls.READ_NUM_BYTES = _ReadSize()


def read_size(n: int | None) -> None:
    """Socket reads of the calling thread: `n` bytes at a time (None: the default, 1 MiB)."""
    if n is None:
        _THREAD.__dict__.pop("read_size", None)
    else:
        _THREAD.read_size = n


def pwrite_all(fd: int, pieces: list[bytes], offset: int, item: TransferItem) -> None:
    """Write `pieces` one after the other at `offset` (ENOSPC/EDQUOT: InsufficientStorage)."""
    if len(pieces) > _MAX_IOV:
        pieces = [b"".join(pieces)]
    try:
        total = sum(len(p) for p in pieces)
        done = os.pwritev(fd, pieces, offset) if len(pieces) > 1 else os.pwrite(fd, pieces[0], offset)
        if done < total:  # a short write (rare): the rest one plain write at a time
            rest = memoryview(b"".join(pieces))[done:]
            while rest:
                n = os.pwrite(fd, rest, offset + done)
                rest, done = rest[n:], done + n
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise errors.InsufficientStorageError(f"no space left while writing {item.path}") from None
        raise


def same_origin(a: httpx2.URL, b: httpx2.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class Receiver:
    """GETs and body copies over one shared client (see the module docstring)."""

    def __init__(
        self,
        client: httpx2.Client,
        *,
        chunk_size: int,
        min_bytes_per_second: float,
        stall_window: float,
        stopping: Callable[[], bool],
    ) -> None:
        tune_httpcore()
        self.client = client
        self.chunk = chunk_size
        self._min_bps = min_bytes_per_second
        self._stall_window = stall_window
        self._stopping = stopping
        self._streams = 0
        self._streams_lock = threading.Lock()

    @contextlib.contextmanager
    def open(self, url: str, headers: dict[str, str], *, origin: str) -> Iterator[httpx2.Response]:
        """GET `url` (streamed); `Authorization` is kept only if `url` has the origin of `origin`."""
        request = self.client.build_request("GET", url, headers=headers)
        if url != origin and not same_origin(request.url, httpx2.URL(origin)):
            request.headers.pop("authorization", None)
        response = self.client.send(request, stream=True)
        try:
            yield response
        finally:
            response.close()

    def copy_body(
        self,
        item: TransferItem,
        response: httpx2.Response,
        flush: Flush,
        *,
        batch: int | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        """Hand the body to `flush` in batches of `batch` (default `chunk_size`) bytes; `Transient`
        (stalled) if it is too slow. Ends early (after flushing what came) on a stop: the transfer's,
        or `stopping()`.

        Network-sized pieces are gathered here rather than by `iter_raw(chunk_size)`, whose buffer
        would be lost on a broken connection.
        """
        limit = batch or self.chunk
        pieces: list[bytes] = []
        size = 0
        last_flush = window_start = time.monotonic()
        window_bytes = 0
        stalled: str | None = None
        with self._streams_lock:
            self._streams += 1
        try:
            try:
                for piece in response.iter_raw():
                    pieces.append(piece)
                    size += len(piece)
                    now = time.monotonic()
                    window_bytes += len(piece)
                    if self._min_bps > 0 and now - window_start >= self._stall_window:
                        stalled = self._stalled(window_bytes, now - window_start)
                        if stalled is not None:
                            break
                        window_start, window_bytes = now, 0
                    # Large batches on fast links; at least ~4 flushes/s on slow ones (progress, resume).
                    if size >= limit or now - last_flush > 0.25:
                        if self._stopping() or (stopping is not None and stopping()):
                            break
                        full, pieces, n, size = pieces, [], size, 0
                        flush(full, n)
                        last_flush = time.monotonic()
            except (httpx2.TransportError, httpx2.StreamError):
                if pieces:
                    flush(pieces, size)
                raise
            if pieces:
                flush(pieces, size)
        finally:
            with self._streams_lock:
                self._streams -= 1
        if stalled is not None:
            raise Transient(
                errors.DownloadFailedError(f"{item.path}: stalled, {stalled}"),
                stalled=True,
            )

    def _stalled(self, got: int, seconds: float) -> str | None:
        """Why a stream that got `got` bytes in `seconds` is too slow, or None.

        The floor is shared by the streams running: each must reach `min_bytes_per_second /
        streams`, so a slow link with many parallel streams is not mistaken for a trickling server.
        """
        with self._streams_lock:
            streams = max(1, self._streams)
        floor = self._min_bps / streams
        rate = got / seconds
        if rate >= floor:
            return None
        return f"{rate:.0f} B/s over {seconds:.1f}s, below the floor of {floor:.0f} B/s"


def transport_error(item: TransferItem, exc: Exception) -> Transient:
    """The retryable failure for an httpx2 transport or stream error while fetching `item`."""
    kind = errors.HubUnavailableError if isinstance(exc, httpx2.ConnectError) else errors.DownloadFailedError
    return Transient(kind(f"{item.path}: {type(exc).__name__}: {exc}"))
