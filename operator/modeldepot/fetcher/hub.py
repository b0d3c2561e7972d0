"""Hub client of the fetcher: the ONLY module of the package that imports `huggingface_hub`.

Resolves a revision to a commit, lists the files at that commit (size, git blob id, LFS sha256),
applies include/exclude patterns, builds download URLs and auth headers, and translates
huggingface_hub / HTTP errors into `modeldepot.errors`.

The endpoint is named by a tenant, so everything it answers is untrusted input (docs/internals.md,
"Trust boundary"): the commit id must be 40 hex characters, file names must be safe relative paths
(`check_remote_path`), sizes and hashes well-formed, and every metadata call is bounded: connect
and read timeouts on each request, a deadline over the whole call (`metadata_timeout`, retries
included), at most `max_pages` listing pages and `max_entries` entries, no page URL twice, at most
`MAX_METADATA_BODY` bytes per answer. huggingface_hub sends its requests through one shared
`httpx2.Client` built by a factory; `_install_session_hooks` wraps that factory with event hooks
that apply these bounds to requests made inside `HubClient._call` and leave other callers alone.

The token: `HF_TOKEN` (laptop use), else the file `HF_TOKEN_PATH` names (the operator mounts the
token Secret there), else huggingface_hub's own lookup (`hf auth login`). It is never logged.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from huggingface_hub import HfApi, get_token, hf_hub_url, set_client_factory
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

# Public API of huggingface_hub.utils, re-exported lazily, which mypy cannot see.
from huggingface_hub.utils import build_hf_headers, filter_repo_objects  # type: ignore[attr-defined]

# The factory of huggingface_hub's shared client (event hooks for offline mode and request ids).
from huggingface_hub.utils._http import default_client_factory

from modeldepot import __version__, errors

if TYPE_CHECKING:
    from modeldepot.settings import FetchSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

REPO_TYPES = ("model", "dataset")

MAX_FILE_SIZE = 2**50
"""Largest file size the fetcher believes (1 PiB); a bigger one is a hostile or broken listing."""
MAX_METADATA_BODY = 64 << 20
"""Largest body of one metadata answer (a listing page, repo_info)."""
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_PATH_DEPTH = 64

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- bounds of metadata calls -----------------------------------------------------------------


class _DeadlineExceeded(Exception):
    """The metadata call ran past its deadline (not an httpx2 error: huggingface_hub must not retry it)."""


@dataclass
class _Bounds:
    """Limits of the metadata call running in this thread (see `_install_session_hooks`)."""

    connect: float
    read: float
    deadline: float
    """time.monotonic() after which no request starts and no body byte is accepted."""
    max_pages: int
    pages: int = 0
    page_urls: set[str] = field(default_factory=set)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _DeadlineExceeded()
        return left


_CURRENT = threading.local()
_HOOKS_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _bounds() -> _Bounds | None:
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

    def __init__(self, inner: Any, bounds: _Bounds) -> None:
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
            f"the Hub's file listing loops: its next page is one already read ({_clip(next_url)})"
        )


def _bounded_client_factory() -> httpx2.Client:
    client = default_client_factory()
    hooks = client.event_hooks
    client.event_hooks = {
        "request": [*hooks.get("request", []), _on_request],
        "response": [*hooks.get("response", []), _on_response],
    }
    return client


def _install_session_hooks() -> None:
    """Make huggingface_hub's shared client apply `_Bounds` (once per process)."""
    global _HOOKS_INSTALLED
    with _HOOKS_LOCK:
        if not _HOOKS_INSTALLED:
            set_client_factory(_bounded_client_factory)
            _HOOKS_INSTALLED = True


# -- token --------------------------------------------------------------------------------------


def resolve_token() -> str | None:
    """The token to send: `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else huggingface_hub's lookup.

    Read at each call (the Secret file may be updated in place). Raises `UnauthorizedError` for a
    token file that exists but cannot be read, or a token an HTTP header cannot carry; the token
    itself never appears in a message or log.
    """
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        path = os.environ.get("HF_TOKEN_PATH")
        if path:
            try:
                token = Path(path).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                log.warning("HF_TOKEN_PATH names %s, which does not exist; going without a token", path)
                return None
            except (OSError, UnicodeDecodeError) as exc:
                raise errors.UnauthorizedError(
                    f"cannot read the token file {path} (HF_TOKEN_PATH): {type(exc).__name__}"
                ) from None
        else:
            token = (get_token() or "").strip()
    if not token:
        return None
    if not _TOKEN_CHARS.fullmatch(token):
        raise errors.UnauthorizedError(
            "the token contains whitespace or characters an HTTP header cannot carry"
        )
    return token


# -- validation of what the Hub says ------------------------------------------------------------


def check_commit(sha: object, what: str) -> str:
    """The commit id the Hub returned, lower-cased, if it is exactly 40 hex characters."""
    if not isinstance(sha, str) or not _HEX40.fullmatch(sha):
        raise errors.InvalidSpecError(f"the Hub returned an invalid commit id for {what}: {_clip(repr(sha))}")
    return sha.lower()


def check_remote_path(path: object) -> str:
    """A file path from the Hub, if it is safe to create below the model directory.

    Refused (permanent `InvalidSpecError`): not a string, empty, absolute, a `""`/`.`/`..`
    component, a first component `.modeldepot`, NUL or any other C0 control character or DEL, not
    encodable as UTF-8, a component over 255 UTF-8 bytes, over 4096 bytes or 64 components.
    """

    def refuse(why: str) -> errors.InvalidSpecError:
        return errors.InvalidSpecError(f"refusing unsafe file path from the Hub ({why}): {_clip(repr(path))}")

    if not isinstance(path, str):
        raise refuse("not a string")
    if not path:
        raise refuse("empty")
    if _CONTROL.search(path):
        raise refuse("control character")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise refuse("not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise refuse(f"longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise refuse("absolute")
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise refuse(f"deeper than {MAX_PATH_DEPTH} components")
    if any(p in ("", ".", "..") for p in parts):
        raise refuse("empty, '.' or '..' component")
    if parts[0] == ".modeldepot":
        raise refuse("reserved .modeldepot directory")
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        raise refuse(f"a component longer than {MAX_NAME_BYTES} bytes")
    return path


# Kept for existing callers.
_check_relative_path = check_remote_path


def _check_listed_file(f: RepoFile) -> tuple[str, int, str, str | None]:
    """(path, size, blob id, LFS sha256) of a listed file, each validated (hex lower-cased)."""
    path = check_remote_path(f.path)
    size = f.size
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise errors.InvalidSpecError(
            f"the Hub listed an invalid size for {_clip(repr(path))}: {_clip(repr(size))}"
        )
    blob_id = f.blob_id
    if not isinstance(blob_id, str) or not (_HEX40.fullmatch(blob_id) or _HEX64.fullmatch(blob_id)):
        raise errors.InvalidSpecError(
            f"the Hub listed an invalid blob id for {_clip(repr(path))}: {_clip(repr(blob_id))}"
        )
    sha256 = f.lfs.sha256 if f.lfs is not None else None
    if sha256 is not None and (not isinstance(sha256, str) or not _HEX64.fullmatch(sha256)):
        raise errors.InvalidSpecError(
            f"the Hub listed an invalid sha256 for {_clip(repr(path))}: {_clip(repr(sha256))}"
        )
    return path, size, blob_id.lower(), None if sha256 is None else sha256.lower()


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository at the resolved commit."""

    path: str
    size: int
    blob_id: str
    """git object id: sha1 of `b"blob <size>\\0" + content`."""
    sha256: str | None
    """LFS sha256 when the file is stored in LFS/Xet, else None (verify against `blob_id`)."""
    url: str

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class RepoSnapshot:
    """What to fetch: the repo, the commit the revision resolved to and the selected files."""

    repo_id: str
    repo_type: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


@contextmanager
def translate_errors(repo_id: str, revision: str, *, has_token: bool) -> Iterator[None]:
    """Map huggingface_hub and transport errors to `modeldepot.errors` (most specific first)."""
    try:
        yield
    except HFValidationError as exc:
        raise errors.InvalidSpecError(f"invalid repository id or revision: {exc}") from None
    except GatedRepoError:
        raise errors.UnauthorizedError(
            f"{repo_id} is gated: accept its conditions on the Hub and use a token of an authorized account"
        ) from None
    except DisabledRepoError:
        raise errors.RepoNotFoundError(f"access to {repo_id} is disabled on the Hub") from None
    except RepositoryNotFoundError:
        # The Hub answers alike (401/404 RepoNotFound) for missing and for private repos.
        hint = (
            "" if has_token else "; if it is private, provide a token (tokenSecretRef, HF_TOKEN) with access"
        )
        raise errors.RepoNotFoundError(f"repository {repo_id} not found{hint}") from None
    except RevisionNotFoundError:
        raise errors.RevisionNotFoundError(f"revision {revision!r} not found in {repo_id}") from None
    except EntryNotFoundError as exc:
        raise errors.EntryNotFoundError(f"entry not found in {repo_id}@{revision}: {exc}") from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise errors.UnauthorizedError(f"the Hub refused access to {repo_id} (HTTP {status})") from None
        if status is not None and (status >= 500 or status == 429):
            raise errors.HubUnavailableError(f"the Hub answered HTTP {status} for {repo_id}") from None
        if status == 404:
            raise errors.RepoNotFoundError(f"{repo_id}@{revision} not found (HTTP 404)") from None
        raise errors.HubUnavailableError(f"unexpected Hub error for {repo_id}: HTTP {status}") from None
    except OfflineModeIsEnabled:
        raise errors.InvalidSpecError("HF_HUB_OFFLINE is set; the fetcher needs the Hub") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as exc:
        raise errors.HubUnavailableError(f"cannot reach the Hub: {type(exc).__name__}: {exc}") from None
    except (ValueError, UnicodeError) as exc:
        # e.g. a body that is not JSON (a proxy's error page); JSONDecodeError is a ValueError
        raise errors.HubUnavailableError(
            f"unreadable answer from the Hub for {repo_id}: {type(exc).__name__}: {_clip(str(exc))}"
        ) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise errors.InvalidSpecError(
            f"malformed answer from the Hub for {repo_id}: {type(exc).__name__}: {_clip(str(exc))}"
        ) from None


class HubClient:
    """Metadata access to one Hub endpoint (default: `HF_ENDPOINT` or huggingface.co).

    Every metadata call (`resolve`, the listing in `snapshot`) ends within about `metadata_timeout`
    seconds, retries included, each request bounded by `connect_timeout`/`read_timeout`; on expiry
    it raises `HubUnavailableError` (transient). A listing of more than `max_pages` pages or
    `max_entries` entries, or one whose next page is a page already read, is `InvalidSpecError`.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        metadata_timeout: float = 120.0,
        max_pages: int = 1000,
        max_entries: int = 1_000_000,
    ) -> None:
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._api = HfApi(endpoint=self.endpoint, library_name="modeldepot", library_version=__version__)
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._metadata_timeout = metadata_timeout
        self._max_pages = max_pages
        self._max_entries = max_entries
        _install_session_hooks()

    @classmethod
    def from_settings(cls, settings: FetchSettings, *, endpoint: str | None = None) -> HubClient:
        return cls(
            endpoint=endpoint,
            max_retries=settings.max_retries,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            metadata_timeout=settings.metadata_timeout,
            max_pages=settings.max_tree_pages,
            max_entries=settings.max_tree_entries,
        )

    @property
    def has_token(self) -> bool:
        return resolve_token() is not None

    def _token(self) -> str | bool:
        """For huggingface_hub calls: the token, or False (send none; do not look elsewhere)."""
        return resolve_token() or False

    def download_headers(self) -> dict[str, str]:
        """Headers for file downloads: user agent plus `authorization` if a token is configured."""
        headers: dict[str, str] = build_hf_headers(
            token=self._token(), library_name="modeldepot", library_version=__version__
        )
        # Raw bytes: hashes and Range offsets are over the stored content, never a gzip encoding.
        headers["accept-encoding"] = "identity"
        return headers

    def _call(self, repo_id: str, revision: str, fn: Callable[[], T]) -> T:
        """Run one metadata call with retries, all within `metadata_timeout`."""
        deadline = time.monotonic() + self._metadata_timeout
        has_token = self.has_token
        attempt = 0
        while True:
            try:
                with translate_errors(repo_id, revision, has_token=has_token):
                    return self._bounded(fn, deadline)
            except errors.HubUnavailableError as exc:
                left = deadline - time.monotonic()
                if attempt >= self._max_retries or left <= 0:
                    raise
                delay = min(self._backoff_max, self._backoff_base * 2**attempt) * (0.5 + random.random() / 2)
                log.warning("%s; retrying in %.1fs", exc, min(delay, left))
                self._sleep(min(delay, left))
                attempt += 1

    def _bounded(self, fn: Callable[[], T], deadline: float) -> T:
        """`fn()` in a worker thread under `_Bounds`; HubUnavailable if it is not done by `deadline`.

        The hooks make the worker's requests end by themselves at the deadline (timeouts, no new
        request, no more body bytes); the thread is the backstop for waits the hooks cannot see
        (huggingface_hub's own backoff sleeps, a server trickling response headers). A worker left
        behind is a daemon thread whose next request or body chunk fails.
        """
        outcome: list[Any] = []
        failure: list[BaseException] = []
        bounds = _Bounds(self._connect_timeout, self._read_timeout, deadline, self._max_pages)

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
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive() or (failure and isinstance(failure[0], _DeadlineExceeded)):
            raise errors.HubUnavailableError(
                f"the Hub did not answer within {self._metadata_timeout:g}s"
                f" (metadata_timeout; {self.endpoint or 'default endpoint'})"
            )
        if failure:
            raise failure[0]
        return outcome[0]  # type: ignore[no-any-return]

    def resolve(self, repo_id: str, *, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha that `revision` (branch, tag or commit) points to (validated, lower-case)."""
        if repo_type not in REPO_TYPES:
            raise errors.InvalidSpecError(
                f"unsupported repo type {repo_type!r}; expected one of {REPO_TYPES}"
            )
        info = self._call(
            repo_id,
            revision,
            lambda: self._api.repo_info(repo_id, revision=revision, repo_type=repo_type, token=self._token()),
        )
        commit = check_commit(info.sha, f"{repo_id}@{revision}")
        if _HEX40.fullmatch(revision) and commit != revision.lower():
            raise errors.InvalidSpecError(
                f"the Hub answered commit {commit} for {repo_id}@{revision}, which names another commit"
            )
        return commit

    def _list_files(self, repo_id: str, commit: str, repo_type: str) -> list[RepoFile]:
        files: list[RepoFile] = []
        listing = self._api.list_repo_tree(
            repo_id, recursive=True, revision=commit, repo_type=repo_type, token=self._token()
        )
        for seen, item in enumerate(listing, start=1):
            if seen > self._max_entries:
                raise errors.InvalidSpecError(
                    f"the Hub lists more than {self._max_entries} entries for {repo_id}@{commit[:12]};"
                    " refusing it (max_tree_entries)"
                )
            if isinstance(item, RepoFile):
                files.append(item)
        return files

    def snapshot(
        self,
        repo_id: str,
        *,
        revision: str = "main",
        repo_type: str = "model",
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> RepoSnapshot:
        """Resolve `revision` and list the selected files at that commit."""
        commit = self.resolve(repo_id, revision=revision, repo_type=repo_type)
        tree = self._call(repo_id, revision, lambda: self._list_files(repo_id, commit, repo_type))
        selected: list[RepoFile] = list(
            filter_repo_objects(
                tree,
                allow_patterns=include or None,
                ignore_patterns=exclude or None,
                key=lambda f: f.path if isinstance(f.path, str) else "",
            )
        )
        if not selected:
            what = f"include={include or []} exclude={exclude or []}"
            raise errors.NoMatchingFilesError(
                f"no file of {repo_id}@{commit[:12]} matches {what} ({len(tree)} files in the repo)"
            )
        checked = [_check_listed_file(f) for f in selected]
        _check_distinct(p for p, *_ in checked)
        files = tuple(
            sorted(
                (
                    RemoteFile(
                        path=path,
                        size=size,
                        blob_id=blob_id,
                        sha256=sha256,
                        url=hf_hub_url(
                            repo_id, path, repo_type=repo_type, revision=commit, endpoint=self.endpoint
                        ),
                    )
                    for path, size, blob_id, sha256 in checked
                ),
                key=lambda f: f.path.encode(),
            )
        )
        return RepoSnapshot(
            repo_id=repo_id, repo_type=repo_type, revision=revision, commit=commit, files=files
        )


def _check_distinct(paths: Iterator[str] | Any) -> None:
    """No path twice, and no file where another file needs a directory (`a` and `a/b`)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for path in paths:
        if path in files or path in dirs:
            raise errors.InvalidSpecError(f"the Hub lists {_clip(repr(path))} twice or as file and directory")
        files.add(path)
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                raise errors.InvalidSpecError(
                    f"the Hub lists {_clip(repr(parent))} both as a file and as a directory"
                )
            dirs.add(parent)
