"""When a download attempt is tried again: the backoff policy and what an HTTP answer means.

An attempt ends in one of three ways besides success: `Transient` (a retryable failure: 429, 5xx,
a broken or stalled connection; it carries the error to raise when the retries run out, the
server's `Retry-After` and the `reason` the status shows while waiting), `Restart` (the server did
not honour our Range: the file starts over), `RangeRefused` (a ranged request of a multi-stream
download was not answered with exactly that range: the file falls back to one stream), or a
permanent `modeldepot.errors` error (`status_error` maps the status and the Hub's `X-Error-Code`).
`RetryPolicy` says how long to wait before the next attempt and whom to tell (`on_retry`, with a
`RetryNotice`: the progress tracker, so the wait shows in status at once); `Attempts` counts the
attempts of one range of a file. Pure but for that callback.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modeldepot import errors
from modeldepot.vocabulary import Reason


@dataclass(frozen=True)
class RetryNotice:
    """A retry about to wait: why, which attempt comes next (2 is the first retry) of how many, how
    long the wait is and the error's message. What the status shows until the retry succeeds."""

    reason: Reason
    attempt: int
    max_attempts: int
    delay: float
    message: str


RetryListener = Callable[[RetryNotice | None], None]
"""Told of each retry before its wait, and (None) when a retried call succeeded."""


def _ignore(notice: RetryNotice | None) -> None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    on_retry: RetryListener = field(default=_ignore, compare=False)
    """Told of every retry `Attempts.failed` decides on (never with None: a download's recovery
    shows as bytes arriving again, see `progress.ProgressTracker.note_retry`)."""

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.backoff_max, max(0.0, retry_after))
        return float(min(self.backoff_max, self.backoff_base * 2**attempt) * (0.5 + random.random() / 2))


class Transient(Exception):
    """A retryable failure of one attempt; `error` is what to raise when retries run out.

    `reason` is what the status shows while the retry waits: given, else `SlowTransfer` for a
    stall, the error's `retry_reason` for a `HubUnavailableError` (`HubUnreachable` when no
    connection could be made), else the error's own reason (`DownloadFailed`: a broken transfer).
    """

    def __init__(
        self,
        error: errors.ModelDepotError,
        retry_after: float | None = None,
        *,
        stalled: bool = False,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.stalled = stalled
        """Cut for being below the throughput floor: counts against the retries even if bytes came."""
        if reason is None:
            if stalled:
                reason = Reason.SLOW_TRANSFER
            elif isinstance(error, errors.HubUnavailableError):
                reason = error.retry_reason
            else:
                reason = error.reason
        self.reason = reason


class Restart(Exception):
    """The server ignored our Range; start the file over."""


class RangeRefused(Exception):
    """A ranged request got something else than exactly that range; use one stream instead."""


class Attempts:
    """The attempts at one range of a file: when to give up, how long to wait before the next.

    Real progress resets the count; a stall, or an attempt that brings less than `progress_floor`
    bytes, does not, so a hostile server cannot keep one file going for ever.
    """

    def __init__(self, policy: RetryPolicy, progress_floor: int) -> None:
        self._policy = policy
        self._floor = progress_floor
        self.count = 0

    def failed(self, exc: Transient, progressed: int, remaining: int) -> float:
        """The delay before the next attempt after `exc`; raises `exc.error` when out of attempts.

        The policy's `on_retry` hears of the retry before the caller waits.
        `progressed`: bytes this attempt brought; `remaining`: bytes it still had to bring when it began.
        """
        if not exc.stalled and progressed >= min(self._floor, remaining):
            self.count = 0
        if self.count >= self._policy.max_retries:
            raise exc.error from None
        delay = self._policy.delay(self.count, exc.retry_after)
        self.count += 1
        notice = RetryNotice(exc.reason, self.count + 1, self._policy.max_attempts, delay, exc.error.message)
        self._policy.on_retry(notice)
        return delay


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The `Retry-After` seconds of an answer (None if absent or not a number)."""
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def status_error(path: str, status: int, headers: Mapping[str, str]) -> Exception:
    """The error for a non-success answer about `path`: `Transient` for retryable statuses.

    `headers` are the answer's, looked up by lower-case name (httpx's are case-insensitive).
    """
    code = headers.get("x-error-code", "")
    where = f"{path} (HTTP {status})"
    if status == 429 or status >= 500:
        why = Reason.RATE_LIMITED if status == 429 else Reason.SERVER_ERROR
        error = errors.HubUnavailableError(f"the Hub failed to serve {where}", retry_reason=why)
        return Transient(error, retry_after(headers))
    if status in (401, 403) or code == "GatedRepo":
        return errors.UnauthorizedError(f"the Hub refused access to {where}")
    if code == "RepoNotFound":
        return errors.RepoNotFoundError(f"repository not found while downloading {where}")
    if code == "RevisionNotFound":
        return errors.RevisionNotFoundError(f"revision not found while downloading {where}")
    if status == 404:
        return errors.EntryNotFoundError(f"file not found on the Hub: {where}")
    return errors.DownloadFailedError(f"unexpected response for {where}")
