"""The words Model Depot writes on the wire, each defined once: `Phase` (status.phase and the
phase of every progress entry) and `Reason` (one-word CamelCase reasons of conditions, node
entries, the fetcher's result, Kubernetes Events and the `reason` label of metrics).

Both are StrEnums, so a member is the very string the API, `kubectl`, Argo CD and dashboards see.
Pure (stdlib only): the fetcher, the operator and `formatting` all import it.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """An artifact's lifecycle phase (docs/api.md); every phase but Deleting is also a target's."""

    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    READY = "Ready"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    DELETING = "Deleting"


class Reason(StrEnum):
    """Every reason Model Depot writes (docs/api.md, Failure reasons and Events)."""

    # failures: conditions, status.nodes[].reason, the fetcher's result (errors.py maps them)
    REPO_NOT_FOUND = "RepoNotFound"
    REVISION_NOT_FOUND = "RevisionNotFound"
    UNAUTHORIZED = "Unauthorized"
    ENTRY_NOT_FOUND = "EntryNotFound"
    NO_MATCHING_FILES = "NoMatchingFiles"
    INVALID_SPEC = "InvalidSpec"
    POLICY_VIOLATION = "PolicyViolation"
    PATH_CONFLICT = "PathConflict"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    INSUFFICIENT_STORAGE = "InsufficientStorage"
    NO_MATCHING_NODES = "NoMatchingNodes"
    STORAGE_NOT_FOUND = "StorageNotFound"
    TOKEN_SECRET_NOT_FOUND = "TokenSecretNotFound"
    HUB_UNAVAILABLE = "HubUnavailable"
    DOWNLOAD_FAILED = "DownloadFailed"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INTERRUPTED = "Interrupted"
    KUBERNETES_API_ERROR = "KubernetesApiError"
    ERROR = "Error"

    # a retry the fetcher waits for (progress.retry.reason, and the conditions while it waits);
    # HubUnavailable and DownloadFailed above name the other retries (an unreadable answer, a
    # broken transfer)
    HUB_UNREACHABLE = "HubUnreachable"
    RATE_LIMITED = "RateLimited"
    SERVER_ERROR = "ServerError"
    SLOW_TRANSFER = "SlowTransfer"

    # conditions while nothing failed (docs/api.md, Conditions)
    VERIFIED = "Verified"
    PENDING = "Pending"
    RETRYING = "Retrying"
    DOWNLOADING = "Downloading"
    SUSPENDED = "Suspended"
    DELETING = "Deleting"

    # Events
    DOWNLOAD_STARTED = "DownloadStarted"
    DOWNLOAD_CANCELLED = "DownloadCancelled"
    READY = "Ready"
    FAILED = "Failed"
    DELETED = "Deleted"
    STORAGE_GONE = "StorageGone"
    NODE_GONE = "NodeGone"
    CANCEL_TIMED_OUT = "CancelTimedOut"
    CLEANUP_FAILED = "CleanupFailed"
    CLEANUP_TIMED_OUT = "CleanupTimedOut"

    # metrics: a failure whose reason is not known
    UNKNOWN = "Unknown"
