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


def entry_patch(
    artifact: ModelArtifact, target: TargetState, now: datetime, *, node_local: bool
) -> dict[str, Any] | None:
    """What the operator writes into a target's progress entry (None: leave it to the fetcher)."""
    gen = artifact.generation
    current = current_entry(artifact, target.node)
    patch: dict[str, Any]
    if target.phase == "Downloading":
        return None
    if target.phase == "Ready":
        res = target.result
        assert res is not None
        patch = {
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
            "observedGeneration": gen,
        }
        if node_local:
            patch.update({"digest": res.digest, "reason": None, "message": None})
    elif current is not None:
        patch = {
            "phase": target.phase,
            "bytesPerSecond": None,
            "etaSeconds": None,
            "summary": progress_summary(
                phase=target.phase,
                percent=current.percent,
                bytes_done=current.bytes_done,
                bytes_total=current.bytes_total,
            ),
            "observedGeneration": gen,
        }
    else:
        patch = {
            "phase": target.phase,
            "percent": None,
            "bytesDone": None,
            "bytesTotal": None,
            "filesDone": None,
            "filesTotal": None,
            "bytesPerSecond": None,
            "etaSeconds": None,
            "summary": target.phase,
            "resolvedRevision": None,
            "observedGeneration": gen,
        }
    if node_local and target.phase != "Ready":
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


def aggregate(
    artifact: ModelArtifact, targets: Sequence[TargetState], phase: str, now: datetime
) -> dict[str, Any]:
    """status.progress for nodeLocal storage: the sum over the target nodes."""
    gen = artifact.generation
    n = len(targets)
    percents: list[float] = []
    done = files_done = 0
    totals: list[int] = []
    file_totals: list[int] = []
    rate = 0.0
    etas: list[float] = []
    revisions: list[str] = []
    updated: list[str] = []
    ready = 0
    for t in targets:
        entry = current_entry(artifact, t.node)
        if t.phase == "Ready" and t.result is not None:
            ready += 1
            percents.append(100.0)
            done += t.result.total_bytes or 0
            files_done += t.result.file_count or 0
            if t.result.total_bytes is not None:
                totals.append(t.result.total_bytes)
            if t.result.file_count is not None:
                file_totals.append(t.result.file_count)
            if t.result.commit:
                revisions.append(t.result.commit)
        elif entry is not None:
            pct = (
                entry.percent
                if entry.percent is not None
                else compute_percent(entry.bytes_done, entry.bytes_total)
            )
            percents.append(pct or 0.0)
            done += entry.bytes_done or 0
            files_done += entry.files_done or 0
            if entry.bytes_total is not None:
                totals.append(entry.bytes_total)
            if entry.files_total is not None:
                file_totals.append(entry.files_total)
            if t.phase == "Downloading":
                rate += entry.bytes_per_second or 0.0
                if entry.eta_seconds is not None:
                    etas.append(entry.eta_seconds)
            if entry.resolved_revision:
                revisions.append(entry.resolved_revision)
        else:
            percents.append(0.0)
        if entry is not None and entry.updated_at:
            updated.append(entry.updated_at)

    def _scale(known: list[int]) -> int | None:
        # every node fetches the same files: nodes that have not resolved the list yet count as the mean
        if not known:
            return None
        return sum(known) if len(known) == n else round(sum(known) / len(known) * n)

    bytes_total = _scale(totals)
    percent = round(sum(percents) / n, 1) if n else None
    eta = max(etas) if etas else None
    bps = rate if rate > 0 else None
    return {
        "phase": phase,
        "percent": percent,
        "bytesDone": done if n else None,
        "bytesTotal": bytes_total,
        "filesDone": files_done if n else None,
        "filesTotal": _scale(file_totals),
        "bytesPerSecond": bps,
        "etaSeconds": eta,
        # the summary speaks of one copy (like the Size column); the byte fields sum the nodes
        "summary": progress_summary(
            phase=phase,
            percent=percent,
            bytes_total=round(bytes_total / n) if bytes_total is not None and n else None,
            bytes_per_second=bps,
            eta_seconds=eta,
            nodes_ready=ready,
            nodes_total=n,
        ),
        "resolvedRevision": revisions[0] if revisions else None,
        "observedGeneration": gen,
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
