"""One large file fetched by several ranged streams at once, written at its offsets.

A CDN caps each TCP stream, so one stream per file leaves most of a link idle. `MultiStream` cuts
the bytes still missing into parts (`ranges.parts`) and lets up to `streams` streams (tasks on the
transfer's stream pool, each with its own connection) take them in file order: `Range: bytes=a-b`,
the body written at its offset with `pwrite` on the file's one descriptor, each write recorded in
the file's `Coverage`. The calling thread follows them: it hands each newly contiguous prefix to the
hasher (which reads it back from the page cache, in order; parts taken in order keep it close
behind; while one stream runs, it hands its bytes over in memory instead) and saves the coverage in
the file's sidecar about every second (with `fsync`, write-back started first; the last save, also
on a stop, after an fdatasync), so a resumed file resumes every part.

Ranges are trusted only when honoured exactly. The first part is a probe, alone: the other streams
start once it came back 206 with exactly `Content-Range: bytes a-b/<listed size>` (and a matching
`Content-Length`). Any part answered otherwise (200 with the whole body, another range or total, a
body running past its range) stops every stream and `run` returns False: the caller goes on with
one stream from the contiguous prefix. A short body is retried from where it stopped. The URL the
probe was redirected to is reused for the other parts (the Hub's resolver is asked once per file,
not once per part), without `Authorization` unless it has the Hub URL's origin; when that URL stops
working the parts go back to the Hub's URL. Whatever the server does, the file is only ever
accepted by its hash.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx2

from modeldepot import errors
from modeldepot.fetcher.hashing import InlineHasher, start_writeback
from modeldepot.fetcher.ranges import Coverage, Part, parts, save_coverage
from modeldepot.fetcher.receive import Receiver, pwrite_all, read_size, transport_error
from modeldepot.fetcher.remote import clip
from modeldepot.fetcher.retry import Attempts, RangeRefused, RetryPolicy, Transient, status_error
from modeldepot.fetcher.verify import TransferItem

log = logging.getLogger(__name__)

_RESOLVE_AGAIN = (401, 403, 404, 410)
"""Statuses of a reused redirect URL (expired, revoked) that send a part back to the Hub's URL."""


_NOT_A_CAUSE = (type(None), RangeRefused, errors.InterruptedFetchError)
"""How a stream ends without a failure of its own (done, refused ranges, stopped by another)."""


@dataclass(frozen=True)
class StreamPlan:
    streams: int
    part_size: int
    retry: RetryPolicy
    progress_floor: int
    fsync: bool
    stream_buffer: int
    """Batch of each stream once there are several (socket reads: half of it)."""
    save_interval: float = 1.0
    busy_window: float = 0.1
    busy_threshold: float = 0.5
    """A second stream is tried when the probe's thread was busy less than this share of a window."""
    gain: float = 1.5
    """All streams are started when two brought this many times the probe's rate."""
    probe_windows: int = 2
    """Windows the probe runs alone, at least, before a second stream is tried."""


class Ramp:
    """How many streams a file may use now: one, until more have shown they make it faster.

    More streams help only when one stream leaves the link idle (a CDN's per-connection cap,
    latency); when the receiving thread is busy most of the time (loopback, a slow or shared CPU),
    they only cost CPU. So: the probe runs alone for a `window`; if its thread was busy less than
    `busy_threshold` of it (its own CPU clock) and it ran `probe_windows` windows, a second stream is
    tried for a window from its first byte (the probe's first window often shares the CPU with the
    repo's small files, which starve its thread and slow it: alone, that looked like a slow link); if the two bring `gain` times the probe's best rate, all `most` streams are started and
    checked alike for one window. A check that fails leaves the file with one stream for good (the
    others finish the part they have). Pure: `observe` gets totals and the time, and returns the limit.
    """

    def __init__(
        self, most: int, *, window: float, busy_threshold: float, gain: float = 1.5, probe_windows: int = 2
    ) -> None:
        self.most = most
        self.limit = 1
        self.state = "probe" if most > 1 else "single"
        self._window = window
        self._busy = busy_threshold
        self._gain = gain
        self._probe_windows = probe_windows
        self._probed = 0
        self._start: tuple[float, int, float] | None = None
        self._probe_rate = 0.0
        """The probe's best window: a hiccup of a shared CPU in one short window must not pass for
        a slow link."""
        self.rates: dict[int, float] = {}
        """The rate (bytes/s) measured with each number of streams (one: the probe's best window)."""

    def observe(self, now: float, written: int, cpu: float, writing: int) -> int:
        """`written` bytes and `cpu` seconds of all streams so far, `writing` streams with bytes in."""
        if self.state not in ("probe", "trial", "check"):
            return self.limit
        if self._start is None:
            if writing >= self.limit:  # the window starts once every allowed stream brings bytes
                self._start = (now, written, cpu)
            return self.limit
        began, written0, cpu0 = self._start
        seconds = now - began
        if seconds < self._window:
            return self.limit
        rate = (written - written0) / seconds
        self._start = None
        self.rates[self.limit] = max(rate, self.rates.get(self.limit, 0.0) if self.limit == 1 else 0.0)
        if self.state == "probe":
            self._probe_rate = self.rates[1]
            self._probed += 1
            if (cpu - cpu0) / seconds < self._busy and self._probed >= self._probe_windows:
                self.state, self.limit = "trial", 2
        elif rate < self._gain * self._probe_rate:
            self.state, self.limit = "single", 1
        elif self.state == "trial":
            self.state, self.limit = "check", self.most  # then checked once more, with all of them
        else:
            self.state = "full"
        return self.limit

    def describe(self) -> str:
        """The rates measured, e.g. `1 stream 40 MB/s, 2 streams 80 MB/s`."""
        return ", ".join(
            f"{n} stream{'s' if n > 1 else ''} {rate / 1e6:.0f} MB/s"
            for n, rate in sorted(self.rates.items())
        )


class MultiStream:
    """The parallel ranged download of one file (see the module docstring)."""

    def __init__(
        self,
        receiver: Receiver,
        item: TransferItem,
        fd: int,
        coverage: Coverage,
        hasher: InlineHasher,
        plan: StreamPlan,
        *,
        pool: cf.Executor,
        stopping: Callable[[], bool],
        cancel: threading.Event,
        on_bytes: Callable[[int], None],
    ) -> None:
        self._rx = receiver
        self._item = item
        self._fd = fd
        self._coverage = coverage
        self._hasher = hasher
        self._plan = plan
        self._pool = pool
        self._stopping = stopping
        self._cancel = cancel
        self._on_bytes = on_bytes
        self._parts = deque(parts(coverage, plan.streams, plan.part_size))
        self._lock = threading.Condition()
        self._feed = threading.Lock()
        """Held to hand work to the hasher, which must get it in file order."""
        self._url = item.url
        self._stop = threading.Event()
        self._refused: str | None = None
        self._ramp = Ramp(
            plan.streams,
            window=plan.busy_window,
            busy_threshold=plan.busy_threshold,
            gain=plan.gain,
            probe_windows=plan.probe_windows,
        )
        self._running = 0
        self._writing: set[int] = set()
        """Streams running that have written bytes."""
        self._written = 0
        self._cpu = 0.0
        """CPU seconds the streams spent receiving and writing."""

    # -- the calling thread ---------------------------------------------------------------------

    def run(self) -> bool:
        """Fetch every missing part; False if ranges were not honoured (use one stream then)."""
        self._save()  # before the first byte is written out of order
        self._hasher.put_disk(self._coverage.prefix())
        if not self._parts:
            return True
        futures: list[cf.Future[None]] = []
        try:
            self._follow(futures)
        finally:
            self._stop.set()
            for fut in futures:
                fut.cancel()
            cf.wait(futures)
            self._save(durable=True)
        errs = [f.exception() for f in futures if not f.cancelled()]
        if cause := next((e for e in errs if not isinstance(e, _NOT_A_CAUSE)), None):
            raise cause
        if self._stopping():
            raise errors.InterruptedFetchError("stop requested; partial data kept for resume")
        if self._refused is not None:
            log.warning("%s: %s; continuing with one stream", self._item.path, self._refused)
            return False
        self._hasher.put_disk(self._coverage.prefix())  # writes may have come after `_follow` looked
        return True

    def _follow(self, futures: list[cf.Future[None]]) -> None:
        """Hash behind the streams, save the coverage and start streams, until done or one failed."""
        last_save = time.monotonic()
        while True:
            with self._lock:
                state = self._ramp.state
                limit = self._ramp.observe(time.monotonic(), self._written, self._cpu, len(self._writing))
                if self._ramp.state != state:
                    log.info("%s: %s; going on with %d", self._item.path, self._ramp.describe(), limit)
                while self._running < limit and len(self._parts) > 0:
                    self._running += 1
                    futures.append(self._pool.submit(self._stream, len(futures)))
                self._lock.wait(0.05)
                prefix = self._coverage.prefix()
            # Never held up here, so the ramp, saves and stops stay prompt: a busy hasher or a stream
            # handing bytes over is skipped (a later, larger prefix covers it).
            if self._feed.acquire(blocking=False):
                try:
                    self._hasher.put_disk(prefix, block=False)
                finally:
                    self._feed.release()
            if time.monotonic() - last_save >= self._plan.save_interval:
                self._save()
                last_save = time.monotonic()
            failed = any(f.done() and not f.cancelled() and f.exception() for f in futures)
            if failed or self._stopping() or all(f.done() for f in futures):
                return

    def _stopped(self) -> bool:
        return self._stopping() or self._stop.is_set()

    def _save(self, *, durable: bool = False) -> None:
        """Record what is written in the sidecar; with fsync on, write-back is started first, and
        with `durable` (the last save, also on a stop) waited for, so the record names only bytes on
        disk. (An fdatasync every second measured ~0.3 s more per GiB on loopback; if a node crash
        loses bytes the record names, the file fails its hash and is fetched once more from zero.)
        """
        with self._lock:
            snapshot = Coverage(self._coverage.size, self._coverage.ranges())
        if self._plan.fsync:
            if durable:
                os.fdatasync(self._fd)
            else:
                start_writeback(self._fd, 0, self._coverage.size)
        save_coverage(self._item, self._item.dest.base, snapshot)

    # -- the streams ----------------------------------------------------------------------------

    def _stream(self, index: int) -> None:
        """Take parts in order until none is left, the ramp wants fewer streams, or a stop."""
        counted = True
        try:
            while not self._stopped():
                with self._lock:
                    if not self._parts or self._running > self._ramp.limit:
                        self._running -= 1  # under the lock: of two streams told to go, one goes
                        counted = False
                        return
                    part = self._parts.popleft()
                    many = self._ramp.limit > 2
                # One or two streams are likely CPU-bound: large reads and batches, as one stream has.
                read_size(self._plan.stream_buffer // 2 if many else None)
                self._fetch_part(part, index, batch=self._plan.stream_buffer if many else None)
        except RangeRefused as exc:
            self._refused = str(exc) or "the server did not honour a ranged request"
            raise
        finally:
            read_size(None)  # the pool's threads serve other files next
            with self._lock:
                self._running -= counted
                self._writing.discard(index)
                self._lock.notify_all()  # the calling thread looks at once

    def _fetch_part(self, part: Part, index: int, *, batch: int | None) -> None:
        attempts = Attempts(self._plan.retry, self._plan.progress_floor)
        while part.offset < part.end:
            if self._stopped():
                raise errors.InterruptedFetchError("stopped")
            start = part.offset
            try:
                self._get(part, index, batch)
            except Transient as exc:
                delay = attempts.failed(exc, part.offset - start, part.end - start)
                log.warning("%s: %s; retry %d in %.1fs", self._item.path, exc, attempts.count, delay)
                self._cancel.wait(delay)
            except BaseException:
                self._stop.set()
                raise

    def _get(self, part: Part, index: int, batch: int | None) -> None:
        """One GET of the rest of `part`. Raises `Transient`, `RangeRefused` or a permanent error."""
        item = self._item
        url = self._url
        want = f"bytes {part.offset}-{part.end - 1}/{item.size}"
        try:
            with self._rx.open(url, {"range": f"bytes={part.offset}-{part.end - 1}"}, origin=item.url) as r:
                if url != item.url and r.status_code in _RESOLVE_AGAIN:
                    self._url = item.url
                    raise Transient(errors.DownloadFailedError(f"{item.path}: redirect URL expired"))
                if r.status_code in (200, 416):
                    raise RangeRefused(f"the server answered a ranged request with {r.status_code}")
                if r.status_code != 206:
                    raise status_error(item.path, r.status_code, r.headers)
                got, length = r.headers.get("content-range"), r.headers.get("content-length")
                if got != want:
                    raise RangeRefused(f"asked for {want}, got Content-Range {clip(got or 'none')!r}")
                if length is not None and length != str(part.end - part.offset):
                    raise RangeRefused(f"{want} came with Content-Length {clip(length)!r}")
                if url == item.url and str(r.url) != item.url:
                    self._url = str(r.url)  # where the Hub redirected us: the other parts go there
                clock = time.thread_time()

                def flush(pieces: list[bytes], n: int) -> None:
                    nonlocal clock
                    self._write(part, pieces, n)
                    now = time.thread_time()
                    with self._lock:
                        self._cpu += now - clock
                        self._written += n
                        self._writing.add(index)
                    clock = now

                self._rx.copy_body(item, r, flush, batch=batch, stopping=self._stop.is_set)
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            raise transport_error(item, exc) from None
        if self._stopped():
            raise errors.InterruptedFetchError("stopped")
        if part.offset < part.end:
            raise Transient(
                errors.DownloadFailedError(f"{item.path}: connection closed at byte {part.offset}")
            )

    def _write(self, part: Part, pieces: list[bytes], n: int) -> None:
        if part.offset + n > part.end:
            raise RangeRefused(f"the body of a ranged request ran past byte {part.end}")
        pwrite_all(self._fd, pieces, part.offset, self._item)
        with self._lock:
            self._coverage.add(part.offset, part.offset + n)
            alone = self._ramp.limit == 1
        handed = False
        if alone:
            with self._feed:
                if handed := part.offset == self._hasher.queued:
                    # One stream, writing where the hashes are: hand the bytes over as one stream
                    # does (reading them back costs a copy); the hasher's queue bounds the memory.
                    self._hasher.put(pieces)
        if not handed:
            with self._lock:
                if part.offset <= self._coverage.prefix():
                    self._lock.notify_all()  # the follower hands the new prefix to the hasher
        part.offset += n
        self._on_bytes(n)
