"""Status rendering: conditions, per-target progress entries, the node-local aggregate, the overall
phase and the Deleting patch. Pure: from the artifact and the decided targets to merge patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import errors
from ..formatting import compute_percent, format_bytes, progress_summary
from ..models import Condition, JobResult, ModelArtifact, Progress

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)

REASON_VERIFIED = "Verified"
REASON_NO_MATCHING_NODES = errors.NoMatchingNodesError.reason
REASON_DOWNLOAD_FAILED = errors.DownloadFailedError.reason
REASON_CHECKSUM_MISMATCH = errors.ChecksumMismatchError.reason


@dataclass(frozen=True)
class TargetState:
    """The decided state of one target (the claim, or one node)."""

    node: str | None
    phase: str
    reason: str | None = None
    message: str | None = None
    result: JobResult | None = None


def iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    existing: Sequence[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """A condition in API form; lastTransitionTime is kept when the status did not change."""
    old = next((c for c in existing if c.type == type_), None)
    transition = (
        old.last_transition_time if old and old.status == status and old.last_transition_time else None
    )
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or iso(now),
        "observedGeneration": generation,
    }


def recorded(artifact: ModelArtifact, node: str | None) -> JobResult | None:
    """A verified result this generation already recorded in status (its Job may be gone)."""
    st = artifact.status
    gen = artifact.generation
    if node is None:
        ready = st.condition(READY)
        if ready and ready.status == "True" and ready.observed_generation == gen and st.digest:
            return JobResult(
                phase="Ready",
                commit=st.resolved_revision,
                digest=st.digest,
                total_bytes=st.total_bytes,
                file_count=st.file_count,
            )
        return None
    entry = st.nodes.get(node)
    if entry and entry.phase == "Ready" and entry.observed_generation == gen and entry.digest:
        return JobResult(
            phase="Ready",
            commit=entry.resolved_revision,
            digest=entry.digest,
            total_bytes=entry.bytes_total,
            file_count=entry.files_total,
        )
    return None


def current_entry(artifact: ModelArtifact, node: str | None) -> Progress | None:
    entry: Progress | None = artifact.status.nodes.get(node) if node else artifact.status.progress
    if entry is not None and entry.observed_generation == artifact.generation:
        return entry
    return None


def _ready_entry(res: JobResult, generation: int) -> dict[str, Any]:
    return {
        "phase": "Ready",
        "percent": 100.0,
        "bytesDone": res.total_bytes,
        "bytesTotal": res.total_bytes,
        "filesDone": res.file_count,
        "filesTotal": res.file_count,
        "bytesPerSecond": None,
        "etaSeconds": None,
        "summary": progress_summary(phase="Ready", bytes_total=res.total_bytes),
        "resolvedRevision": res.commit,
        "observedGeneration": generation,
    }


def _stopped_entry(phase: str, current: Progress | None, generation: int) -> dict[str, Any]:
    """Pending, Failed or Suspended: keep the bytes reached this generation, else start blank."""
    if current is not None:
        summary = progress_summary(
            phase=phase,
            percent=current.percent,
            bytes_done=current.bytes_done,
            bytes_total=current.bytes_total,
        )
        return {
            "phase": phase,
            "bytesPerSecond": None,
            "etaSeconds": None,
            "summary": summary,
            "observedGeneration": generation,
        }
    blank = dict.fromkeys(("percent", "bytesDone", "bytesTotal", "filesDone", "filesTotal"))
    return {
        "phase": phase,
        **blank,
        "bytesPerSecond": None,
        "etaSeconds": None,
        "summary": phase,
        "resolvedRevision": None,
        "observedGeneration": generation,
    }


def entry_patch(
    artifact: ModelArtifact, target: TargetState, now: datetime, *, node_local: bool
) -> dict[str, Any] | None:
    """What the operator writes into a target's progress entry (None: leave it to the fetcher, or
    nothing would change)."""
    if target.phase == "Downloading":
        return None
    gen = artifact.generation
    if target.phase == "Ready":
        assert target.result is not None
        patch = _ready_entry(target.result, gen)
        if node_local:
            patch.update({"digest": target.result.digest, "reason": None, "message": None})
    else:
        patch = _stopped_entry(target.phase, current_entry(artifact, target.node), gen)
        if node_local:
            patch.update(
                {
                    "digest": None,
                    "reason": target.reason if target.phase == "Failed" else None,
                    "message": target.message if target.phase in ("Failed", "Suspended") else None,
                }
            )
    existing: Progress | None = (
        artifact.status.nodes.get(target.node) if target.node else artifact.status.progress
    )
    if existing is not None:
        have = existing.model_dump(by_alias=True)
        if all(have.get(k) == v for k, v in patch.items()):
            return None
    patch["updatedAt"] = iso(now)
    return patch


@dataclass(frozen=True)
class _Sample:
    """One node's contribution to the node-local aggregate."""

    percent: float = 0.0
    bytes_done: int = 0
    files_done: int = 0
    bytes_total: int | None = None
    files_total: int | None = None
    rate: float = 0.0
    eta: float | None = None
    revision: str | None = None
    updated: str | None = None
    ready: bool = False


def _sample(artifact: ModelArtifact, target: TargetState) -> _Sample:
    entry = current_entry(artifact, target.node)
    updated = entry.updated_at if entry is not None else None
    res = target.result
    if target.phase == "Ready" and res is not None:
        return _Sample(
            100.0, res.total_bytes or 0, res.file_count or 0, res.total_bytes, res.file_count,
            revision=res.commit, updated=updated, ready=True,
        )  # fmt: skip
    if entry is None:
        return _Sample()
    percent = (
        entry.percent if entry.percent is not None else compute_percent(entry.bytes_done, entry.bytes_total)
    )
    downloading = target.phase == "Downloading"
    return _Sample(
        percent or 0.0,
        entry.bytes_done or 0,
        entry.files_done or 0,
        entry.bytes_total,
        entry.files_total,
        rate=(entry.bytes_per_second or 0.0) if downloading else 0.0,
        eta=entry.eta_seconds if downloading else None,
        revision=entry.resolved_revision,
        updated=updated,
    )


def _scale(known: list[int], n: int) -> int | None:
    """Every node fetches the same files: nodes that have not resolved the list yet count as the mean."""
    if not known:
        return None
    return sum(known) if len(known) == n else round(sum(known) / len(known) * n)


def aggregate(
    artifact: ModelArtifact, targets: Sequence[TargetState], phase: str, now: datetime
) -> dict[str, Any]:
    """status.progress for nodeLocal storage: the sum over the target nodes."""
    samples = [_sample(artifact, t) for t in targets]
    n = len(samples)
    bytes_total = _scale([s.bytes_total for s in samples if s.bytes_total is not None], n)
    percent = round(sum(s.percent for s in samples) / n, 1) if n else None
    etas = [s.eta for s in samples if s.eta is not None]
    eta = max(etas) if etas else None
    rate = sum(s.rate for s in samples)
    bps = rate if rate > 0 else None
    revisions = [s.revision for s in samples if s.revision]
    updated = [s.updated for s in samples if s.updated]
    return {
        "phase": phase,
        "percent": percent,
        "bytesDone": sum(s.bytes_done for s in samples) if n else None,
        "bytesTotal": bytes_total,
        "filesDone": sum(s.files_done for s in samples) if n else None,
        "filesTotal": _scale([s.files_total for s in samples if s.files_total is not None], n),
        "bytesPerSecond": bps,
        "etaSeconds": eta,
        # the summary speaks of one copy (like the Size column); the byte fields sum the nodes
        "summary": progress_summary(
            phase=phase,
            percent=percent,
            bytes_total=round(bytes_total / n) if bytes_total is not None and n else None,
            bytes_per_second=bps,
            eta_seconds=eta,
            nodes_ready=sum(1 for s in samples if s.ready),
            nodes_total=n,
        ),
        "resolvedRevision": revisions[0] if revisions else None,
        "observedGeneration": artifact.generation,
        "updatedAt": max(updated) if updated else iso(now),
    }


def display_revision(requested: str, commit: str | None) -> str:
    """``main@53aa511``; just the short commit when the request was that commit."""
    if not commit:
        return requested
    short = commit[:7]
    return short if commit.startswith(requested) or requested.startswith(commit) else f"{requested}@{short}"


def overall(artifact: ModelArtifact, targets: Sequence[TargetState]) -> tuple[str, str, str]:
    """The artifact's phase, reason and message from its targets' states."""
    node_local = artifact.is_node_local

    def where(t: TargetState) -> str:
        return f"{t.node}: " if node_local and t.node else ""

    if not targets:
        if artifact.spec.suspend:
            return "Suspended", "Suspended", "spec.suspend is true"
        local = artifact.spec.storage.node_local
        assert local is not None
        return (
            "Failed",
            REASON_NO_MATCHING_NODES,
            f"no schedulable node matches nodeSelector {dict(local.node_selector or {})} "
            "and tolerates its taints",
        )
    if all(t.phase == "Ready" for t in targets):
        res = next(t.result for t in targets if t.result is not None)
        on = f" on {len(targets)} nodes" if node_local else ""
        return (
            "Ready",
            REASON_VERIFIED,
            f"{res.file_count} files, {format_bytes(res.total_bytes)}, {res.digest} at "
            f"{artifact.display_path}{on}",
        )
    failed = [t for t in targets if t.phase == "Failed"]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more nodes)" if len(failed) > 1 else ""
        return "Failed", first.reason or REASON_DOWNLOAD_FAILED, f"{where(first)}{first.message}{more}"
    if artifact.spec.suspend:
        return "Suspended", "Suspended", "spec.suspend is true; partial downloads are kept and resume later"
    downloading = [t for t in targets if t.phase == "Downloading"]
    if downloading:
        if node_local:
            ready = sum(1 for t in targets if t.phase == "Ready")
            return "Downloading", "Downloading", f"{ready}/{len(targets)} nodes ready"
        return "Downloading", "Downloading", downloading[0].message or "downloading"
    pending = next(t for t in targets if t.phase == "Pending")
    return "Pending", pending.reason or "Pending", f"{where(pending)}{pending.message}"


def deleting_patch(artifact: ModelArtifact, *, now: datetime, message: str) -> dict[str, Any]:
    """Status merge patch while the finalizer cleans up (phase Deleting)."""
    existing = artifact.status.conditions
    gen = artifact.generation
    return {
        "phase": "Deleting",
        "conditions": [
            condition(existing, READY, "False", "Deleting", message, generation=gen, now=now),
            condition(existing, RECONCILING, "True", "Deleting", message, generation=gen, now=now),
            condition(existing, STALLED, "False", "Deleting", message, generation=gen, now=now),
        ],
    }
