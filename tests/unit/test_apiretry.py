"""The pod runner's status retry (hack/localdev/apiretry.py): through an apiserver outage, bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError

from localdev import apiretry


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        self.now += delay
        return False


def failing(errors: list[BaseException]) -> tuple[list[int], Callable[[], None]]:
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        if errors:
            raise errors.pop(0)

    return calls, call


def refused() -> MaxRetryError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return MaxRetryError(None, "/api/v1/namespaces/ns/pods/p/status", reason)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        refused(),
        ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        ApiException(status=503, reason="Service Unavailable"),
        ApiException(status=500, reason="Internal Server Error"),
        ApiException(status=429, reason="Too Many Requests"),
        ApiException(status=0, reason="no answer"),
    ],
)
def test_transient_errors(error: BaseException) -> None:
    assert apiretry.is_transient(error)


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
def test_client_errors_are_not_transient(status: int) -> None:
    assert not apiretry.is_transient(ApiException(status=status))
    assert not apiretry.is_transient(ValueError("bug"))


def test_backoff_doubles_up_to_a_cap() -> None:
    delays = apiretry.backoff(first=0.5, cap=10)
    assert [next(delays) for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_retries_through_an_outage_until_the_apiserver_takes_it() -> None:
    clock, logs = FakeClock(), list[str]()
    calls, call = failing([refused(), refused(), ApiException(status=503), ApiException(status=429)])
    assert apiretry.retry_transient(call, what="status", log=logs.append, stop=clock.wait, clock=clock)
    assert len(calls) == 5
    assert clock.waits == [0.5, 1, 2, 4]
    assert "succeeded after 4 transient failure(s)" in logs[-1]


def test_a_gone_pod_ends_the_retries() -> None:
    clock = FakeClock()
    calls, call = failing([refused(), ApiException(status=404)])
    assert not apiretry.retry_transient(call, what="s", log=lambda _m: None, stop=clock.wait, clock=clock)
    assert len(calls) == 2


def test_other_errors_propagate_at_once() -> None:
    clock = FakeClock()
    calls, call = failing([ApiException(status=422, reason="Invalid")])
    with pytest.raises(ApiException):
        apiretry.retry_transient(call, what="s", log=lambda _m: None, stop=clock.wait, clock=clock)
    assert len(calls) == 1 and clock.waits == []


def test_gives_up_loudly_after_the_deadline() -> None:
    clock, logs = FakeClock(), list[str]()
    calls, call = failing([refused() for _ in range(1000)])
    assert not apiretry.retry_transient(
        call,
        what="status Succeeded of pod ns/p",
        log=logs.append,
        stop=clock.wait,
        clock=clock,
        give_up_after=600,
    )
    assert sum(clock.waits) <= 600 and sum(clock.waits) > 580
    assert "ERROR" in logs[-1] and "GAVE UP" in logs[-1] and "status Succeeded of pod ns/p" in logs[-1]
    assert len(calls) < 80  # backoff, not a busy loop


def test_stopping_the_runner_ends_the_retries() -> None:
    calls, call = failing([refused() for _ in range(10)])
    assert not apiretry.retry_transient(call, what="s", log=lambda _m: None, stop=lambda _d: True)
    assert len(calls) == 1
