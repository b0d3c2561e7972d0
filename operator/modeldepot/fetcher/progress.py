"""Progress accounting and rate-limited reporting for the fetcher.

`ProgressTracker` counts bytes/files from any thread and derives a smoothed rate and ETA; it also
holds the retry the download waits for, if any (`note_retry`: the Hub client and the transfer's
`RetryPolicy` report each retry; `retry` in the snapshot until it succeeds).
`RateLimitedReporter` hands `ProgressTracker.snapshot()` dicts (the `status.progress` /
`status.nodes[]` entry shape of docs/internals.md plus `summary`) to a `ProgressSink` at most every
`interval` seconds from a background thread, at once when a retry starts or ends, and once more at
the end. `ConsoleSink` renders the same dicts as a terminal bar (TTY) or plain lines.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from modeldepot.fetcher.job import MAX_MESSAGE
from modeldepot.fetcher.manifest import utc_now_rfc3339
from modeldepot.fetcher.retry import RetryNotice
from modeldepot.formatting import SUMMARY_MESSAGE_CHARS, progress_summary, retry_phrase
from modeldepot.vocabulary import Phase

log = logging.getLogger(__name__)

Progress = dict[str, Any]


class ProgressSink(Protocol):
    """Receives progress dicts; must not raise for long (errors are logged and ignored)."""

    def __call__(self, progress: Progress, /) -> None: ...


def summarize(p: Progress, *, retry_in: float | None = None) -> str:
    """The Progress printer column, e.g. `42% of 91.6 MB, 12.1 MB/s, ETA 4s` (`formatting.progress_summary`);
    with a `retry` waiting `retry_in` more seconds, `..., retrying in 8s (attempt 2/5): <message>`."""
    planned = p["filesTotal"] > 0
    retry = p.get("retry")
    retrying = None
    if retry is not None:
        retrying = retry_phrase(
            attempt=retry["attempt"],
            max_attempts=retry["maxAttempts"],
            message=retry["message"],
            wait=retry_in,
            at=retry["nextAttemptAt"],
            clip=SUMMARY_MESSAGE_CHARS,
        )
    return progress_summary(
        phase=p["phase"],
        percent=p["percent"] if planned else None,
        bytes_done=p["bytesDone"],
        bytes_total=p["bytesTotal"] if planned else None,
        bytes_per_second=p.get("bytesPerSecond"),
        eta_seconds=p.get("etaSeconds"),
        retrying=retrying,
    )


def _rfc3339_in(seconds: float) -> str:
    """The UTC time `seconds` from now, RFC 3339 to the second (`2026-05-01T12:00:08Z`)."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=round(seconds))
    return at.replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _Waiting:
    """A retry the download waits for: the notice, when the next attempt starts (`until`, on the
    tracker's clock; `next_at`, RFC 3339) and the rate when the wait began (for the ETA)."""

    notice: RetryNotice
    until: float
    next_at: str
    rate: float


class ProgressTracker:
    """Thread-safe counters plus an exponentially smoothed transfer rate.

    `bytes_done` counts bytes that are in place and accounted for, including bytes that did not
    need a transfer (already verified, hard-linked, resumed partial data). Only transferred bytes
    feed the rate.
    """

    def __init__(
        self,
        *,
        resolved_revision: str | None = None,
        observed_generation: int | None = None,
        smoothing_window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._window = smoothing_window
        self.phase = Phase.PENDING
        self.bytes_total = 0
        self.files_total = 0
        self.bytes_done = 0
        self.files_done = 0
        self.bytes_reused = 0
        """Of `bytes_done`: files taken from the published copy or the root's store."""
        self.bytes_adopted = 0
        """Of `bytes_done`: files verified in place where the artifact found them (adoption)."""
        self.resolved_revision = resolved_revision
        self.observed_generation = observed_generation
        self.extra: dict[str, Any] = {}
        self._transferred = 0
        self._rate = 0.0
        self._rate_known = False
        self._last_t = clock()
        self._last_transferred = 0
        self._waiting: _Waiting | None = None
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` is called (on the thread that noticed) when a retry starts or ends."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _tell(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def note_retry(self, notice: RetryNotice | None) -> None:
        """A retry begins its wait (`notice`), or the retried call succeeded (None).

        The snapshot shows the latest retry while the download runs, until it succeeds: None (a Hub
        call), or transferred bytes arriving after its wait (a download: bytes flow again). The
        listeners hear of both at once.
        """
        with self._lock:
            if notice is None:
                if self._waiting is None:
                    return
                self._waiting = None
            else:
                rate = self._rate if self._rate_known else 0.0
                until = self._clock() + notice.delay
                self._waiting = _Waiting(notice, until, _rfc3339_in(notice.delay), rate)
        self._tell()

    def plan(self, *, bytes_total: int, files_total: int) -> None:
        with self._lock:
            self.bytes_total = bytes_total
            self.files_total = files_total

    def add_bytes(self, n: int, *, transferred: bool = True) -> None:
        recovered = False
        with self._lock:
            self.bytes_done += n
            if transferred:
                self._transferred += n
                waiting = self._waiting
                if waiting is not None and n > 0 and self._clock() >= waiting.until:
                    self._waiting, recovered = None, True
        if recovered:
            self._tell()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def _update_rate(self) -> None:
        now = self._clock()
        dt = now - self._last_t
        if dt < 0.2:
            return
        inst = (self._transferred - self._last_transferred) / dt
        if self._rate_known:
            alpha = min(1.0, dt / self._window)
            self._rate += alpha * (inst - self._rate)
        else:
            self._rate, self._rate_known = inst, True
        self._last_t, self._last_transferred = now, self._transferred

    def snapshot(self) -> Progress:
        """The progress dict (docs/internals.md shape) plus `summary`."""
        with self._lock:
            self._update_rate()
            total, done = self.bytes_total, self.bytes_done
            if self.phase == Phase.READY:
                percent = 100.0
            elif total > 0:
                # Floored to 0.1 and below 100 until verified and published.
                percent = min(99.9, (done * 1000 // total) / 10)
            else:
                percent = 0.0
            rate = max(0, round(self._rate))
            downloading = self.phase == Phase.DOWNLOADING
            p: Progress = {
                "phase": self.phase,
                "percent": percent,
                "bytesDone": done,
                "bytesTotal": total,
                "filesDone": self.files_done,
                "filesTotal": self.files_total,
                "bytesPerSecond": rate if downloading else 0,
            }
            waiting = self._waiting if downloading else None
            retry_in = None if waiting is None else max(0.0, waiting.until - self._clock())
            if waiting is not None and retry_in is not None:
                p["retry"] = self._retry_fields(waiting)
                if (eta := self._eta_after_wait(waiting, retry_in, rate)) is not None:
                    p["etaSeconds"] = eta
            elif downloading and rate > 0:
                p["etaSeconds"] = max(0, total - done) // rate
            elif self.phase == Phase.READY:
                p["etaSeconds"] = 0
            if self.bytes_reused:
                p["bytesReused"] = self.bytes_reused
            if self.bytes_adopted:
                p["bytesAdopted"] = self.bytes_adopted
            if self.resolved_revision:
                p["resolvedRevision"] = self.resolved_revision
            if self.observed_generation is not None:
                p["observedGeneration"] = self.observed_generation
            p["updatedAt"] = utc_now_rfc3339()
            p.update(self.extra)
        p["summary"] = summarize(p, retry_in=retry_in)
        return p

    @staticmethod
    def _retry_fields(waiting: _Waiting) -> dict[str, Any]:
        n = waiting.notice
        return {
            "reason": n.reason,
            "attempt": n.attempt,
            "maxAttempts": n.max_attempts,
            "nextAttemptAt": waiting.next_at,
            "message": n.message[:MAX_MESSAGE],
        }

    def _eta_after_wait(self, waiting: _Waiting, retry_in: float, rate: int) -> int | None:
        """The ETA of a download that waits: the wait plus the rest at the rate it had (None until
        the files and a rate are known)."""
        speed = max(rate, waiting.rate)
        if self.files_total == 0 or speed <= 0:
            return None
        return math.ceil(retry_in) + max(0, self.bytes_total - self.bytes_done) // round(speed)


class RateLimitedReporter:
    """Calls `sink(tracker.snapshot())` at most every `interval` s from a daemon thread, and in `close`.

    A retry that starts or ends (the tracker's listeners) is reported at once, not at the next
    tick: a burst of them (several streams failing together) within `_SETTLE` s makes one report.
    Use as a context manager or call `start()` / `close()`. `report_now()` forces a report (still
    respecting the interval unless `force=True`).
    """

    _SETTLE = 0.05

    def __init__(
        self,
        tracker: ProgressTracker,
        sink: ProgressSink,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracker = tracker
        self._sink = sink
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._last: float | None = None
        self._thread: threading.Thread | None = None
        self.calls = 0

    def start(self) -> RateLimitedReporter:
        self._tracker.add_listener(self._wake.set)
        self._thread = threading.Thread(target=self._loop, name="progress-reporter", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            urgent = self._wake.wait(self._interval / 4)
            if urgent:
                self._stop.wait(self._SETTLE)
                self._wake.clear()
            if self._stop.is_set():
                return  # close() sends the final report
            self.report_now(force=urgent)

    def report_now(self, *, force: bool = False) -> bool:
        """Report if the interval has passed since the last report (or `force`); True if reported."""
        with self._lock:
            now = self._clock()
            if not force and self._last is not None and now - self._last < self._interval:
                return False
            self._last = now
            snapshot = self._tracker.snapshot()
            self.calls += 1
            try:
                self._sink(snapshot)
            except Exception as exc:  # a failed status patch must never fail the download
                log.warning("progress report failed: %s", exc)
            return True

    def close(self, *, final: bool = True) -> None:
        """Stop the thread and send the final report."""
        self._tracker.remove_listener(self._wake.set)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if final:
            self.report_now(force=True)

    def __enter__(self) -> RateLimitedReporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConsoleSink:
    """Renders progress on a stream: a redrawn bar on a TTY, one plain line per report otherwise."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, width: int = 30) -> None:
        self._stream = stream or sys.stderr
        self.tty = self._stream.isatty() if tty is None else tty
        self._width = width

    def __call__(self, progress: Progress, /) -> None:
        phase = progress["phase"]
        files = f"{progress['filesDone']}/{progress['filesTotal']} files"
        if self.tty:
            filled = int(self._width * progress["percent"] // 100)
            bar = "#" * filled + "-" * (self._width - filled)
            line = f"\r[{bar}] {progress['summary']}, {files}\x1b[K"
            if phase != Phase.DOWNLOADING:
                line += "\n"
            self._stream.write(line)
        else:
            self._stream.write(f"{phase.lower()}: {progress['summary']}, {files}\n")
        self._stream.flush()
