"""Progress math, the retry a download waits for, the rate-limited reporter and console rendering."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modeldepot.fetcher.progress import (
    ConsoleSink,
    ProgressTracker,
    RateLimitedReporter,
    summarize,
)
from modeldepot.fetcher.retry import RetryNotice
from modeldepot.vocabulary import Reason


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_percent_rate_eta_and_summary() -> None:
    clock = FakeClock()
    t = ProgressTracker(resolved_revision="abc", observed_generation=3, clock=clock)
    t.plan(bytes_total=91_600_000, files_total=13)
    t.phase = "Downloading"
    t.add_bytes(10_000_000, transferred=False)  # already present: counts as done, not as rate
    t.snapshot()
    clock.t += 2.0
    t.add_bytes(28_500_000)
    t.file_done()
    p = t.snapshot()
    assert p["bytesDone"] == 38_500_000
    assert p["percent"] == 42.0
    assert p["filesDone"] == 1 and p["filesTotal"] == 13
    assert p["bytesPerSecond"] == 14_250_000
    assert p["etaSeconds"] == (91_600_000 - 38_500_000) // 14_250_000
    assert p["resolvedRevision"] == "abc"
    assert p["observedGeneration"] == 3
    assert p["updatedAt"].endswith("Z")
    assert p["summary"] == "42% of 91.6 MB, 14.2 MB/s, ETA 3s"


def test_rate_is_smoothed() -> None:
    clock = FakeClock()
    t = ProgressTracker(clock=clock, smoothing_window=5.0)
    t.plan(bytes_total=10**9, files_total=1)
    t.phase = "Downloading"
    clock.t += 1
    t.add_bytes(10_000_000)
    assert t.snapshot()["bytesPerSecond"] == 10_000_000
    clock.t += 1  # one stalled second moves the rate only part of the way down
    rate = t.snapshot()["bytesPerSecond"]
    assert 0 < rate < 10_000_000
    assert rate == 8_000_000  # alpha = dt / window = 0.2


def test_percent_is_floored_and_never_100_before_ready() -> None:
    t = ProgressTracker()
    t.plan(bytes_total=10_000, files_total=1)
    t.phase = "Downloading"
    t.add_bytes(9_999)
    assert t.snapshot()["percent"] == 99.9
    t.add_bytes(1)
    assert t.snapshot()["percent"] == 99.9
    t.phase = "Ready"
    p = t.snapshot()
    assert p["percent"] == 100 and p["etaSeconds"] == 0 and p["bytesPerSecond"] == 0
    assert p["summary"] == "100% of 10.0 kB"


def test_summary_before_the_plan_and_when_failed() -> None:
    t = ProgressTracker()
    t.phase = "Downloading"
    assert t.snapshot()["summary"] == "Resolving files"
    t.plan(bytes_total=2_000_000, files_total=1)
    t.add_bytes(1_000_000)
    t.phase = "Failed"
    assert t.snapshot()["summary"] == "Failed at 50% of 2.0 MB"


def test_empty_plan_is_zero_percent() -> None:
    assert ProgressTracker().snapshot()["percent"] == 0


def test_reporter_rate_limits_and_reports_final() -> None:
    clock = FakeClock()
    seen: list[dict[str, Any]] = []
    t = ProgressTracker(clock=clock)
    t.plan(bytes_total=100, files_total=1)
    r = RateLimitedReporter(t, seen.append, interval=2.0, clock=clock)
    assert r.report_now()
    assert not r.report_now()
    clock.t += 1.9
    assert not r.report_now()
    clock.t += 0.2
    assert r.report_now()
    assert len(seen) == 2
    t.phase = "Ready"
    r.close()
    assert len(seen) == 3 and seen[-1]["phase"] == "Ready"


def test_reporter_thread_reports_at_most_every_interval() -> None:
    seen: list[float] = []
    t = ProgressTracker()
    with RateLimitedReporter(t, lambda p: seen.append(time.monotonic()), interval=0.2):
        time.sleep(1.05)
    # about 1.05 / 0.2 periodic reports, plus the final one
    assert 4 <= len(seen) <= 8
    gaps = [b - a for a, b in itertools.pairwise(seen[:-1])]
    assert all(g >= 0.19 for g in gaps)


def test_sink_errors_do_not_propagate() -> None:
    def boom(p: dict[str, Any]) -> None:
        raise RuntimeError("api down")

    r = RateLimitedReporter(ProgressTracker(), boom, interval=0.1)
    assert r.report_now(force=True)
    r.close()


def test_console_sink_plain_and_tty() -> None:
    t = ProgressTracker()
    t.plan(bytes_total=1000, files_total=2)
    t.phase = "Downloading"
    t.add_bytes(500)
    plain = io.StringIO()
    ConsoleSink(plain, tty=False)(t.snapshot())
    assert plain.getvalue().startswith("downloading: 50% of 1.0 kB")
    assert plain.getvalue().endswith(", 0/2 files\n")
    tty = io.StringIO()
    ConsoleSink(tty, tty=True, width=10)(t.snapshot())
    assert tty.getvalue().startswith("\r[#####-----] 50% of 1.0 kB")
    assert "\n" not in tty.getvalue()
    t.phase = "Ready"
    ConsoleSink(tty, tty=True, width=10)(t.snapshot())
    assert tty.getvalue().endswith("\n")


def test_summarize_without_rate() -> None:
    p = {"phase": "Downloading", "percent": 0.0, "bytesDone": 0, "bytesTotal": 2_000_000, "filesTotal": 1}
    assert summarize(p) == "0% of 2.0 MB"


# ------------------------------------------------------------------------------ waiting for a retry

UNREACHABLE = RetryNotice(
    Reason.HUB_UNREACHABLE,
    2,
    5,
    8.0,
    "cannot reach the Hub: ConnectError: [Errno -2] Name or service not known",
)


def _at(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def test_a_retry_before_the_plan_replaces_resolving_files() -> None:
    clock = FakeClock()
    t = ProgressTracker(clock=clock)
    t.phase = "Downloading"
    t.note_retry(UNREACHABLE)
    p = t.snapshot()
    retry = p["retry"]
    assert (retry["reason"], retry["attempt"], retry["maxAttempts"]) == ("HubUnreachable", 2, 5)
    assert retry["message"] == UNREACHABLE.message
    assert abs((_at(retry["nextAttemptAt"]) - datetime.now(UTC)).total_seconds() - 8) <= 2
    assert p["summary"] == (
        "retrying in 8s (attempt 2/5): cannot reach the Hub: ConnectError: [Errno -2] Name or service not known"
    )
    assert "etaSeconds" not in p  # neither the files nor a rate are known
    clock.t += 5
    assert t.snapshot()["summary"].startswith("retrying in 3s (attempt 2/5): cannot reach the Hub")
    clock.t += 5  # the wait is over, the attempt runs
    assert t.snapshot()["summary"].startswith("retrying now (attempt 2/5): cannot reach the Hub")
    t.note_retry(None)  # the Hub answered
    p = t.snapshot()
    assert "retry" not in p and p["summary"] == "Resolving files"


def test_a_download_retry_shows_until_bytes_flow_after_its_wait() -> None:
    clock = FakeClock()
    t = ProgressTracker(clock=clock)
    t.plan(bytes_total=100_000_000, files_total=1)
    t.phase = "Downloading"
    clock.t += 1
    t.add_bytes(10_000_000)
    assert t.snapshot()["bytesPerSecond"] == 10_000_000
    t.note_retry(RetryNotice(Reason.SLOW_TRANSFER, 3, 7, 4.0, "w.bin: stalled, 10 B/s over 30.0s"))
    p = t.snapshot()
    assert p["retry"]["reason"] == "SlowTransfer" and p["retry"]["attempt"] == 3
    # the ETA includes the wait: 4 s, then 90 MB at the 10 MB/s of before
    assert p["etaSeconds"] == 4 + 9
    assert p["summary"] == (
        "10% of 100.0 MB, 10.0 MB/s, ETA 13s, retrying in 4s (attempt 3/7): w.bin: stalled, 10 B/s over 30.0s"
    )
    clock.t += 2
    t.add_bytes(1000)  # another stream's bytes during the wait: the retry still waits
    p = t.snapshot()
    assert p["retry"]["attempt"] == 3
    assert p["etaSeconds"] == 2 + 89_999_000 // 10_000_000  # the rate before the wait, not the decayed one
    clock.t += 3
    t.add_bytes(1000)  # bytes after the wait: the download moves again
    p = t.snapshot()
    assert "retry" not in p and "retrying" not in p["summary"]


def test_a_download_that_ended_shows_no_retry() -> None:
    t = ProgressTracker()
    t.plan(bytes_total=2_000_000, files_total=1)
    t.phase = "Downloading"
    t.add_bytes(1_000_000)
    t.note_retry(UNREACHABLE)
    t.phase = "Failed"
    p = t.snapshot()
    assert "retry" not in p and p["summary"] == "Failed at 50% of 2.0 MB"


def _wait_for(
    seen: list[dict[str, Any]], what: Callable[[dict[str, Any]], bool], timeout: float = 5
) -> float:
    """Seconds until a report satisfying `what` arrived (fails after `timeout`)."""
    started = time.monotonic()
    while not any(what(p) for p in seen):
        assert time.monotonic() - started < timeout, f"no such report in {seen}"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_retry_and_its_end_are_reported_at_once_not_at_the_next_tick() -> None:
    seen: list[dict[str, Any]] = []
    t = ProgressTracker()
    t.phase = "Downloading"
    with RateLimitedReporter(t, seen.append, interval=60):  # the first tick would come after 15 s
        t.note_retry(UNREACHABLE)
        assert _wait_for(seen, lambda p: "retry" in p) < 2
        assert seen[-1]["summary"].startswith("retrying in ")
        t.note_retry(None)
        assert _wait_for(seen, lambda p: "retry" not in p) < 2
        assert seen[-1]["summary"] == "Resolving files"
        assert len(seen) == 2
    assert len(seen) == 3  # and the final report


def test_a_burst_of_retries_is_one_report() -> None:
    seen: list[dict[str, Any]] = []
    t = ProgressTracker()
    t.phase = "Downloading"
    reporter = RateLimitedReporter(t, seen.append, interval=60).start()
    for attempt in range(2, 10):  # several streams failing together
        t.note_retry(RetryNotice(Reason.SERVER_ERROR, attempt, 10, 5.0, f"stream {attempt}: HTTP 503"))
    _wait_for(seen, lambda p: "retry" in p)
    time.sleep(0.3)
    assert len(seen) == 1 and seen[0]["retry"]["attempt"] == 9
    reporter.close(final=False)
    t.note_retry(UNREACHABLE)  # a closed reporter no longer listens
    time.sleep(0.2)
    assert len(seen) == 1
