"""Status rendering: conditions, per-target progress entries, the node-local aggregate, the overall
phase and the Deleting status. Pure: from the artifact and the decided targets to the models of
models.py, which `models.status_merge_patch` and `models.node_apply` serialize.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..formatting import SUMMARY_MESSAGE_CHARS, compute_percent, format_bytes, progress_summary, retry_phrase
from ..models import (
    Condition,
    ConditionStatus,
    JobResult,
    ModelArtifact,
    ModelArtifactStatus,
    NodeStatus,
    Progress,
    RetryStatus,
)
from ..vocabulary import Phase, Reason

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# what a progress entry keeps of the bytes reached this generation while the target waits
_COUNTERS = (
    "percent", "bytes_done", "bytes_total", "files_done", "files_total", "resolved_revision",
    "bytes_reused", "bytes_adopted",
)  # fmt: skip


@dataclass(frozen=True)
class TargetState:
    """The decided state of one target (the claim, or one node)."""

    node: str | None
    phase: Phase
    reason: str | None = None
    message: str | None = None
    result: JobResult | None = None


def iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_message(retry: RetryStatus) -> str:
    """A fetcher's retry in a condition message: ``retrying at <RFC 3339> (attempt 2/5): <error>``
    (a time, not a countdown: the message stays the same while the retry waits)."""
    return retry_phrase(
        attempt=retry.attempt,
        max_attempts=retry.max_attempts,
        message=retry.message,
        at=retry.next_attempt_at,
    )


def _seconds_until(at: str, now: datetime) -> float | None:
    try:
        return (datetime.fromisoformat(at.replace("Z", "+00:00")) - now).total_seconds()
    except ValueError:
        return None


def condition(
    existing: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> Condition:
    """A condition; lastTransitionTime is kept when the status did not change."""
    old = next((c for c in existing if c.type == type_), None)
    transition = (
        old.last_transition_time if old and old.status == status and old.last_transition_time else None
    )
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition or iso(now),
        observed_generation=generation,
    )


def recorded(artifact: ModelArtifact, node: str | None) -> JobResult | None:
    """A verified result this generation already recorded in status (its Job may be gone)."""
    st = artifact.status
    gen = artifact.generation
    if node is None:
        ready = st.condition(READY)
        if ready and ready.status == "True" and ready.observed_generation == gen and st.digest:
            return JobResult(
                phase=Phase.READY,
                commit=st.resolved_revision,
                digest=st.digest,
                total_bytes=st.total_bytes,
                file_count=st.file_count,
            )
        return None
    entry = st.node(node)
    if entry and entry.phase == Phase.READY and entry.observed_generation == gen and entry.digest:
        return JobResult(
            phase=Phase.READY,
            commit=entry.resolved_revision,
            digest=entry.digest,
            total_bytes=entry.bytes_total,
            file_count=entry.files_total,
        )
    return None


def current_entry(artifact: ModelArtifact, node: str | None) -> Progress | None:
    """The target's progress entry if it belongs to this generation."""
    entry: Progress | None = artifact.status.node(node) if node else artifact.status.progress
    if entry is not None and entry.observed_generation == artifact.generation:
        return entry
    return None


def _decided(target: TargetState, current: Progress | None, generation: int) -> dict[str, Any]:
    """The progress fields the operator decides for a target that is not downloading (None: no
    value, the field is removed).

    Ready: the verified copy's numbers. Pending, Failed or Suspended: the phase and summary; the
    bytes reached this generation are not named (they stay as the fetcher left them), and without
    any the entry starts blank.
    """
    fields: dict[str, Any] = {
        "bytes_per_second": None,
        "eta_seconds": None,
        "retry": None,  # a target that is not downloading waits for no retry of the fetcher's
        "observed_generation": generation,
    }
    if target.phase == Phase.READY:
        res = target.result
        assert res is not None
        return fields | {
            "phase": Phase.READY,
            "percent": 100.0,
            "bytes_done": res.total_bytes,
            "bytes_total": res.total_bytes,
            "files_done": res.file_count,
            "files_total": res.file_count,
            "summary": progress_summary(phase=Phase.READY, bytes_total=res.total_bytes),
            "resolved_revision": res.commit,
        }
    if current is None:
        return fields | dict.fromkeys(_COUNTERS) | {"phase": target.phase, "summary": target.phase}
    summary = progress_summary(
        phase=target.phase,
        percent=current.percent,
        bytes_done=current.bytes_done,
        bytes_total=current.bytes_total,
    )
    return fields | {"phase": target.phase, "summary": summary}


def _unchanged(existing: Progress | None, fields: dict[str, Any]) -> bool:
    return existing is not None and all(getattr(existing, k) == v for k, v in fields.items())


def claim_progress(artifact: ModelArtifact, target: TargetState, now: datetime) -> Progress | None:
    """What the operator merges into status.progress for the claim (None: leave it to the
    fetcher, or nothing would change)."""
    if target.phase == Phase.DOWNLOADING:
        return None
    fields = _decided(target, current_entry(artifact, None), artifact.generation)
    if _unchanged(artifact.status.progress, fields):
        return None
    return Progress(**fields, updated_at=iso(now))


def node_entry(artifact: ModelArtifact, target: TargetState, now: datetime) -> NodeStatus | None:
    """The whole status.nodes entry the operator applies for a node (None: leave it to the fetcher,
    or nothing would change). Whole, because an apply removes what its manager no longer names:
    the bytes kept from this generation are named again."""
    if target.phase == Phase.DOWNLOADING:
        return None
    assert target.node is not None
    current = current_entry(artifact, target.node)
    kept = {k: getattr(current, k) for k in _COUNTERS} if current is not None else {}
    fields = kept | _decided(target, current, artifact.generation)
    res = target.result if target.phase == Phase.READY else None
    fields |= {
        "digest": res.digest if res is not None else None,
        "reason": target.reason if target.phase == Phase.FAILED else None,
        "message": target.message if target.phase in (Phase.FAILED, Phase.SUSPENDED) else None,
    }
    if _unchanged(artifact.status.node(target.node), fields):
        return None
    return NodeStatus(name=target.node, **fields, updated_at=iso(now))


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
    retry: RetryStatus | None = None
    reused: int = 0
    adopted: int = 0


def _sample(artifact: ModelArtifact, target: TargetState) -> _Sample:
    entry = current_entry(artifact, target.node)
    updated = entry.updated_at if entry is not None else None
    res = target.result
    if target.phase == Phase.READY and res is not None:
        return _Sample(
            100.0, res.total_bytes or 0, res.file_count or 0, res.total_bytes, res.file_count,
            revision=res.commit, updated=updated, ready=True,
            reused=res.reused_bytes or 0, adopted=res.adopted_bytes or 0,
        )  # fmt: skip
    if entry is None:
        return _Sample()
    percent = (
        entry.percent if entry.percent is not None else compute_percent(entry.bytes_done, entry.bytes_total)
    )
    downloading = target.phase == Phase.DOWNLOADING
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
        retry=entry.retry if downloading and entry.retry is not None else None,
        reused=entry.bytes_reused or 0,
        adopted=entry.bytes_adopted or 0,
    )


def _scale(known: list[int], n: int) -> int | None:
    """Every node fetches the same files: nodes that have not resolved the list yet count as the mean."""
    if not known:
        return None
    return sum(known) if len(known) == n else round(sum(known) / len(known) * n)


def _fleet_retry(targets: Sequence[TargetState], samples: Sequence[_Sample]) -> RetryStatus | None:
    """The first node's retry, its message naming the node (the aggregate shows one)."""
    for t, s in zip(targets, samples, strict=True):
        if s.retry is not None:
            return s.retry.model_copy(update={"message": f"{t.node}: {s.retry.message}"})
    return None


def aggregate(
    artifact: ModelArtifact, targets: Sequence[TargetState], phase: Phase, now: datetime
) -> Progress:
    """status.progress for nodeLocal storage: the sum over the target nodes (every field named, so
    it replaces the previous aggregate whole), and the first node's retry while one waits."""
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
    retry = _fleet_retry(targets, samples)
    retrying = None
    if retry is not None:
        wait = _seconds_until(retry.next_attempt_at, now)
        retrying = retry_phrase(
            attempt=retry.attempt,
            max_attempts=retry.max_attempts,
            message=retry.message,
            wait=wait,
            at=retry.next_attempt_at,
            clip=SUMMARY_MESSAGE_CHARS,
        )
    return Progress(
        phase=phase,
        percent=percent,
        bytes_done=sum(s.bytes_done for s in samples) if n else None,
        bytes_total=bytes_total,
        files_done=sum(s.files_done for s in samples) if n else None,
        files_total=_scale([s.files_total for s in samples if s.files_total is not None], n),
        bytes_per_second=bps,
        eta_seconds=eta,
        # the summary speaks of one copy (like the Size column); the byte fields sum the nodes
        summary=progress_summary(
            phase=phase,
            percent=percent,
            bytes_total=round(bytes_total / n) if bytes_total is not None and n else None,
            bytes_per_second=bps,
            eta_seconds=eta,
            nodes_ready=sum(1 for s in samples if s.ready),
            nodes_total=n,
            retrying=retrying,
        ),
        resolved_revision=revisions[0] if revisions else None,
        observed_generation=artifact.generation,
        updated_at=max(updated) if updated else iso(now),
        retry=retry,
        bytes_reused=sum(s.reused for s in samples) or None,
        bytes_adopted=sum(s.adopted for s in samples) or None,
    )


def display_revision(requested: str, commit: str | None) -> str:
    """``main@53aa511``; just the short commit when the request was that commit."""
    if not commit:
        return requested
    short = commit[:7]
    return short if commit.startswith(requested) or requested.startswith(commit) else f"{requested}@{short}"


Verdict = tuple[Phase, str, str]
"""The artifact's phase, the reason of its conditions and their message."""


def overall(artifact: ModelArtifact, targets: Sequence[TargetState]) -> Verdict:
    """The artifact's phase, reason and message from its targets' states."""
    node_local = artifact.is_node_local

    def where(t: TargetState) -> str:
        return f"{t.node}: " if node_local and t.node else ""

    if not targets:
        if artifact.spec.suspend:
            return Phase.SUSPENDED, Reason.SUSPENDED, "spec.suspend is true"
        local = artifact.spec.storage.node_local
        assert local is not None
        return (
            Phase.FAILED,
            Reason.NO_MATCHING_NODES,
            f"no schedulable node matches nodeSelector {dict(local.node_selector or {})} "
            "and tolerates its taints",
        )
    if all(t.phase == Phase.READY for t in targets):
        res = next(t.result for t in targets if t.result is not None)
        on = f" on {len(targets)} nodes" if node_local else ""
        return (
            Phase.READY,
            Reason.VERIFIED,
            f"{res.file_count} files, {format_bytes(res.total_bytes)}, {res.digest} at "
            f"{artifact.display_path}{on}",
        )
    failed = [t for t in targets if t.phase == Phase.FAILED]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more nodes)" if len(failed) > 1 else ""
        return Phase.FAILED, first.reason or Reason.DOWNLOAD_FAILED, f"{where(first)}{first.message}{more}"
    if artifact.spec.suspend:
        message = "spec.suspend is true; partial downloads are kept and resume later"
        return Phase.SUSPENDED, Reason.SUSPENDED, message
    downloading = [t for t in targets if t.phase == Phase.DOWNLOADING]
    if downloading:
        # a download that waits for a retry lends the conditions its reason and message
        first = next((t for t in downloading if t.reason not in (None, Reason.DOWNLOADING)), downloading[0])
        reason = first.reason or Reason.DOWNLOADING
        if node_local:
            ready = f"{sum(1 for t in targets if t.phase == Phase.READY)}/{len(targets)} nodes ready"
            waiting = f"{where(first)}{first.message}; " if reason != Reason.DOWNLOADING else ""
            return Phase.DOWNLOADING, reason, f"{waiting}{ready}"
        return Phase.DOWNLOADING, reason, first.message or "downloading"
    pending = next(t for t in targets if t.phase == Phase.PENDING)
    return Phase.PENDING, pending.reason or Reason.PENDING, f"{where(pending)}{pending.message}"


def deleting_status(artifact: ModelArtifact, *, now: datetime, message: str) -> ModelArtifactStatus:
    """The status while the finalizer cleans up (phase Deleting)."""
    existing = artifact.status.conditions
    gen = artifact.generation
    return ModelArtifactStatus(
        phase=Phase.DELETING,
        conditions=[
            condition(existing, READY, "False", Reason.DELETING, message, generation=gen, now=now),
            condition(existing, RECONCILING, "True", Reason.DELETING, message, generation=gen, now=now),
            condition(existing, STALLED, "False", Reason.DELETING, message, generation=gen, now=now),
        ],
    )
