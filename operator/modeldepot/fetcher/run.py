"""Orchestration of one fetch: resolve, reuse, check space, transfer, publish, report.

`fetch()` does the work and raises `modeldepot.errors.ModelDepotError`; `run()` wraps it for the
Job: installs SIGTERM/SIGINT handlers, writes the JSON result to the termination-message path
(`job.FetchResult`) and returns the exit code of docs/internals.md (0 ready, 1 transient,
2 permanent, 143 SIGTERM). `_fetch_into` is the pipeline; its steps are in `steps`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from modeldepot import errors
from modeldepot.fetcher import steps
from modeldepot.fetcher.hub import HubClient
from modeldepot.fetcher.job import MAX_MESSAGE, FetchRequest, FetchResult, write_termination_message
from modeldepot.fetcher.layout import Layout
from modeldepot.fetcher.progress import ConsoleSink, ProgressSink, ProgressTracker, RateLimitedReporter
from modeldepot.fetcher.settings import FetchSettings
from modeldepot.vocabulary import Phase

__all__ = [
    "EXIT_PERMANENT",
    "EXIT_READY",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_TRANSIENT",
    "FetchRequest",
    "FetchResult",
    "fetch",
    "run",
]

log = logging.getLogger(__name__)

EXIT_READY = 0
EXIT_TRANSIENT = 1
EXIT_PERMANENT = 2
EXIT_SIGTERM = 143
EXIT_SIGINT = 130


def fetch(
    request: FetchRequest,
    *,
    settings: FetchSettings | None = None,
    sink: ProgressSink | None = None,
    console: TextIO | None = None,
    cancel: threading.Event | None = None,
    hub: HubClient | None = None,
) -> FetchResult:
    """Fetch `request.repo_id` into `request.target`; raise a `ModelDepotError` on failure.

    `sink` receives status progress at most every `settings.report_interval` s and once at the end;
    `console` (a stream) gets a human progress bar / lines.
    """
    settings = settings or FetchSettings()
    cancel = cancel or threading.Event()
    tracker = ProgressTracker(observed_generation=request.generation)
    with ExitStack() as stack:
        if sink is not None:
            stack.enter_context(RateLimitedReporter(tracker, sink, interval=settings.report_interval))
        if console is not None:
            console_sink = ConsoleSink(console)
            interval = 0.5 if console_sink.tty else settings.log_interval
            stack.enter_context(RateLimitedReporter(tracker, console_sink, interval=interval))
        try:
            result = _fetch(request, settings, tracker, cancel, hub)
        except errors.ModelDepotError as exc:
            # Interrupted (suspend, spec change, deletion): partial data stays for a resume.
            interrupted = isinstance(exc, errors.InterruptedFetchError)
            tracker.phase = Phase.SUSPENDED if interrupted else Phase.FAILED
            tracker.extra = {"reason": exc.reason, "message": exc.message[:MAX_MESSAGE]}
            raise
        except Exception as exc:
            tracker.phase = Phase.FAILED
            tracker.extra = {"reason": errors.DownloadFailedError.reason, "message": str(exc)[:MAX_MESSAGE]}
            raise
        tracker.phase = Phase.READY
        tracker.extra = {"digest": result.digest}
        return result
    raise AssertionError("unreachable")


def _fetch(
    request: FetchRequest,
    settings: FetchSettings,
    tracker: ProgressTracker,
    cancel: threading.Event,
    hub: HubClient | None,
) -> FetchResult:
    with Layout(request.target, request.root or settings.storage_root, owner=request.owner) as layout:
        layout.claim()  # before anything is written: PathConflict if another artifact has the path
        return _fetch_into(layout, request, settings, tracker, cancel, hub)


def _fetch_into(
    layout: Layout,
    request: FetchRequest,
    settings: FetchSettings,
    tracker: ProgressTracker,
    cancel: threading.Event,
    hub: HubClient | None,
) -> FetchResult:
    """The pipeline of one fetch into a claimed `layout` (each step is in `steps`)."""
    hub = hub or HubClient.from_settings(settings, endpoint=request.endpoint)
    snap = steps.resolve_snapshot(hub, request, tracker, cancel)
    current = layout.current()
    store = layout.blob_store(trusted=request.node_local)
    if (done := steps.already_published(layout, snap, current, tracker, store)) is not None:
        return done
    if layout.took_over:
        current = None  # an earlier artifact's copy: its files are trusted only once re-hashed
    staged = steps.start_staging(layout, snap)
    steps.reuse_verified(layout, snap, staged, current, tracker, store)
    steps.adopt_in_place(layout, snap, staged, tracker, cancel)
    steps.check_free_space(layout, staged.items)
    steps.log_plan(snap, staged)
    downloaded = steps.transfer_missing(
        hub,
        staged,
        concurrency=request.concurrency or settings.concurrency,
        settings=settings,
        tracker=tracker,
        cancel=cancel,
    )
    manifest = steps.publish_version(layout, snap, staged, fsync=settings.fsync, store=store)
    return steps.ready_result(
        str(layout.target),
        manifest,
        downloaded,
        staged.reused,
        reused_bytes=staged.reused_bytes,
        adopted_bytes=staged.adopted_bytes,
        model=steps.describe_model(staged.staging, manifest),  # the directory, now published
    )


@contextmanager
def _stop_on_signals(cancel: threading.Event) -> Iterator[list[int]]:
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if not received:
            log.warning("received %s: stopping, partial data is kept", signal.Signals(signum).name)
        received.append(signum)
        cancel.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(
    request: FetchRequest,
    *,
    settings: FetchSettings | None = None,
    sink: ProgressSink | None = None,
    console: TextIO | None = sys.stderr,
    cancel: threading.Event | None = None,
) -> int:
    """Run a fetch like the Job does and return its exit code (result also in the termination log)."""
    settings = settings or FetchSettings()
    cancel = cancel or threading.Event()
    target = str(Path(request.target).absolute())
    with _stop_on_signals(cancel) as received:
        try:
            result = fetch(request, settings=settings, sink=sink, console=console, cancel=cancel)
            code = EXIT_READY
        except errors.ModelDepotError as exc:
            result = FetchResult(phase=Phase.FAILED, path=target, reason=exc.reason, message=exc.message)
            if isinstance(exc, errors.InterruptedFetchError):
                code = EXIT_SIGINT if received and received[0] == signal.SIGINT else EXIT_SIGTERM
            else:
                code = EXIT_TRANSIENT if exc.retryable else EXIT_PERMANENT
            log.error("%s", exc)
        except Exception as exc:
            log.exception("fetch failed unexpectedly")
            result = FetchResult(
                phase=Phase.FAILED,
                path=target,
                reason=errors.DownloadFailedError.reason,
                message=f"{type(exc).__name__}: {exc}",
            )
            code = EXIT_TRANSIENT
    write_termination_message(settings.termination_log, result)
    return code
