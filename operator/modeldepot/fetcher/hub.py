"""Hub client of the fetcher: the ONLY module of the package that imports `huggingface_hub`.

Resolves a revision to a commit, lists the files at that commit (size, git blob id, LFS sha256),
applies include/exclude patterns, builds download URLs and auth headers, and translates
huggingface_hub / HTTP errors into `modeldepot.errors`. The token comes from `HF_TOKEN` through
huggingface_hub's own lookup and is never logged.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi, get_token, hf_hub_url
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

from modeldepot import __version__, errors

log = logging.getLogger(__name__)

T = TypeVar("T")

REPO_TYPES = ("model", "dataset")


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
        hint = "" if has_token else "; if it is private, provide a token (HF_TOKEN) with access"
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


class HubClient:
    """Metadata access to one Hub endpoint (default: `HF_ENDPOINT` or huggingface.co)."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._api = HfApi(endpoint=self.endpoint, library_name="modeldepot", library_version=__version__)
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep

    @property
    def has_token(self) -> bool:
        return get_token() is not None

    def download_headers(self) -> dict[str, str]:
        """Headers for file downloads: user agent plus `authorization` if a token is configured."""
        headers: dict[str, str] = build_hf_headers(library_name="modeldepot", library_version=__version__)
        # Raw bytes: hashes and Range offsets are over the stored content, never a gzip encoding.
        headers["accept-encoding"] = "identity"
        return headers

    def _call(self, repo_id: str, revision: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                with translate_errors(repo_id, revision, has_token=self.has_token):
                    return fn()
            except errors.HubUnavailableError as exc:
                if attempt >= self._max_retries:
                    raise
                delay = min(self._backoff_max, self._backoff_base * 2**attempt) * (0.5 + random.random() / 2)
                log.warning("%s; retrying in %.1fs", exc, delay)
                self._sleep(delay)
                attempt += 1

    def resolve(self, repo_id: str, *, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha that `revision` (branch, tag or commit) points to."""
        if repo_type not in REPO_TYPES:
            raise errors.InvalidSpecError(
                f"unsupported repo type {repo_type!r}; expected one of {REPO_TYPES}"
            )
        info = self._call(
            repo_id, revision, lambda: self._api.repo_info(repo_id, revision=revision, repo_type=repo_type)
        )
        if not info.sha:
            raise errors.RevisionNotFoundError(f"the Hub returned no commit for {repo_id}@{revision}")
        return info.sha

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
        tree = self._call(
            repo_id,
            revision,
            lambda: [
                item
                for item in self._api.list_repo_tree(
                    repo_id, recursive=True, revision=commit, repo_type=repo_type
                )
                if isinstance(item, RepoFile)
            ],
        )
        selected: list[RepoFile] = list(
            filter_repo_objects(
                tree, allow_patterns=include or None, ignore_patterns=exclude or None, key=lambda f: f.path
            )
        )
        if not selected:
            what = f"include={include or []} exclude={exclude or []}"
            raise errors.NoMatchingFilesError(
                f"no file of {repo_id}@{commit[:12]} matches {what} ({len(tree)} files in the repo)"
            )
        files = tuple(
            sorted(
                (
                    RemoteFile(
                        path=f.path,
                        size=f.size,
                        blob_id=f.blob_id,
                        sha256=f.lfs.sha256 if f.lfs is not None else None,
                        url=hf_hub_url(
                            repo_id, f.path, repo_type=repo_type, revision=commit, endpoint=self.endpoint
                        ),
                    )
                    for f in selected
                ),
                key=lambda f: f.path.encode(),
            )
        )
        for f in files:
            _check_relative_path(f.path)
        return RepoSnapshot(
            repo_id=repo_id, repo_type=repo_type, revision=revision, commit=commit, files=files
        )


def _check_relative_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".modeldepot":
        raise errors.InvalidSpecError(f"refusing unsafe file path from the Hub: {path!r}")
