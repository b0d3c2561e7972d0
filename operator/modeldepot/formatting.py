"""Human formatting shared by the fetcher and the operator: sizes, durations, progress summaries,
retries.

Kept free of pydantic and the resource models so the fetcher starts fast.
"""

from __future__ import annotations

import math

from .vocabulary import Phase

_SI_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
_STOPPED = (Phase.SUSPENDED, Phase.FAILED)  # summaries say where they stopped
SUMMARY_MESSAGE_CHARS = 120
"""Most characters of a retry's message in a summary (the whole message is in progress.retry)."""


def format_bytes(n: float | None) -> str:
    """SI size for humans: 0 -> "0 B", 91_600_000 -> "91.6 MB"."""
    if n is None:
        return "?"
    value = float(n)
    if abs(value) < 1000:
        return f"{int(value)} B"
    for unit in _SI_UNITS[1:]:
        value /= 1000.0
        if abs(round(value, 1)) < 1000 or unit == _SI_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """Short duration for ETAs: "42s", "4m05s", "2h03m"."""
    if seconds is None or seconds < 0 or not math.isfinite(seconds):
        return "?"
    s = math.ceil(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def compute_percent(bytes_done: int | None, bytes_total: int | None) -> float | None:
    """Percent of bytes done, 0-100, rounded to 0.1; 100 for an empty total."""
    if bytes_done is None or bytes_total is None:
        return None
    if bytes_total <= 0:
        return 100.0
    return round(min(100.0, max(0.0, bytes_done * 100.0 / bytes_total)), 1)


def retry_phrase(
    *,
    attempt: int,
    max_attempts: int,
    message: str,
    wait: float | None = None,
    at: str | None = None,
    clip: int | None = None,
) -> str:
    """A retry for humans: ``retrying in 8s (attempt 2/5): <message>``.

    `wait`: seconds until the next attempt (0 or less: ``retrying now``); else `at`, its RFC 3339
    time (``retrying at 2026-05-01T12:00:08Z``), which does not go stale (condition messages).
    `clip`: most characters of the message kept (then "…").
    """
    if wait is not None:
        when = "retrying now" if wait <= 0 else f"retrying in {format_duration(wait)}"
    else:
        when = f"retrying at {at}" if at else "retrying"
    if clip is not None and len(message) > clip:
        message = message[: clip - 1] + "…"
    return f"{when} (attempt {attempt}/{max_attempts}): {message}"


def progress_summary(
    *,
    phase: str | None = None,
    percent: float | None = None,
    bytes_done: int | None = None,
    bytes_total: int | None = None,
    bytes_per_second: float | None = None,
    eta_seconds: float | None = None,
    nodes_ready: int | None = None,
    nodes_total: int | None = None,
    retrying: str | None = None,
) -> str:
    """The one-line progress for ``status.progress.summary`` (the Progress printer column).

    Examples: ``45% of 91.6 MB, 12.3 MB/s, ETA 4s``; ``100% of 91.6 MB``; ``Suspended at 45% of
    91.6 MB``; ``1/3 nodes, 45% of 91.6 MB, ...``; ``Pending``. Percent is floored so a nearly done
    download never reads 100%. `retrying` (a `retry_phrase`) ends the summary of a download
    that waits to try again, and stands for ``Resolving files`` before the files are known:
    ``retrying in 8s (attempt 2/5): cannot reach the Hub: ...``.
    """
    if percent is None:
        percent = compute_percent(bytes_done, bytes_total)
    parts: list[str] = []
    if nodes_total is not None:
        parts.append(f"{nodes_ready or 0}/{nodes_total} nodes")
    if phase == Phase.READY and bytes_total is not None:
        parts.append(f"100% of {format_bytes(bytes_total)}")
    elif percent is not None and bytes_total is not None:
        shown = f"{math.floor(percent)}% of {format_bytes(bytes_total)}"
        if phase in _STOPPED:
            shown = f"{phase} at {shown}"
        parts.append(shown)
        if phase not in (*_STOPPED, Phase.READY):
            if bytes_per_second is not None and bytes_per_second > 0:
                parts.append(f"{format_bytes(bytes_per_second)}/s")
            if eta_seconds is not None and percent < 100:
                parts.append(f"ETA {format_duration(eta_seconds)}")
    elif phase is not None and not (retrying and phase == Phase.DOWNLOADING):
        parts.append(phase if phase != Phase.DOWNLOADING else "Resolving files")
    if retrying and phase not in (*_STOPPED, Phase.READY):
        parts.append(retrying)
    return ", ".join(parts) if parts else (phase or "")
