"""What an HTTP answer means for a download, and the backoff (fetcher/retry.py), without a server."""

from __future__ import annotations

import pytest

from modeldepot import errors
from modeldepot.fetcher.retry import RetryPolicy, Transient, retry_after, status_error


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


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retryable_answers_carry_the_error_and_retry_after(status: int) -> None:
    error = status_error("w.bin", status, {"retry-after": "7"})
    assert isinstance(error, Transient) and not error.stalled
    assert isinstance(error.error, errors.HubUnavailableError)
    assert error.retry_after == 7.0


@pytest.mark.parametrize(("value", "seconds"), [(None, None), ("3.5", 3.5), ("Wed, 21 Oct 2015", None)])
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry_after({} if value is None else {"retry-after": value}) == seconds


def test_delay_backs_off_with_jitter_and_caps_retry_after() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=1.0, backoff_max=5.0)
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)]:
        assert full / 2 <= policy.delay(attempt) <= full
    assert policy.delay(0, retry_after=100) == 5.0
    assert policy.delay(0, retry_after=-1) == 0.0
