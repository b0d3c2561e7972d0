"""The one Model Depot error hierarchy.

Every failure the operator or the fetcher raises is a `ModelDepotError` subclass carrying a
`Reason` (used verbatim in conditions, the fetcher's termination message and progress) and
`retryable` (transient: retry with backoff / exit code 1; permanent: exit code 2). Reasons the
operator only observes (a missing claim, no matching node, a Job past its deadline) have no class:
they are `Reason` members written by the decisions.
"""

from __future__ import annotations

from typing import ClassVar

from .vocabulary import Reason


class ModelDepotError(Exception):
    """Base class: a human `message` plus the class-level `reason` and `retryable`."""

    reason: ClassVar[Reason] = Reason.ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    @property
    def is_retryable(self) -> bool:
        """Whether retrying can help; instances may know better than their class."""
        return self.retryable


class RepoNotFoundError(ModelDepotError):
    """The repository does not exist (or is invisible to us)."""

    reason = Reason.REPO_NOT_FOUND


class RevisionNotFoundError(ModelDepotError):
    """The branch, tag or commit does not exist in the repository."""

    reason = Reason.REVISION_NOT_FOUND


class UnauthorizedError(ModelDepotError):
    """Gated or private repository and no valid token, or the token was rejected."""

    reason = Reason.UNAUTHORIZED


class EntryNotFoundError(ModelDepotError):
    """A file listed at the commit could not be found when downloading it."""

    reason = Reason.ENTRY_NOT_FOUND


class NoMatchingFilesError(ModelDepotError):
    """The include/exclude patterns select no file of the repository."""

    reason = Reason.NO_MATCHING_FILES


class InvalidSpecError(ModelDepotError):
    """Malformed input that the CRD schema could not catch (bad repo id, bad path, ...)."""

    reason = Reason.INVALID_SPEC


class PathConflictError(ModelDepotError):
    """The artifact's path is, contains, or lies inside a path another artifact owns."""

    reason = Reason.PATH_CONFLICT


class ChecksumMismatchError(ModelDepotError):
    """Downloaded bytes do not match the Hub's sha256 (LFS) or git blob id."""

    reason = Reason.CHECKSUM_MISMATCH


class InsufficientStorageError(ModelDepotError):
    """Not enough free space for the planned download, or ENOSPC while writing."""

    reason = Reason.INSUFFICIENT_STORAGE


class HubUnavailableError(ModelDepotError):
    """The Hub (or mirror) is unreachable or answering 5xx/429; retried.

    `retry_reason` says which, for the status while the fetcher waits to try again:
    `HubUnreachable` (no connection: DNS, refused, reset; the default), `ServerError` (5xx),
    `RateLimited` (429) or `HubUnavailable` (anything else, such as an unreadable answer).
    """

    reason = Reason.HUB_UNAVAILABLE
    retryable = True

    def __init__(self, message: str, *, retry_reason: Reason = Reason.HUB_UNREACHABLE) -> None:
        super().__init__(message)
        self.retry_reason = retry_reason


class DownloadFailedError(ModelDepotError):
    """A transfer failed for a transient reason after all in-process retries."""

    reason = Reason.DOWNLOAD_FAILED
    retryable = True


class InterruptedFetchError(ModelDepotError):
    """The fetcher was asked to stop (SIGTERM/SIGINT); partial data is kept for resume."""

    reason = Reason.INTERRUPTED
    retryable = True


class KubernetesApiError(ModelDepotError):
    """A Kubernetes API call failed; transient for throttling, conflicts, server and network errors."""

    reason = Reason.KUBERNETES_API_ERROR

    def __init__(self, message: str, *, status: int | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient

    @property
    def is_retryable(self) -> bool:
        return self.transient

    @classmethod
    def from_status(cls, status: int | None, reason: str | None, body: object) -> KubernetesApiError:
        transient = status is None or status in (409, 429) or status >= 500
        detail = f"HTTP {status} {reason}" if status else f"connection error: {reason}"
        if body:
            detail += f": {str(body)[:500]}"
        return cls(detail, status=status, transient=transient)


ERRORS_BY_REASON: dict[str, type[ModelDepotError]] = {
    cls.reason: cls
    for cls in (
        RepoNotFoundError,
        RevisionNotFoundError,
        UnauthorizedError,
        EntryNotFoundError,
        NoMatchingFilesError,
        InvalidSpecError,
        PathConflictError,
        ChecksumMismatchError,
        InsufficientStorageError,
        HubUnavailableError,
        DownloadFailedError,
        InterruptedFetchError,
    )
}
