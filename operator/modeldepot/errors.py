"""The one Model Depot error hierarchy.

Every failure the operator or the fetcher can report is a `ModelDepotError` subclass carrying a
one-word CamelCase `reason` (used verbatim in conditions, the fetcher's termination message and
progress) and `retryable` (transient: retry with backoff / exit code 1; permanent: exit code 2).
"""

from __future__ import annotations

from typing import ClassVar


class ModelDepotError(Exception):
    """Base class: a human `message` plus the class-level `reason` and `retryable`."""

    reason: ClassVar[str] = "Error"
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

    reason = "RepoNotFound"


class RevisionNotFoundError(ModelDepotError):
    """The branch, tag or commit does not exist in the repository."""

    reason = "RevisionNotFound"


class UnauthorizedError(ModelDepotError):
    """Gated or private repository and no valid token, or the token was rejected."""

    reason = "Unauthorized"


class EntryNotFoundError(ModelDepotError):
    """A file listed at the commit could not be found when downloading it."""

    reason = "EntryNotFound"


class NoMatchingFilesError(ModelDepotError):
    """The include/exclude patterns select no file of the repository."""

    reason = "NoMatchingFiles"


class InvalidSpecError(ModelDepotError):
    """Malformed input that the CRD schema could not catch (bad repo id, bad path, ...)."""

    reason = "InvalidSpec"


class PolicyViolationError(ModelDepotError):
    """The spec asks for something the cluster admin's policy (Helm values) does not allow."""

    reason = "PolicyViolation"


class PathConflictError(ModelDepotError):
    """The artifact's path is, contains, or lies inside a path another artifact owns."""

    reason = "PathConflict"


class ChecksumMismatchError(ModelDepotError):
    """Downloaded bytes do not match the Hub's sha256 (LFS) or git blob id."""

    reason = "ChecksumMismatch"


class InsufficientStorageError(ModelDepotError):
    """Not enough free space for the planned download, or ENOSPC while writing."""

    reason = "InsufficientStorage"


class NoMatchingNodesError(ModelDepotError):
    """No node matches a nodeLocal artifact's selector."""

    reason = "NoMatchingNodes"


class StorageNotFoundError(ModelDepotError):
    """The PersistentVolumeClaim named by the spec does not exist."""

    reason = "StorageNotFound"


class TokenSecretNotFoundError(ModelDepotError):
    """The Secret (or key) named by `tokenSecretRef` does not exist."""

    reason = "TokenSecretNotFound"


class HubUnavailableError(ModelDepotError):
    """The Hub (or mirror) is unreachable or answering 5xx/429; retried."""

    reason = "HubUnavailable"
    retryable = True


class DownloadFailedError(ModelDepotError):
    """A transfer failed for a transient reason after all in-process retries."""

    reason = "DownloadFailed"
    retryable = True


class BackoffLimitExceededError(ModelDepotError):
    """The fetch Job exhausted its retries."""

    reason = "BackoffLimitExceeded"


class DeadlineExceededError(ModelDepotError):
    """The fetch Job ran past its active deadline."""

    reason = "DeadlineExceeded"


class InterruptedFetchError(ModelDepotError):
    """The fetcher was asked to stop (SIGTERM/SIGINT); partial data is kept for resume."""

    reason = "Interrupted"
    retryable = True


class KubernetesApiError(ModelDepotError):
    """A Kubernetes API call failed; transient for throttling, conflicts, server and network errors."""

    reason = "KubernetesApiError"

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
        PolicyViolationError,
        PathConflictError,
        ChecksumMismatchError,
        InsufficientStorageError,
        NoMatchingNodesError,
        StorageNotFoundError,
        TokenSecretNotFoundError,
        HubUnavailableError,
        DownloadFailedError,
        BackoffLimitExceededError,
        DeadlineExceededError,
        InterruptedFetchError,
    )
}
