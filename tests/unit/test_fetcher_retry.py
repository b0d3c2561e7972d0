"""What an HTTP answer means for a download, and the backoff (fetcher/retry.py), without a server."""

from __future__ import annotations

import pytest

from modeldepot import errors
from modeldepot.fetcher.retry import (
    Attempts,
    RetryNotice,
    RetryPolicy,
    Transient,
    retry_after,
    status_error,
)
from modeldepot.vocabulary import Reason


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (401, {}, errors.UnauthorizedError),
        (403, {}, errors.UnauthorizedError),
        (400, {"x-error-code": "GatedRepo"}, errors.UnauthorizedError),
        (404, {"x-error-code": "RepoNotFound"}, errors.RepoNotFoundError),
        (404, {"x-error-code": "RevisionNotFound"}, errors.RevisionNotFoundError),
        (404, {}, errors.EntryNotFoundError),
        (418, {}, errors.DownloadFailedError),
    ],
)
def test_permanent_answers(status: int, headers: dict[str, str], kind: type[Exception]) -> None:
    error = status_error("w.bin", status, headers)
    assert type(error) is kind
    assert f"w.bin (HTTP {status})" in str(error)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, Reason.RATE_LIMITED),
        (500, Reason.SERVER_ERROR),
        (502, Reason.SERVER_ERROR),
        (503, "ServerError"),
    ],
)
def test_retryable_answers_carry_the_error_retry_after_and_reason(status: int, reason: str) -> None:
    error = status_error("w.bin", status, {"retry-after": "7"})
    assert isinstance(error, Transient) and not error.stalled
    assert isinstance(error.error, errors.HubUnavailableError)
    assert error.retry_after == 7.0
    assert error.reason == reason


def test_the_reason_a_retry_shows() -> None:
    assert Transient(errors.HubUnavailableError("x: ConnectError")).reason == "HubUnreachable"
    assert Transient(errors.DownloadFailedError("x: stalled"), stalled=True).reason == "SlowTransfer"
    assert Transient(errors.DownloadFailedError("x: RemoteProtocolError")).reason == "DownloadFailed"
    unreadable = errors.HubUnavailableError("?", retry_reason=Reason.HUB_UNAVAILABLE)
    assert Transient(unreadable).reason == "HubUnavailable"
    assert Transient(unreadable, reason=Reason.RATE_LIMITED).reason == "RateLimited"


def test_attempts_tell_the_policy_of_each_retry_before_the_wait() -> None:
    heard: list[RetryNotice | None] = []
    policy = RetryPolicy(max_retries=2, backoff_base=1.0, backoff_max=5.0, on_retry=heard.append)
    attempts = Attempts(policy, progress_floor=100)
    refused = Transient(errors.HubUnavailableError("w.bin: ConnectError: refused"))
    assert attempts.failed(refused, progressed=0, remaining=1000) == heard[-1].delay  # type: ignore[union-attr]
    limited = status_error("w.bin", 429, {"retry-after": "3"})
    assert isinstance(limited, Transient)
    assert attempts.failed(limited, progressed=0, remaining=1000) == 3.0
    assert heard == [
        RetryNotice("HubUnreachable", 2, 3, heard[0].delay, "w.bin: ConnectError: refused"),  # type: ignore[union-attr]
        RetryNotice("RateLimited", 3, 3, 3.0, "the Hub failed to serve w.bin (HTTP 429)"),
    ]
    # out of attempts: the error is raised, and no retry is announced
    with pytest.raises(errors.HubUnavailableError):
        attempts.failed(limited, progressed=0, remaining=1000)
    assert len(heard) == 2
    # real progress starts the count again: the next retry is attempt 2 again
    attempts.failed(limited, progressed=100, remaining=1000)
    assert heard[-1] is not None and heard[-1].attempt == 2


@pytest.mark.parametrize(("value", "seconds"), [(None, None), ("3.5", 3.5), ("Wed, 21 Oct 2015", None)])
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry_after({} if value is None else {"retry-after": value}) == seconds


def test_delay_backs_off_with_jitter_and_caps_retry_after() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=1.0, backoff_max=5.0)
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)]:
        assert full / 2 <= policy.delay(attempt) <= full
    assert policy.delay(0, retry_after=100) == 5.0
    assert policy.delay(0, retry_after=-1) == 0.0
