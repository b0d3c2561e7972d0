"""Progress math, the rate-limited reporter and console rendering."""

from __future__ import annotations

import io
import itertools
import time
from typing import Any

from modeldepot.fetcher.progress import (
    ConsoleSink,
    ProgressTracker,
    RateLimitedReporter,
    human_bytes,
    summarize,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(999) == "999 B"
    assert human_bytes(38_500_000) == "38.5 MB"
    assert human_bytes(91_618_861) == "91.6 MB"
    assert human_bytes(1 << 30) == "1.1 GB"


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
    assert p["percent"] == 42
    assert p["filesDone"] == 1 and p["filesTotal"] == 13
    assert p["bytesPerSecond"] == 14_250_000
    assert p["etaSeconds"] == (91_600_000 - 38_500_000) // 14_250_000
    assert p["resolvedRevision"] == "abc"
    assert p["observedGeneration"] == 3
    assert p["updatedAt"].endswith("Z")
    assert p["summary"] == "42% 38.5 MB/91.6 MB 14.2 MB/s"


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


def test_percent_never_hits_100_before_ready() -> None:
    t = ProgressTracker()
    t.plan(bytes_total=100, files_total=1)
    t.phase = "Downloading"
    t.add_bytes(100)
    assert t.snapshot()["percent"] == 99
    t.phase = "Ready"
    p = t.snapshot()
    assert p["percent"] == 100 and p["etaSeconds"] == 0 and p["bytesPerSecond"] == 0
    assert p["summary"] == "100% 100 B/100 B"


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
    assert plain.getvalue().startswith("downloading: 50% 500 B/1.0 kB")
    assert plain.getvalue().endswith("0/2 files\n") or "0/2 files" in plain.getvalue()
    tty = io.StringIO()
    ConsoleSink(tty, tty=True, width=10)(t.snapshot())
    assert tty.getvalue().startswith("\r[#####-----] 50%")
    assert "\n" not in tty.getvalue()
    t.phase = "Ready"
    ConsoleSink(tty, tty=True, width=10)(t.snapshot())
    assert tty.getvalue().endswith("\n")


def test_summarize_without_rate() -> None:
    p = {"phase": "Downloading", "percent": 0, "bytesDone": 0, "bytesTotal": 2_000_000, "bytesPerSecond": 0}
    assert summarize(p) == "0% 0 B/2.0 MB"
