"""Hub client of the fetcher: the ONLY module of the package that imports `huggingface_hub`.

Resolves a revision to a commit, lists the files at that commit (size, git blob id, LFS sha256),
applies include/exclude patterns, builds download URLs and auth headers, and translates
huggingface_hub / HTTP errors into `modeldepot.errors`.

The endpoint is named by a tenant, so everything it answers is untrusted input (docs/internals.md,
"Fetcher invocation"): `remote` validates the answers (commit ids, file names, sizes, hashes) and
`bounds` bounds every metadata call (connect and read timeouts on each request, a deadline over
the whole call, `metadata_timeout`, retries included; at most `max_pages` listing pages and no
page URL twice, at most `bounds.MAX_METADATA_BODY` bytes per answer); `max_entries` is counted
here. Each retry is told to the caller's listener (`retry.RetryNotice`) before its wait, so the
status shows it. huggingface_hub sends its requests through one shared `httpx2.Client` built by a factory;
`_install_session_hooks` wraps that factory with `bounds.with_bounds_hooks`, whose hooks apply
these bounds to requests made inside `HubClient._call` and leave other callers alone.

The token: `HF_TOKEN` (laptop use), else the file `HF_TOKEN_PATH` names (the operator mounts the
token Secret there), else huggingface_hub's own lookup (`hf auth login`). It is never logged.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx2
from huggingface_hub import HfApi, get_session, get_token, hf_hub_url, set_client_factory
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
from modeldepot.fetcher import remote
from modeldepot.fetcher.bounds import (
    Bounds,
    DeadlineExceeded,
    RetryableAnswer,
    run_bounded,
    with_bounds_hooks,
)
from modeldepot.fetcher.remote import RemoteFile, RepoSnapshot, clip
from modeldepot.fetcher.retry import RetryListener, RetryNotice, RetryPolicy
from modeldepot.vocabulary import Reason

if TYPE_CHECKING:
    from modeldepot.fetcher.settings import FetchSettings

__all__ = ["HubClient", "RemoteFile", "RepoSnapshot", "resolve_token", "translate_errors"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _no_listener(notice: RetryNotice | None) -> None:
    return None


_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")

_HOOKS_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _install_session_hooks() -> None:
    """Make huggingface_hub's shared client apply `bounds.Bounds` (once per process)."""
    global _HOOKS_INSTALLED
    with _HOOKS_LOCK:
        if not _HOOKS_INSTALLED:
            set_client_factory(_bounded_client_factory)
            _HOOKS_INSTALLED = True


def _bounded_client_factory() -> httpx2.Client:
    return with_bounds_hooks(default_client_factory())


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


# -- what the Hub says, validated by `remote` ------------------------------------------------------


def _listed(f: RepoFile) -> tuple[object, object, object, object]:
    """(path, size, blob id, LFS sha256) of a listed file, as the Hub said them."""
    return f.path, f.size, f.blob_id, f.lfs.sha256 if f.lfs is not None else None


def _check_listed_file(f: RepoFile) -> tuple[str, int, str, str | None]:
    """(path, size, blob id, LFS sha256) of a listed file, each validated (hex lower-cased)."""
    return remote.check_listed_file(*_listed(f))


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
    except RetryableAnswer as exc:
        why = Reason.RATE_LIMITED if exc.status == 429 else Reason.SERVER_ERROR
        message = f"the Hub answered HTTP {exc.status} for {repo_id}"
        raise errors.HubUnavailableError(message, retry_reason=why) from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise errors.UnauthorizedError(f"the Hub refused access to {repo_id} (HTTP {status})") from None
        if status is not None and (status >= 500 or status == 429):
            why = Reason.RATE_LIMITED if status == 429 else Reason.SERVER_ERROR
            message = f"the Hub answered HTTP {status} for {repo_id}"
            raise errors.HubUnavailableError(message, retry_reason=why) from None
        if status == 404:
            raise errors.RepoNotFoundError(f"{repo_id}@{revision} not found (HTTP 404)") from None
        raise errors.HubUnavailableError(
            f"unexpected Hub error for {repo_id}: HTTP {status}", retry_reason=Reason.HUB_UNAVAILABLE
        ) from None
    except OfflineModeIsEnabled:
        raise errors.InvalidSpecError("HF_HUB_OFFLINE is set; the fetcher needs the Hub") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as exc:
        raise errors.HubUnavailableError(f"cannot reach the Hub: {type(exc).__name__}: {exc}") from None
    except (ValueError, UnicodeError) as exc:
        # e.g. a body that is not JSON (a proxy's error page); JSONDecodeError is a ValueError
        raise errors.HubUnavailableError(
            f"unreadable answer from the Hub for {repo_id}: {type(exc).__name__}: {clip(str(exc))}",
            retry_reason=Reason.HUB_UNAVAILABLE,
        ) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise errors.InvalidSpecError(
            f"malformed answer from the Hub for {repo_id}: {type(exc).__name__}: {clip(str(exc))}"
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

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of huggingface_hub's client (its CA certificates loaded, verifying), for
        the downloads' client to share: loading the CAs costs ~75 ms of start-up per context. None
        if it cannot be found (a private attribute of httpx2): the downloads then load their own."""
        pool = getattr(getattr(get_session(), "_transport", None), "_pool", None)
        context = getattr(pool, "_ssl_context", None)
        if (
            isinstance(context, ssl.SSLContext)
            and context.verify_mode == ssl.CERT_REQUIRED
            and context.check_hostname
        ):
            return context
        return None

    def download_headers(self) -> dict[str, str]:
        """Headers for file downloads: user agent plus `authorization` if a token is configured."""
        headers: dict[str, str] = build_hf_headers(
            token=self._token(), library_name="modeldepot", library_version=__version__
        )
        # Raw bytes: hashes and Range offsets are over the stored content, never a gzip encoding.
        headers["accept-encoding"] = "identity"
        return headers

    def _call(self, repo_id: str, revision: str, fn: Callable[[], T], on_retry: RetryListener) -> T:
        """Run one metadata call with retries, all within `metadata_timeout`.

        A 429 or 5xx's `Retry-After` sets the wait (capped by `backoff_max`); `on_retry` hears of
        each retry before its wait and (None) of the success that follows retries.
        """
        deadline = time.monotonic() + self._metadata_timeout
        has_token = self.has_token
        policy = RetryPolicy(self._max_retries, self._backoff_base, self._backoff_max)
        attempt = 0
        while True:
            bounds = Bounds(self._connect_timeout, self._read_timeout, deadline, self._max_pages)
            try:
                with translate_errors(repo_id, revision, has_token=has_token):
                    result = self._bounded(fn, bounds)
            except errors.HubUnavailableError as exc:
                left = deadline - time.monotonic()
                if attempt >= self._max_retries or left <= 0:
                    raise
                delay = min(policy.delay(attempt, bounds.retry_after), left)
                attempt += 1
                log.warning("%s; retry %d in %.1fs", exc, attempt, delay)
                on_retry(RetryNotice(exc.retry_reason, attempt + 1, policy.max_attempts, delay, exc.message))
                self._sleep(delay)
                continue
            if attempt:
                on_retry(None)
            return result

    def _bounded(self, fn: Callable[[], T], bounds: Bounds) -> T:
        """`fn()` under `bounds` (`bounds.run_bounded`); HubUnavailable if not done by its deadline."""
        try:
            return run_bounded(fn, bounds)
        except DeadlineExceeded:
            raise errors.HubUnavailableError(
                f"the Hub did not answer within {self._metadata_timeout:g}s"
                f" (metadata_timeout; {self.endpoint or 'default endpoint'})",
                retry_reason=Reason.HUB_UNAVAILABLE,
            ) from None

    def resolve(
        self,
        repo_id: str,
        *,
        revision: str = "main",
        repo_type: str = "model",
        on_retry: RetryListener = _no_listener,
    ) -> str:
        """The commit sha that `revision` (branch, tag or commit) points to (validated, lower-case)."""
        remote.check_repo_type(repo_type)
        info = self._call(
            repo_id,
            revision,
            lambda: self._api.repo_info(repo_id, revision=revision, repo_type=repo_type, token=self._token()),
            on_retry,
        )
        return remote.check_resolved(info.sha, repo_id, revision)

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
        on_retry: RetryListener = _no_listener,
    ) -> RepoSnapshot:
        """Resolve `revision` and list the selected files at that commit; `on_retry` hears of each
        retry of either call (`retry.RetryNotice`) and of the success after one (None)."""
        commit = self.resolve(repo_id, revision=revision, repo_type=repo_type, on_retry=on_retry)
        tree = self._call(repo_id, revision, lambda: self._list_files(repo_id, commit, repo_type), on_retry)
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
        return remote.snapshot_of(
            repo_id,
            repo_type,
            revision,
            commit,
            (_listed(f) for f in selected),
            lambda path: hf_hub_url(
                repo_id, path, repo_type=repo_type, revision=commit, endpoint=self.endpoint
            ),
        )
