"""Ranged, verified, resumable HTTP transfer of repository files into staging (httpx2).

Each file is hashed as it is written: sha256 always, plus the git blob sha1 (`b"blob <size>\\0" +
content`) for non-LFS files, which the Hub identifies only by blob id. The receiving thread only
receives and writes (`pwrite` on one descriptor opened through `safefs`); the hashes are computed
in order behind it on another thread (`hashing.OrderedHasher`; files of one batch are hashed
inline). A file of at least `streams_min_size` bytes is fetched by several ranged streams at once
(`streams.MultiStream`), falling back to one stream when the server does not honour ranges exactly.

Resume: a file written by one stream is a prefix of the file (its bytes are hashed, then the
transfer continues with `Range: bytes=N-`; a 200 instead of 206 restarts it from zero); a file
written by several streams has a sidecar (`ranges`) saying which ranges are on disk, and every
missing range is fetched again. Transient failures (connection errors, 5xx, 429, stalls) are
retried with exponential backoff from the bytes already written. Files run in a bounded thread
pool over one shared connection pool; a file is accepted only if its bytes hash to what the Hub
listed (`verify`); one whose resumed or assembled bytes do not is downloaded once more from zero.

What an answer means and the backoff are in `retry`; a response body's way to disk in `receive`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence

import httpx2

from modeldepot import errors
from modeldepot.fetcher.hashing import InlineHasher, OrderedHasher
from modeldepot.fetcher.ranges import Coverage, Part, drop_sidecar, load_coverage
from modeldepot.fetcher.receive import Receiver, pwrite_all, transport_error
from modeldepot.fetcher.retry import Attempts, Restart, RetryPolicy, Transient, status_error
from modeldepot.fetcher.streams import MultiStream, StreamPlan
from modeldepot.fetcher.verify import FileState, TransferItem, VerifiedFile

__all__ = ["RetryPolicy", "Transfer", "TransferItem", "VerifiedFile"]

log = logging.getLogger(__name__)

_MIN_STREAM_BUFFER = 128 << 10
_WRITE_BEHIND = 64 << 20
"""With fsync on, start the write-back of a one-stream file every this many bytes hashed."""


class Transfer:
    """Downloads `TransferItem`s concurrently.

    Progress: `on_bytes(n)` for bytes received, `on_adjust(n)` for bytes that count as done without
    a transfer (resumed partial data) or no longer count (negative: a restarted file), `on_file`
    for each verified file. `tls`: a verifying TLS context to share (`HubClient.tls_context`: loading
    the CA certificates again costs ~75 ms of start-up); None loads httpx2's default.
    """

    def __init__(
        self,
        *,
        headers: dict[str, str],
        concurrency: int = 8,
        chunk_size: int = 1 << 20,
        streams: int = 1,
        streams_min_size: int = 64 << 20,
        part_size: int = 64 << 20,
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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._concurrency = concurrency
        self._chunk = chunk_size
        self._streams = streams
        self._streams_min_size = streams_min_size
        self._retry = retry or RetryPolicy()
        self.cancel = cancel or threading.Event()
        self._abort = threading.Event()
        self._on_bytes = on_bytes
        self._on_adjust = on_adjust
        self._on_file = on_file
        self._stop_grace = stop_grace
        self._fsync = fsync
        # An attempt must bring this much to reset the retry count (1 byte/connection is no progress).
        self._progress_floor = max(1, int(min_bytes_per_second * stall_window))
        stream_buffer = max(_MIN_STREAM_BUFFER, chunk_size // streams)
        self._plan = StreamPlan(streams, part_size, self._retry, self._progress_floor, fsync, stream_buffer)
        self._stream_pool: cf.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # Authorization (client-wide header) is dropped by httpx2 on a redirect to another origin
        # (scheme, host or port; only an http->https upgrade of the same host keeps it), and by
        # `Receiver.open` when a part goes straight to a URL the Hub redirected us to.
        connections = concurrency + streams + 2
        client = httpx2.Client(
            headers=headers,
            follow_redirects=True,
            verify=tls if tls is not None else True,  # a shared context, or httpx2's own (verifying)
            timeout=httpx2.Timeout(read_timeout, connect=connect_timeout, pool=None),
            limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._rx = Receiver(
            client,
            chunk_size=chunk_size,
            min_bytes_per_second=min_bytes_per_second,
            stall_window=stall_window,
            stopping=self._stopping,
        )

    def close(self) -> None:
        if self._stream_pool is not None:
            self._stream_pool.shutdown(wait=False, cancel_futures=True)
        self._rx.client.close()

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
        try:
            result, assembled = self._fetch_file(item, fresh=False)
            if result is None and assembled:
                # Maybe an earlier range is what is wrong (e.g. a partial file of an old run): once from zero.
                log.warning(
                    "%s: resumed or assembled data did not verify; downloading it again from zero", item.path
                )
                self._on_adjust(-item.size)
                result, _ = self._fetch_file(item, fresh=True)
            if result is None:
                self._on_adjust(-item.size)
                expected = f"sha256 {item.sha256}" if item.sha256 else f"git blob id {item.blob_id}"
                raise errors.ChecksumMismatchError(
                    f"{item.path}: downloaded bytes do not match the Hub's {expected}"
                )
        except errors.ChecksumMismatchError:
            # Whatever made it (wrong bytes, more bytes than listed): nothing of it is kept.
            item.dest.unlink(missing_ok=True)
            drop_sidecar(item, item.dest.base)
            raise
        if assembled:
            drop_sidecar(item, item.dest.base)
        self._on_file(result)
        return result

    def _fetch_file(self, item: TransferItem, *, fresh: bool) -> tuple[VerifiedFile | None, bool]:
        """Download what `item.dest` lacks and hash it all: (the file if it verifies, assembled?).

        Assembled: the bytes did not all come from one response (resumed, or several streams).
        `fresh` starts from an empty file, with one stream.
        """
        if fresh:
            drop_sidecar(item, item.dest.base)
        fd = item.dest.base.open_fd(item.dest.rel, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0))
        try:
            coverage, recorded = self._on_disk(item, fd)
            multi = not fresh and self._multi(item)
            state = FileState(item)
            assembled = multi or coverage.done() > 0
            with self._hasher(state, fd, multi) as hasher:
                if coverage.done():
                    log.info(
                        "%s: resuming with %d of %d bytes on disk", item.path, coverage.done(), item.size
                    )
                    self._on_adjust(coverage.done())
                if not (multi and self._multi_stream(item, fd, coverage, hasher)):
                    prefix = coverage.prefix()
                    self._on_adjust(prefix - coverage.done())  # what lies after a hole is dropped
                    if recorded or multi:
                        drop_sidecar(item, item.dest.base)
                    hasher.put_disk(prefix)
                    hasher.wait()  # before a connection opens: it must not idle while a prefix is read
                    responses = self._download(item, fd, hasher, Part(prefix, item.size, prefix))
                    assembled = assembled or responses > 1
                hasher.wait()
            result = state.verified()
            if result is not None and self._fsync:
                # Durable before it is recorded as verified (and later published); on the
                # descriptor it was written through (opening it again cost three opens a file).
                os.fsync(fd)
            return result, assembled
        finally:
            os.close(fd)

    def _hasher(self, state: FileState, fd: int, multi: bool) -> InlineHasher:
        """Inline for a file of one batch, else on its own thread (with write-back if fsync is on)."""
        if state.item.size <= self._chunk:
            return InlineHasher(state, fd, read_size=self._chunk)
        write_behind = 0 if multi or not self._fsync else _WRITE_BEHIND  # multi: the sidecar's fdatasync
        return OrderedHasher(state, fd, read_size=self._chunk, sync_every=write_behind)

    def _on_disk(self, item: TransferItem, fd: int) -> tuple[Coverage, bool]:
        """What of `item` is already in the open file, and whether a sidecar said so."""
        have = os.fstat(fd).st_size
        if have == 0:
            return Coverage(item.size), False
        recorded = load_coverage(item, item.dest.base, have)
        if recorded is not None:
            return recorded, True
        # Written by one stream: a prefix (unless longer than the file can be).
        return Coverage(item.size, [(0, have)] if have <= item.size else []), False

    def _multi(self, item: TransferItem) -> bool:
        return self._streams > 1 and item.size >= self._streams_min_size

    def _multi_stream(self, item: TransferItem, fd: int, coverage: Coverage, hasher: InlineHasher) -> bool:
        """Fetch the missing ranges with several streams; False if the server refused ranges."""
        with self._pool_lock:
            if self._stream_pool is None:
                self._stream_pool = cf.ThreadPoolExecutor(self._streams, thread_name_prefix="stream")
        multi = MultiStream(
            self._rx,
            item,
            fd,
            coverage,
            hasher,
            self._plan,
            pool=self._stream_pool,
            stopping=self._stopping,
            cancel=self.cancel,
            on_bytes=self._on_bytes,
        )
        return multi.run()

    # -- one stream -----------------------------------------------------------------------------

    def _download(self, item: TransferItem, fd: int, hasher: InlineHasher, part: Part) -> int:
        """Fetch `part` (up to the end of the file) with one stream, retrying transient failures.

        Returns how many responses the bytes written came from.
        """
        attempts = Attempts(self._retry, self._progress_floor)
        restarts = responses = 0
        if os.fstat(fd).st_size != part.offset:
            os.ftruncate(fd, part.offset)
        while part.offset < item.size:
            self._check_stop()
            start = part.offset
            try:
                self._stream(item, fd, hasher, part)
            except Restart:
                log.warning("%s: unusable answer to a Range request; restarting the file", item.path)
                self._restart(hasher, part)
                restarts += 1
                if restarts > self._retry.max_retries:
                    raise errors.DownloadFailedError(
                        f"{item.path}: cannot resume (Range not honoured)"
                    ) from None
            except Transient as exc:
                delay = attempts.failed(exc, part.offset - start, item.size - start)
                log.warning("%s: %s; retry %d in %.1fs", item.path, exc, attempts.count, delay)
                self.cancel.wait(delay)
            finally:
                responses = 0 if part.offset < start else responses + (part.offset > start)
        return responses

    def _restart(self, hasher: InlineHasher, part: Part) -> None:
        self._on_adjust(-part.offset)
        hasher.reset()
        part.offset = 0

    def _stream(self, item: TransferItem, fd: int, hasher: InlineHasher, part: Part) -> None:
        """One GET from `part.offset` to the end. Raises `Transient` / `Restart` / permanent errors."""
        offset = part.offset
        headers = {"range": f"bytes={offset}-"} if offset else {}
        try:
            with self._rx.open(item.url, headers, origin=item.url) as response:
                status = response.status_code
                if offset and status == 200:
                    # Range ignored: this body is the whole file, so take it from the start.
                    log.warning("%s: the server ignored the Range request; restarting the file", item.path)
                    self._restart(hasher, part)
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
                os.ftruncate(fd, part.offset)
                self._rx.copy_body(
                    item, response, lambda pieces, n: self._write(item, fd, hasher, part, pieces, n)
                )
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            raise transport_error(item, exc) from None
        self._check_stop()
        if part.offset < item.size:
            raise Transient(
                errors.DownloadFailedError(f"{item.path}: connection closed at byte {part.offset}")
            )

    def _write(
        self, item: TransferItem, fd: int, hasher: InlineHasher, part: Part, pieces: list[bytes], n: int
    ) -> None:
        if part.offset + n > item.size:
            raise errors.ChecksumMismatchError(
                f"{item.path}: the Hub sent more than the listed {item.size} bytes"
            )
        pwrite_all(fd, pieces, part.offset, item)
        hasher.put(pieces)
        part.offset += n
        self._on_bytes(n)

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
