"""Ranged, verified, resumable HTTP transfer of repository files into staging (httpx).

Each file is written and hashed in the same pass: sha256 always, plus the git blob sha1
(`b"blob <size>\\0" + content`) for non-LFS files, which the Hub identifies only by blob id. An
existing partial file is hashed first and continued with `Range: bytes=N-`; if the server answers
200 instead of 206 the file restarts from zero. Transient failures (connection errors, 5xx, 429)
are retried with exponential backoff, continuing from the bytes already written. Files run in a
bounded thread pool over one shared connection pool.

What a file must hash to and the running hashes are in `verify`; what an answer means (retry,
restart, which error) and the backoff are in `retry`. This module is the I/O between them.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

import httpcore
import httpx

from modeldepot import errors
from modeldepot.fetcher.retry import Restart, RetryPolicy, Transient, status_error
from modeldepot.fetcher.verify import FileState, TransferItem, VerifiedFile

__all__ = ["RetryPolicy", "Transfer", "TransferItem", "VerifiedFile"]

log = logging.getLogger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SOCKET_READ = 1 << 20


def _tune_httpcore() -> None:
    """Read sockets 1 MiB at a time instead of httpcore's 64 KiB.

    Per-read h11 parsing is the main CPU cost of a large download after sha256 (measured ~25% less
    client CPU per GiB on loopback). A private class attribute: if it disappears, nothing changes.
    """
    conn = getattr(getattr(httpcore, "_sync", None), "http11", None)
    cls = getattr(conn, "HTTP11Connection", None)
    if cls is not None and getattr(cls, "READ_NUM_BYTES", _SOCKET_READ) < _SOCKET_READ:
        cls.READ_NUM_BYTES = _SOCKET_READ


def _write(fh: IO[bytes], data: bytes | bytearray, item: TransferItem) -> None:
    try:
        fh.write(data)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise errors.InsufficientStorageError(f"no space left while writing {item.path}") from None
        raise


class Transfer:
    """Downloads `TransferItem`s concurrently.

    Progress: `on_bytes(n)` for bytes received, `on_adjust(n)` for bytes that count as done without
    a transfer (resumed partial data) or no longer count (negative: a restarted file), `on_file`
    for each verified file.
    """

    def __init__(
        self,
        *,
        headers: dict[str, str],
        concurrency: int = 8,
        chunk_size: int = 4 * 1024 * 1024,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        cancel: threading.Event | None = None,
        on_bytes: Callable[[int], None] = lambda n: None,
        on_adjust: Callable[[int], None] = lambda n: None,
        on_file: Callable[[VerifiedFile], None] = lambda f: None,
        stop_grace: float = 5.0,
        fsync: bool = True,
        min_bytes_per_second: float = 64 * 1024,
        stall_window: float = 30.0,
    ) -> None:
        _tune_httpcore()
        self._concurrency = concurrency
        self._chunk = chunk_size
        self._retry = retry or RetryPolicy()
        self.cancel = cancel or threading.Event()
        self._abort = threading.Event()
        self._on_bytes = on_bytes
        self._on_adjust = on_adjust
        self._on_file = on_file
        self._stop_grace = stop_grace
        self._fsync = fsync
        self._min_bps = min_bytes_per_second
        self._stall_window = stall_window
        # An attempt must bring this much to reset the retry count (1 byte/connection is no progress).
        self._progress_floor = max(1, int(min_bytes_per_second * stall_window))
        self._streams = 0
        self._streams_lock = threading.Lock()
        # Authorization (client-wide header) is dropped by httpx on a redirect to another origin
        # (scheme, host or port; only an http->https upgrade of the same host keeps it).
        self._client = httpx.Client(
            headers=headers,
            follow_redirects=True,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=None),
            limits=httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stopping(self) -> bool:
        return self.cancel.is_set() or self._abort.is_set()

    def _check_stop(self) -> None:
        if self._stopping():
            raise errors.InterruptedFetchError("stop requested; partial data kept for resume")

    # -- one file -------------------------------------------------------------------------------

    def fetch(self, item: TransferItem) -> VerifiedFile:
        """Bring one file into `item.dest`, resuming a partial file; verify it."""
        item.dest.make_parents()
        state = self._open_partial(item)
        resumed = state.offset > 0
        self._on_adjust(state.offset)
        self._download(state)
        result = state.verified()
        if result is None and (resumed or state.segments > 1):
            # Maybe an earlier segment is what is wrong (e.g. a partial file of an old run): once from zero.
            log.warning("%s: resumed data did not verify; downloading it again from zero", item.path)
            self._on_adjust(-item.size)
            state = FileState(item)
            self._download(state)
            result = state.verified()
        if result is None:
            item.dest.unlink(missing_ok=True)
            self._on_adjust(-item.size)
            expected = f"sha256 {item.sha256}" if item.sha256 else f"git blob id {item.blob_id}"
            raise errors.ChecksumMismatchError(
                f"{item.path}: downloaded bytes do not match the Hub's {expected}"
            )
        if self._fsync:
            # Durable before it is recorded as verified (and later published).
            item.dest.fsync()
        self._on_file(result)
        return result

    def _open_partial(self, item: TransferItem) -> FileState:
        """Hash the bytes already in `dest` (dropping them if they cannot be a prefix)."""
        state = FileState(item)
        try:
            have = item.dest.stat().st_size
        except FileNotFoundError:
            return state
        if have > item.size:
            return state
        with item.dest.open("rb", buffering=0) as fh:
            while state.offset < have:
                self._check_stop()
                chunk = fh.read(min(self._chunk, have - state.offset))
                if not chunk:
                    break
                state.hashers.update(chunk)
                state.offset += len(chunk)
        if state.offset:
            log.info("%s: resuming at byte %d of %d", item.path, state.offset, item.size)
        return state

    def _download(self, state: FileState) -> None:
        item = state.item
        if item.size == 0:
            # Empty files need no request; just create (or truncate) the staging file.
            with item.dest.open("wb"):
                pass
        attempt = 0
        while state.offset < item.size:
            self._check_stop()
            start = state.offset
            try:
                self._stream(state)
            except Restart:
                log.warning("%s: unusable answer to a Range request; restarting the file", item.path)
                self._on_adjust(-state.offset)
                state.reset()
                attempt += 1
                if attempt > self._retry.max_retries:
                    raise errors.DownloadFailedError(
                        f"{item.path}: cannot resume (Range not honoured)"
                    ) from None
            except Transient as exc:
                # Real progress resets the count; a stall or a connection that brings only a few
                # bytes does not, so a hostile server cannot keep one file going for ever.
                if not exc.stalled and (state.offset - start >= min(self._progress_floor, item.size - start)):
                    attempt = 0
                if attempt >= self._retry.max_retries:
                    raise exc.error from None
                delay = self._retry.delay(attempt, exc.retry_after)
                log.warning("%s: %s; retry %d in %.1fs", item.path, exc, attempt + 1, delay)
                attempt += 1
                self.cancel.wait(delay)

    def _stream(self, state: FileState) -> None:
        """One GET from `state.offset` to the end. Raises `Transient` / `Restart` / permanent errors."""
        item = state.item
        offset = state.offset
        headers = {"range": f"bytes={offset}-"} if offset else {}
        try:
            with self._client.stream("GET", item.url, headers=headers) as response:
                status = response.status_code
                if offset and status == 200:
                    # Range ignored: this body is the whole file, so take it from the start.
                    log.warning("%s: the server ignored the Range request; restarting the file", item.path)
                    self._on_adjust(-offset)
                    state.reset()
                    offset = 0
                elif offset and (
                    status == 416
                    or (
                        status == 206
                        and not response.headers.get("content-range", "").startswith(f"bytes {offset}-")
                    )
                ):
                    raise Restart()
                if status not in (200, 206):
                    raise status_error(item.path, status, response.headers)
                with item.dest.open("r+b" if offset else "wb", buffering=0) as fh:
                    fh.seek(offset)
                    fh.truncate()
                    self._copy_body(state, response, fh)
        except (httpx.TransportError, httpx.StreamError) as exc:
            kind = (
                errors.HubUnavailableError
                if isinstance(exc, httpx.ConnectError)
                else errors.DownloadFailedError
            )
            raise Transient(kind(f"{item.path}: {type(exc).__name__}: {exc}")) from None
        if state.offset < item.size:
            raise Transient(
                errors.DownloadFailedError(f"{item.path}: connection closed at byte {state.offset}")
            )

    def _copy_body(self, state: FileState, response: httpx.Response, fh: IO[bytes]) -> None:
        """Write and hash the body in `chunk_size` batches (few, large syscalls and hash calls).

        Network-sized pieces are gathered here rather than by `iter_raw(chunk_size)`, whose buffer
        would be lost on a broken connection; whatever arrived is flushed so a retry resumes after it.
        """
        item = state.item
        buf = bytearray()

        def flush() -> None:
            if not buf:
                return
            if state.offset + len(buf) > item.size:
                raise errors.ChecksumMismatchError(
                    f"{item.path}: the Hub sent more than the listed {item.size} bytes"
                )
            _write(fh, buf, item)
            state.hashers.update(buf)
            state.offset += len(buf)
            self._on_bytes(len(buf))
            buf.clear()

        state.segments += 1
        last_flush = window_start = time.monotonic()
        window_bytes = 0
        stalled: str | None = None
        with self._streams_lock:
            self._streams += 1
        try:
            for piece in response.iter_raw():
                buf += piece
                now = time.monotonic()
                window_bytes += len(piece)
                if self._min_bps > 0 and now - window_start >= self._stall_window:
                    stalled = self._stalled(window_bytes, now - window_start)
                    if stalled is not None:
                        break
                    window_start, window_bytes = now, 0
                # Large batches on fast links; at least ~4 flushes/s on slow ones (progress, resume).
                if len(buf) >= self._chunk or now - last_flush > 0.25:
                    if self._stopping():
                        break
                    flush()
                    last_flush = time.monotonic()
        finally:
            with self._streams_lock:
                self._streams -= 1
            flush()
        self._check_stop()
        if stalled is not None:
            raise Transient(
                errors.DownloadFailedError(f"{item.path}: stalled at byte {state.offset}, {stalled}"),
                stalled=True,
            )

    def _stalled(self, got: int, seconds: float) -> str | None:
        """Why a stream that got `got` bytes in `seconds` is too slow, or None.

        The floor is shared by the streams running: each must reach `min_bytes_per_second /
        streams`, so a slow link with many parallel files is not mistaken for a trickling server.
        """
        with self._streams_lock:
            streams = max(1, self._streams)
        floor = self._min_bps / streams
        rate = got / seconds
        if rate >= floor:
            return None
        return f"{rate:.0f} B/s over {seconds:.1f}s, below the floor of {floor:.0f} B/s"

    # -- many files -----------------------------------------------------------------------------

    def fetch_all(self, items: Sequence[TransferItem]) -> list[VerifiedFile]:
        """Fetch all items with `concurrency` workers, largest first; the first failure stops the rest."""
        ordered = sorted(items, key=lambda i: -i.size)
        results: list[VerifiedFile] = []
        first_error: BaseException | None = None
        pool = cf.ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="fetch")
        try:
            pending = {pool.submit(self.fetch, item) for item in ordered}
            deadline: float | None = None
            while pending:
                done, pending = cf.wait(pending, timeout=0.25, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is None:
                        results.append(fut.result())
                    elif first_error is None or (
                        isinstance(first_error, errors.InterruptedFetchError)
                        and not isinstance(exc, errors.InterruptedFetchError)
                    ):
                        # Prefer the root cause over the interruptions it caused in other workers.
                        first_error = exc
                if (first_error is not None or self.cancel.is_set()) and not self._abort.is_set():
                    self._abort.set()
                    for fut in pending:
                        fut.cancel()
                    deadline = time.monotonic() + self._stop_grace
                if deadline is not None and time.monotonic() > deadline:
                    log.warning(
                        "%d transfers did not stop within %.0fs; leaving them", len(pending), self._stop_grace
                    )
                    break
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if self.cancel.is_set():
            raise errors.InterruptedFetchError("stop requested; partial data kept for resume")
        if first_error is not None:
            raise first_error
        return results
