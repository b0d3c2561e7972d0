"""Bounds of one metadata call to the Hub: timeouts, a deadline, body and listing limits.

huggingface_hub sends its requests through one shared `httpx2.Client` and passes no timeout, so a
hostile or stuck endpoint could hold a call for ever. `with_bounds_hooks` adds event hooks to such
a client (`hub.py` installs them on huggingface_hub's client factory, the only place that needs
`huggingface_hub`) which apply the `Bounds` of the call running in the current thread and leave
other callers alone: connect/read timeouts on each request, no request started and no body byte
accepted after the deadline, at most `MAX_METADATA_BODY` bytes per answer, at most `max_pages`
listing pages and never one page twice, and no `Retry-After` for huggingface_hub's own retries to
sleep on. A 429 or 5xx answer ends the call at once (`RetryableAnswer`, which huggingface_hub does
not retry by itself: `HubClient._call` retries it, visibly, after the answer's `Retry-After`, kept in
`Bounds.retry_after`). `run_bounded` runs a call in a worker thread under its `Bounds` and gives up
at the deadline (the backstop for waits the hooks cannot see).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2

from modeldepot import errors
from modeldepot.fetcher.remote import clip
from modeldepot.fetcher.retry import retry_after

T = TypeVar("T")

MAX_METADATA_BODY = 64 << 20
"""Largest body of one metadata answer (a listing page, repo_info)."""


class DeadlineExceeded(Exception):
    """The metadata call ran past its deadline (not an httpx2 error: huggingface_hub must not retry it)."""


class RetryableAnswer(Exception):
    """A 429 or 5xx answer to a metadata request (not an httpx2 error either: huggingface_hub's own
    retries of a listing page would wait unseen; the caller retries the call and says so)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class Bounds:
    """Limits of the metadata call running in this thread (see `with_bounds_hooks`)."""

    connect: float
    read: float
    deadline: float
    """time.monotonic() after which no request starts and no body byte is accepted."""
    max_pages: int
    pages: int = 0
    page_urls: set[str] = field(default_factory=set)
    retry_after: float | None = None
    """The `Retry-After` seconds of the 429 or 5xx answer that ended the call (`RetryableAnswer`)."""

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded()
        return left


_CURRENT = threading.local()


def _bounds() -> Bounds | None:
    return getattr(_CURRENT, "bounds", None)


def _on_request(request: httpx2.Request) -> None:
    bounds = _bounds()
    if bounds is None:
        return
    left = bounds.remaining()
    # huggingface_hub passes `timeout=None` (no limit) explicitly; replace it.
    connect, read = min(bounds.connect, left), min(bounds.read, left)
    request.extensions["timeout"] = {"connect": connect, "read": read, "write": read, "pool": connect}


class _BoundedBody(httpx2.SyncByteStream):
    """A response body that stops at the deadline or after `MAX_METADATA_BODY` bytes."""

    def __init__(self, inner: Any, bounds: Bounds) -> None:
        self._inner = inner
        self._bounds = bounds

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            self._bounds.remaining()
            total += len(chunk)
            if total > MAX_METADATA_BODY:
                raise errors.InvalidSpecError(
                    f"the Hub sent more than {MAX_METADATA_BODY >> 20} MiB in one metadata answer"
                )
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def _on_response(response: httpx2.Response) -> None:
    bounds = _bounds()
    if bounds is None:
        return
    if response.status_code == 429 or response.status_code >= 500:
        bounds.retry_after = retry_after(response.headers)
        raise RetryableAnswer(response.status_code)
    # huggingface_hub's own retries would sleep as long as these say (a hostile server: forever).
    for name in ("retry-after", "ratelimit", "ratelimit-policy"):
        if name in response.headers:
            del response.headers[name]
    response.stream = _BoundedBody(response.stream, bounds)
    if response.status_code != 200 or "/tree/" not in response.request.url.path:
        return
    bounds.pages += 1
    bounds.page_urls.add(str(response.request.url))
    if bounds.pages > bounds.max_pages:
        raise errors.InvalidSpecError(
            f"the Hub's file listing goes on for more than {bounds.max_pages} pages; refusing it"
        )
    next_url = response.links.get("next", {}).get("url")
    if next_url is not None and str(response.request.url.join(next_url)) in bounds.page_urls:
        raise errors.InvalidSpecError(
            f"the Hub's file listing loops: its next page is one already read ({clip(next_url)})"
        )


def with_bounds_hooks(client: httpx2.Client) -> httpx2.Client:
    """`client`, its event hooks extended to apply the current thread's `Bounds`."""
    hooks = client.event_hooks
    client.event_hooks = {
        "request": [*hooks.get("request", []), _on_request],
        "response": [*hooks.get("response", []), _on_response],
    }
    return client


def run_bounded(fn: Callable[[], T], bounds: Bounds) -> T:
    """`fn()` in a worker thread under `bounds`; `DeadlineExceeded` if it is not done by the deadline.

    The hooks make the worker's requests end by themselves at the deadline (timeouts, no new
    request, no more body bytes); the thread is the backstop for waits the hooks cannot see
    (huggingface_hub's own backoff sleeps, a server trickling response headers). A worker left
    behind is a daemon thread whose next request or body chunk fails.
    """
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        _CURRENT.bounds = bounds
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        finally:
            _CURRENT.bounds = None

    worker = threading.Thread(target=work, name="hub-metadata", daemon=True)
    worker.start()
    worker.join(max(0.0, bounds.deadline - time.monotonic()))
    if worker.is_alive() or (failure and isinstance(failure[0], DeadlineExceeded)):
        raise DeadlineExceeded()
    if failure:
        raise failure[0]
    return outcome[0]  # type: ignore[no-any-return]
