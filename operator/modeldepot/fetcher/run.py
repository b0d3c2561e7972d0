"""Orchestration of one fetch: resolve, plan, reuse, transfer, verify, publish, report.

`fetch()` does the work and raises `modeldepot.errors.ModelDepotError`; `run()` wraps it for the
Job: installs SIGTERM/SIGINT handlers, writes the JSON result to the termination-message path
and returns the exit code of docs/internals.md (0 ready, 1 transient, 2 permanent, 143 SIGTERM).
"""

from __future__ import annotations

import json
import logging
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from modeldepot import errors
from modeldepot.fetcher.hub import HubClient, RemoteFile, RepoSnapshot
from modeldepot.fetcher.layout import Layout, PartialState
from modeldepot.fetcher.manifest import FileEntry, Manifest
from modeldepot.fetcher.owners import LOCAL_OWNER, Owner
from modeldepot.fetcher.progress import ConsoleSink, ProgressSink, ProgressTracker, RateLimitedReporter
from modeldepot.fetcher.safefs import Dir, Location
from modeldepot.fetcher.transfer import RetryPolicy, Transfer, TransferItem, VerifiedFile, git_blob_id
from modeldepot.settings import FetchSettings

log = logging.getLogger(__name__)

EXIT_READY = 0
EXIT_TRANSIENT = 1
EXIT_PERMANENT = 2
EXIT_SIGTERM = 143
EXIT_SIGINT = 130
MAX_MESSAGE = 1024  # characters of a failure message in status and the termination message
TERMINATION_MESSAGE_BYTES = 3800
"""Budget of the encoded termination message: the kubelet keeps at most 4096 bytes of it."""


@dataclass
class FetchRequest:
    """What `modeldepot fetch` was asked to do."""

    repo_id: str
    target: Path
    revision: str = "main"
    repo_type: str = "model"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    endpoint: str | None = None
    concurrency: int | None = None
    generation: int | None = None
    root: Path | None = None
    owner: Owner = LOCAL_OWNER
    """The ModelArtifact this fetch works for (`--owner`): only its own paths and versions are used."""


@dataclass
class FetchResult:
    """The termination message (docs/internals.md)."""

    phase: str
    path: str
    reason: str = ""
    message: str = ""
    commit: str = ""
    digest: str = ""
    total_bytes: int = 0
    file_count: int = 0
    downloaded_bytes: int = 0
    reused_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The termination message as a dict; encoded it fits `TERMINATION_MESSAGE_BYTES`."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data

    def _fields(self, message: str, path: str) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "reason": self.reason,
            "message": message,
            "commit": self.commit,
            "digest": self.digest,
            "totalBytes": self.total_bytes,
            "fileCount": self.file_count,
            "path": path,
        }

    def to_json(self, limit: int = TERMINATION_MESSAGE_BYTES) -> str:
        """Compact JSON of at most `limit` UTF-8 bytes.

        phase, reason, commit, digest, totalBytes and fileCount are always complete; the message
        (at most `MAX_MESSAGE` characters) and then the path are shortened, on character
        boundaries and marked with "…", only as far as needed.
        """
        message = _printable(self.message[:MAX_MESSAGE] + ("…" if len(self.message) > MAX_MESSAGE else ""))
        path = _printable(self.path)
        fixed = _json_bytes(self._fields("", ""))
        room = max(0, limit - fixed)
        m, p = _json_bytes(message) - 2, _json_bytes(path) - 2
        if m + p > room:
            # the path identifies the result: it keeps at least half the room, the message the rest
            p_room = min(p, max(room // 2, room - m))
            path = _fit(path, p_room)
            message = _fit(message, room - (_json_bytes(path) - 2))
        return json.dumps(self._fields(message, path), ensure_ascii=False, separators=(",", ":"))


def _reusable(
    f: RemoteFile, current: tuple[Dir, Manifest] | None, by_sha: dict[tuple[str, int], FileEntry]
) -> tuple[Location, FileEntry] | None:
    """A file of the published version (a regular file, never a symlink) with exactly this content."""
    if current is None:
        return None
    store, manifest = current
    if f.sha256 is not None:
        hit = by_sha.get((f.sha256.lower(), f.size))
        candidates = [hit] if hit else []
    else:
        candidates = [e for e in manifest.files if e.path == f.path and e.size == f.size]
    for entry in candidates:
        try:
            source = store / entry.path
            st = source.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                continue
            # Small (non-LFS) files are known only by their git blob id: check it on the local copy.
            if f.sha256 is None and git_blob_id(source.read_bytes()) != f.blob_id:
                continue
        except (OSError, errors.PathConflictError, errors.InvalidSpecError):
            continue
        return source, FileEntry(f.path, f.size, entry.sha256)
    return None


def _same_selection(manifest: Manifest, snap: RepoSnapshot) -> bool:
    if manifest.commit != snap.commit or len(manifest.files) != len(snap.files):
        return False
    have = {e.path: e for e in manifest.files}
    for f in snap.files:
        e = have.get(f.path)
        if e is None or e.size != f.size or (f.sha256 is not None and e.sha256 != f.sha256.lower()):
            return False
    return True


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
            tracker.phase = "Suspended" if isinstance(exc, errors.InterruptedFetchError) else "Failed"
            tracker.extra = {"reason": exc.reason, "message": exc.message[:MAX_MESSAGE]}
            raise
        except Exception as exc:
            tracker.phase = "Failed"
            tracker.extra = {"reason": errors.DownloadFailedError.reason, "message": str(exc)[:MAX_MESSAGE]}
            raise
        tracker.phase = "Ready"
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
    hub = hub or HubClient.from_settings(settings, endpoint=request.endpoint)
    tracker.phase = "Downloading"  # summary: "Resolving files" until the plan is known
    snap = hub.snapshot(
        request.repo_id,
        revision=request.revision,
        repo_type=request.repo_type,
        include=request.include,
        exclude=request.exclude,
    )
    tracker.resolved_revision = snap.commit
    tracker.plan(bytes_total=snap.total_bytes, files_total=len(snap.files))
    if cancel.is_set():
        raise errors.InterruptedFetchError("stop requested before the download started")

    def result(manifest: Manifest, downloaded: int = 0, reused: int = 0) -> FetchResult:
        return FetchResult(
            phase="Ready",
            path=str(layout.target),
            commit=manifest.commit,
            digest=manifest.digest,
            total_bytes=manifest.total_bytes,
            file_count=len(manifest.files),
            downloaded_bytes=downloaded,
            reused_files=reused,
        )

    current = layout.current()
    if current is not None and _same_selection(current[1], snap):
        version, manifest = current
        log.info(
            "%s@%s is already published at %s; nothing to do", snap.repo_id, snap.commit[:12], layout.target
        )
        layout.ensure_published(version)
        tracker.add_bytes(snap.total_bytes, transferred=False)
        tracker.files_done = len(snap.files)
        return result(manifest)

    version = layout.version_for(snap.commit)
    staging = layout.prepare_staging(version, keep={f.path for f in snap.files})
    partial = PartialState(staging, snap.commit)
    current_store = None if current is None else (layout.open_store(current[0]), current[1])
    by_sha = {} if current is None else {(e.sha256, e.size): e for e in current[1].files}

    entries: dict[str, FileEntry] = {}
    items: list[TransferItem] = []
    reused = 0
    for f in snap.files:
        entry = partial.verified(f.path, f.size, f.sha256)
        if entry is None and (hit := _reusable(f, current_store, by_sha)) is not None:
            source, entry = hit
            layout.link_into_staging(source, staging, f.path)
            partial.record(entry)
            reused += 1
        if entry is not None:
            entries[f.path] = entry
            tracker.add_bytes(f.size, transferred=False)
            tracker.file_done()
        else:
            items.append(
                TransferItem(
                    path=f.path,
                    url=f.url,
                    dest=staging / f.path,
                    size=f.size,
                    blob_id=f.blob_id,
                    sha256=f.sha256,
                )
            )
    partial.flush()

    needed = 0
    for item in items:
        try:
            have = item.dest.stat().st_size
        except OSError:
            have = 0
        needed += item.size - have if have <= item.size else item.size
    free = layout.free_bytes()
    if needed > free:
        raise errors.InsufficientStorageError(
            f"{needed} more bytes are needed under {layout.root} but only {free} are free"
        )
    log.info(
        "%s@%s: %d files, %d bytes; %d already in place (%d reused from the published copy), %d to fetch",
        snap.repo_id,
        snap.commit[:12],
        len(snap.files),
        snap.total_bytes,
        len(entries),
        reused,
        len(items),
    )

    def on_file(v: VerifiedFile) -> None:
        partial.record(FileEntry(v.path, v.size, v.sha256))
        tracker.file_done()

    downloaded = 0
    if items:
        headers = hub.download_headers()
        with Transfer(
            headers=headers,
            concurrency=request.concurrency or settings.concurrency,
            chunk_size=settings.chunk_size,
            retry=RetryPolicy(settings.max_retries, settings.backoff_base, settings.backoff_max),
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            cancel=cancel,
            on_bytes=tracker.add_bytes,
            on_adjust=lambda n: tracker.add_bytes(n, transferred=False),
            on_file=on_file,
            stop_grace=settings.stop_grace,
            fsync=settings.fsync,
            min_bytes_per_second=settings.min_bytes_per_second,
            stall_window=settings.stall_window,
        ) as transfer:
            try:
                for v in transfer.fetch_all(items):
                    entries[v.path] = FileEntry(v.path, v.size, v.sha256)
                    downloaded += v.size
            finally:
                partial.flush()

    manifest = Manifest(
        repo=snap.repo_id,
        repo_type=snap.repo_type,
        revision=snap.revision,
        commit=snap.commit,
        files=[entries[f.path] for f in snap.files],
    )
    layout.publish(version, manifest, fsync=settings.fsync)
    log.info("published %s@%s at %s (%s)", snap.repo_id, snap.commit[:12], layout.target, manifest.digest)
    return result(manifest, downloaded, reused)


def _printable(text: str) -> str:
    """`text` as valid UTF-8 text (lone surrogates, e.g. of undecodable file names, escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _fit(text: str, room: int) -> str:
    """The longest prefix of `text` (plus "…" if cut) whose JSON string body has <= `room` bytes."""
    if _json_bytes(text) - 2 <= room:
        return text
    lo, hi = 0, len(text)  # binary search on characters: never splits a UTF-8 sequence
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_bytes(text[:mid] + "…") - 2 <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…" if _json_bytes(text[:lo] + "…") - 2 <= room else ""


def write_termination_message(path: Path, result: FetchResult) -> None:
    """Best effort: outside a pod the path usually does not exist or is not writable.

    The kubelet keeps at most 4096 bytes of it (more is cut, and a cut JSON loses the result), so
    `FetchResult.to_json` keeps it within `TERMINATION_MESSAGE_BYTES`.
    """
    try:
        with path.open("wb") as fh:
            fh.write(result.to_json().encode("utf-8"))
    except OSError as exc:
        log.debug("termination message not written to %s: %s", path, exc)


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
            result = FetchResult(phase="Failed", path=target, reason=exc.reason, message=exc.message)
            if isinstance(exc, errors.InterruptedFetchError):
                code = EXIT_SIGINT if received and received[0] == signal.SIGINT else EXIT_SIGTERM
            else:
                code = EXIT_TRANSIENT if exc.retryable else EXIT_PERMANENT
            log.error("%s", exc)
        except Exception as exc:
            log.exception("fetch failed unexpectedly")
            result = FetchResult(
                phase="Failed",
                path=target,
                reason=errors.DownloadFailedError.reason,
                message=f"{type(exc).__name__}: {exc}",
            )
            code = EXIT_TRANSIENT
    write_termination_message(settings.termination_log, result)
    return code
