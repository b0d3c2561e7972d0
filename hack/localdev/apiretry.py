"""Retrying a Kubernetes API write through an apiserver outage, as a kubelet does with pod status.

A kubelet keeps a pod's status in memory and syncs it until the apiserver takes it; the pod runner
used to send it once, so a pod that finished while the apiserver was down stayed Running forever
(issue 11). `retry_transient` retries a call while its failure is transient -- connection refused
or reset, a timeout, 429 or 5xx -- with capped exponential backoff, until it succeeds, the object is
gone (404), the caller stops, or the deadline passes (then it logs loudly and gives up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
GIVE_UP_AFTER = 600.0


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request later may succeed (the apiserver is away or overloaded)."""
    if isinstance(error, ApiException):
        # status 0/None: the client got no HTTP answer at all
        return not error.status or error.status in TRANSIENT_STATUSES
    # connection refused/reset and timeouts are OSErrors; urllib3 wraps them after its own retries
    return isinstance(error, (Urllib3Error, OSError))


def backoff(first: float = 0.5, cap: float = 10.0) -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 10, 10, ... seconds."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def retry_transient(
    call: Callable[[], None],
    *,
    what: str,
    log: Callable[[str], None],
    stop: Callable[[float], bool] | None = None,
    give_up_after: float = GIVE_UP_AFTER,
    clock: Callable[[], float] = time.monotonic,
    delays: Iterator[float] | None = None,
) -> bool:
    """Run `call` until it succeeds (True) or the object is gone (404: False).

    A transient failure is retried after the next backoff delay; `stop(delay)` waits that long and
    returns True if the caller is shutting down (then False is returned). After `give_up_after`
    seconds of failures it logs an error and returns False. Other errors propagate.
    """
    deadline = clock() + give_up_after
    delays = delays if delays is not None else backoff()
    failures = 0
    while True:
        try:
            call()
            if failures:
                log(f"{what}: succeeded after {failures} transient failure(s)")
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            if not is_transient(error):
                raise
            reason: BaseException = error
        except Exception as error:
            if not is_transient(error):
                raise
            reason = error
        failures += 1
        delay = next(delays)
        if clock() + delay > deadline:
            log(
                f"ERROR: {what}: GAVE UP after {failures} failures over {give_up_after:.0f}s"
                f" (the apiserver never took it); last error: {_short(reason)}"
            )
            return False
        if failures == 1 or failures % 10 == 0:
            log(f"{what}: transient failure {failures} ({_short(reason)}); retrying")
        if stop is None:
            time.sleep(delay)
        elif stop(delay):
            return False


def _short(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {str(error)[:200]}"
