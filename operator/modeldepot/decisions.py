"""Pure reconcile decisions: from an artifact, its target nodes and its Jobs to a Plan.

``plan()`` decides which fetch Jobs to create and delete, the resulting phase, the conditions
(Ready / Reconciling / Stalled, see docs/api.md) and the status merge patch, including progress
aggregated over nodes. ``node_matches()`` decides whether a node is a nodeLocal target. No I/O:
``handlers.py`` gathers the inputs through ``kube.py`` and applies the Plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from . import builders, errors
from .errors import ERRORS_BY_REASON
from .formatting import compute_percent, format_bytes, progress_summary
from .models import (
    LABEL_GENERATION,
    LABEL_NODE,
    Condition,
    JobResult,
    ModelArtifact,
    Progress,
    Toleration,
    parse_termination_message,
)

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)

REASON_VERIFIED = "Verified"
REASON_NO_MATCHING_NODES = errors.NoMatchingNodesError.reason
REASON_DOWNLOAD_FAILED = errors.DownloadFailedError.reason
REASON_CHECKSUM_MISMATCH = errors.ChecksumMismatchError.reason

# Job "Failed" condition reasons (batch/v1) that name the failure better than the fetcher's own result
_JOB_REASONS = {errors.BackoffLimitExceededError.reason, errors.DeadlineExceededError.reason}
_SCHEDULING_EFFECTS = {"NoSchedule", "NoExecute"}


# ------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class JobState:
    """What the decisions need to know about one fetch Job (and its pod's termination message)."""

    name: str
    generation: int
    node: str | None = None
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    deleting: bool = False
    result: JobResult | None = None
    failed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.complete or self.failure_reason is not None

    @classmethod
    def from_job(cls, job: Mapping[str, Any], result: JobResult | str | None = None) -> JobState:
        """Read a batch/v1 Job dict built by ``builders.fetch_job``; ``result`` is the parsed (or raw)
        termination message of its last pod, if any."""
        meta = job.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        status = job.get("status") or {}
        try:
            generation = int(labels.get(LABEL_GENERATION, -1))
        except (TypeError, ValueError):
            generation = -1
        complete = False
        failed_at: datetime | None = None
        failure_reason: str | None = None
        failure_message: str | None = None
        for cond in status.get("conditions") or ():
            if cond.get("status") != "True":
                continue
            if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
                complete = True
            elif cond.get("type") in ("Failed", "FailureTarget"):
                failure_reason = cond.get("reason") or "Failed"
                failure_message = cond.get("message")
                failed_at = _parse_time(cond.get("lastTransitionTime")) or failed_at
        if isinstance(result, str):
            result = parse_termination_message(result)
        return cls(
            name=str(meta.get("name", "")),
            generation=generation,
            node=annotations.get(LABEL_NODE) or labels.get(LABEL_NODE),
            active=int(status.get("active") or 0),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            complete=complete,
            failure_reason=failure_reason,
            failure_message=failure_message,
            deleting=bool(meta.get("deletionTimestamp")),
            result=result,
            failed_at=failed_at,
        )


def pod_result(
    pods: Iterable[Mapping[str, Any]], container: str = builders.FETCH_CONTAINER
) -> JobResult | None:
    """The result of a Job's newest finished pod: the container's termination message (core/v1 Pod
    dicts as listed by the Job's ``batch.kubernetes.io/job-name`` label)."""
    best: tuple[str, JobResult] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            if cs.get("name") != container:
                continue
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if not term:
                continue
            result = parse_termination_message(term.get("message"))
            finished = str(term.get("finishedAt") or "")
            if result is not None and (best is None or finished > best[0]):
                best = (finished, result)
    return best[1] if best else None


def _retry_due(job: JobState, retry_after: timedelta | None, now: datetime) -> bool:
    return (
        retry_after is not None
        and job.failure_reason is not None
        and not job.deleting
        and job.failed_at is not None
        and is_transient(job)
        and now - job.failed_at >= retry_after
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def is_transient(job: JobState) -> bool:
    """Whether a failed Job failed for a reason that may pass (the Hub was down, a timeout), as
    opposed to one only a spec change can fix (unknown repo, bad token, corrupt bytes)."""
    reason = job.result.reason if job.result is not None and job.result.phase == "Failed" else None
    if reason is None:
        # no result from the fetcher: the pod died (OOM, eviction, deadline) rather than decided
        return True
    error = ERRORS_BY_REASON.get(reason)
    return error is not None and error.retryable


# ------------------------------------------------------------------------------------------- nodes


def tolerates(tolerations: Iterable[Toleration], taint: Mapping[str, Any]) -> bool:
    """Whether one of the tolerations tolerates the taint (core/v1 semantics)."""
    for tol in tolerations:
        if tol.effect and tol.effect != taint.get("effect"):
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.get("key"):
                return True
        elif tol.key == taint.get("key") and (tol.value or "") == (taint.get("value") or ""):
            return True
    return False


def node_matches(
    node_labels: Mapping[str, str],
    node_taints: Iterable[Mapping[str, Any]],
    selector: Mapping[str, str] | None,
    tolerations: Iterable[Toleration] | None,
    *,
    unschedulable: bool = False,
) -> bool:
    """Whether a node is a nodeLocal target: schedulable, has every selector label, and every
    NoSchedule/NoExecute taint is tolerated (PreferNoSchedule never excludes a node)."""
    if unschedulable:
        return False
    if any(node_labels.get(k) != v for k, v in (selector or {}).items()):
        return False
    tols = list(tolerations or ())
    return all(tolerates(tols, taint) for taint in node_taints if taint.get("effect") in _SCHEDULING_EFFECTS)


def matching_nodes(artifact: ModelArtifact, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the core/v1 Node dicts that are targets of a nodeLocal artifact, sorted."""
    local = artifact.spec.storage.node_local
    if local is None:
        return []
    out = []
    for node in nodes:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        if node_matches(
            meta.get("labels") or {},
            spec.get("taints") or (),
            local.node_selector,
            local.tolerations,
            unschedulable=bool(spec.get("unschedulable")),
        ):
            out.append(str(meta["name"]))
    return sorted(out)


# ------------------------------------------------------------------------------------------ output


@dataclass(frozen=True)
class TargetState:
    """The decided state of one target (the claim, or one node)."""

    node: str | None
    phase: str
    reason: str | None = None
    message: str | None = None
    result: JobResult | None = None


@dataclass(frozen=True)
class Plan:
    """What to do: Jobs to create (manifests) and delete (names), and the status merge patch."""

    create: list[dict[str, Any]]
    delete: list[str]
    status_patch: dict[str, Any]
    phase: str
    targets: list[TargetState] = field(default_factory=list)
    # nodes in status.nodes that are no longer targets (their files stay until cleaned up)
    stale_nodes: list[str] = field(default_factory=list)


def _iso(now: datetime) -> str:
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
        "lastTransitionTime": transition or _iso(now),
        "observedGeneration": generation,
    }


def _failure(job: JobState) -> tuple[str, str]:
    """Reason and message of a finished, failed Job."""
    res = job.result if job.result is not None and job.result.phase == "Failed" else None
    detail = f"{res.reason}: {res.message}" if res and res.reason else (res.message if res else None)
    if job.failure_reason in _JOB_REASONS:
        msg = job.failure_message or f"Job {job.name} failed"
        return job.failure_reason or REASON_DOWNLOAD_FAILED, f"{msg}; last error: {detail}" if detail else msg
    if res is not None and res.reason:
        return res.reason, res.message or res.reason
    return REASON_DOWNLOAD_FAILED, job.failure_message or f"Job {job.name} failed without a result"


def _recorded(artifact: ModelArtifact, node: str | None) -> JobResult | None:
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


def _current_entry(artifact: ModelArtifact, node: str | None) -> Progress | None:
    entry: Progress | None = artifact.status.nodes.get(node) if node else artifact.status.progress
    if entry is not None and entry.observed_generation == artifact.generation:
        return entry
    return None


def _decide_target(
    artifact: ModelArtifact, node: str | None, job: JobState | None
) -> tuple[TargetState, bool]:
    """The target's state and whether its Job must be created."""
    if job is not None and (job.complete or job.succeeded > 0):
        if job.result and job.result.phase == "Ready" and job.result.digest:
            return TargetState(node, "Ready", result=job.result), False
        recorded = _recorded(artifact, node)
        if recorded is not None:
            return TargetState(node, "Ready", result=recorded), False
        return TargetState(
            node,
            "Failed",
            REASON_DOWNLOAD_FAILED,
            f"Job {job.name} succeeded but left no result in its termination message",
        ), False
    if job is None:
        recorded = _recorded(artifact, node)
        if recorded is not None:
            return TargetState(node, "Ready", result=recorded), False
    if artifact.spec.suspend:
        return TargetState(node, "Suspended", "Suspended", "spec.suspend is true"), False
    if job is not None and job.failure_reason is not None:
        reason, message = _failure(job)
        return TargetState(node, "Failed", reason, message), False
    if job is None:
        return TargetState(node, "Pending", "Pending", "creating the download Job"), True
    entry = _current_entry(artifact, node)
    if job.active > 0 and entry is not None and entry.phase not in (None, "Pending"):
        return TargetState(node, "Downloading", "Downloading", entry.summary or "downloading"), False
    if job.failed > 0:
        return TargetState(
            node, "Pending", "Pending", f"Job {job.name} is retrying after {job.failed} failed attempt(s)"
        ), False
    return TargetState(node, "Pending", "Pending", f"waiting for Job {job.name} to start"), False


def _entry_patch(
    artifact: ModelArtifact, target: TargetState, now: datetime, *, node_local: bool
) -> dict[str, Any] | None:
    """What the operator writes into a target's progress entry (None: leave it to the fetcher)."""
    gen = artifact.generation
    current = _current_entry(artifact, target.node)
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
    patch["updatedAt"] = _iso(now)
    return patch


def _aggregate(
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
        entry = _current_entry(artifact, t.node)
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
        "updatedAt": max(updated) if updated else _iso(now),
    }


def pinned_commit(artifact: ModelArtifact) -> str | None:
    """The commit this generation's nodes already resolved the revision to, if any.

    Jobs started later (a new matching node, a retry) fetch that commit instead of resolving a
    branch again, so a branch that moves mid-rollout cannot leave nodes on different commits.
    """
    gen = artifact.generation
    commits = Counter(
        entry.resolved_revision
        for entry in artifact.status.nodes.values()
        if entry.observed_generation == gen and entry.resolved_revision
    )
    return commits.most_common(1)[0][0] if commits else None


def display_revision(requested: str, commit: str | None) -> str:
    """``main@53aa511``; just the short commit when the request was that commit."""
    if not commit:
        return requested
    short = commit[:7]
    return short if commit.startswith(requested) or requested.startswith(commit) else f"{requested}@{short}"


def plan(
    artifact: ModelArtifact,
    *,
    nodes: Sequence[str] | None,
    jobs: Sequence[JobState],
    now: datetime,
    defaults: builders.JobDefaults,
    blocker: tuple[str, str] | None = None,
    retry_after: timedelta | None = None,
) -> Plan:
    """Decide the next step. ``nodes``: the nodeLocal targets (see ``matching_nodes``), ignored for a
    claim; ``jobs``: the artifact's fetch Jobs of any generation. ``blocker``: a (reason, message)
    the caller found before any Job can run (e.g. ``StorageNotFound``, ``TokenSecretNotFound``):
    no Job is created and the targets that need one are Failed with it until it is resolved.
    ``retry_after``: a Job that failed for a transient reason is replaced that long after it
    failed (None: failures stay until the spec changes)."""
    gen = artifact.generation
    node_local = artifact.is_node_local
    target_keys: list[str | None] = [None]
    if node_local:
        target_keys = list(sorted(set(nodes or ())))
    wanted = set(target_keys)

    delete: list[str] = []
    current: dict[str | None, JobState] = {}
    retrying: dict[str | None, JobState] = {}
    blocked: set[str] = set()
    for job in jobs:
        if job.deleting:
            blocked.add(job.name)
            continue
        if job.generation != gen or job.node not in wanted or (artifact.spec.suspend and not job.finished):
            delete.append(job.name)
            continue
        if _retry_due(job, retry_after, now):
            delete.append(job.name)
            retrying[job.node] = job
            continue
        current[job.node] = job

    pinned = pinned_commit(artifact) if node_local else None
    create: list[dict[str, Any]] = []
    targets: list[TargetState] = []
    for key in target_keys:
        state, needs_job = _decide_target(artifact, key, current.get(key))
        if key in retrying:
            reason, message = _failure(retrying[key])
            state = TargetState(
                key, "Pending", "Retrying", f"retrying after a transient failure ({reason}: {message})"
            )
            targets.append(state)
            continue
        failed_job = current.get(key)
        if (
            state.phase == "Failed"
            and retry_after is not None
            and failed_job is not None
            and failed_job.failed_at is not None
            and is_transient(failed_job)
        ):
            when = _iso(failed_job.failed_at + retry_after)
            state = replace(state, message=f"{state.message}; retrying at {when}")
        if needs_job and blocker is not None:
            state = TargetState(key, "Failed", blocker[0], blocker[1])
        elif needs_job:
            manifest = builders.fetch_job(artifact, node=key, defaults=defaults, revision=pinned)
            if manifest["metadata"]["name"] in blocked:
                state = TargetState(key, "Pending", "Pending", "waiting for the previous Job to be deleted")
            else:
                create.append(manifest)
        targets.append(state)

    phase, reason, message = _overall(artifact, targets)
    ready_results = [t.result for t in targets if t.phase == "Ready" and t.result is not None]
    if phase == "Ready" and len({r.digest for r in ready_results}) > 1:
        by_commit = {r.commit for r in ready_results}
        if len(by_commit) == 1:
            phase, reason = "Failed", REASON_CHECKSUM_MISMATCH
            message = "nodes hold different digests of the same commit: " + ", ".join(
                f"{t.node}={t.result.digest}" for t in targets if t.result
            )
        else:
            message += (
                "; nodes resolved different commits ("
                + ", ".join(sorted(str(c) for c in by_commit))
                + "): set revision to a commit to pin it"
            )

    existing = artifact.status.conditions

    def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
        return condition(existing, type_, status, reason, message, generation=gen, now=now)

    if phase == "Ready":
        conditions = [
            cond(READY, "True", REASON_VERIFIED),
            cond(RECONCILING, "False", REASON_VERIFIED),
            cond(STALLED, "False", REASON_VERIFIED),
        ]
    else:
        working = phase in ("Pending", "Downloading")
        conditions = [
            cond(READY, "False", reason),
            cond(RECONCILING, "True" if working else "False", reason),
            cond(STALLED, "True" if phase == "Failed" else "False", reason),
        ]

    patch: dict[str, Any] = {
        "observedGeneration": gen,
        "phase": phase,
        "conditions": conditions,
        "path": artifact.display_path,
    }
    if phase == "Ready" and ready_results:
        top = Counter(r.commit for r in ready_results).most_common(1)[0][0]
        res = next(r for r in ready_results if r.commit == top)
        patch.update(
            {
                "resolvedRevision": res.commit,
                "revision": display_revision(artifact.hugging_face.revision, res.commit),
                "digest": res.digest,
                "totalBytes": res.total_bytes,
                "size": format_bytes(res.total_bytes) if res.total_bytes is not None else None,
                "fileCount": res.file_count,
            }
        )

    stale: list[str] = []
    if node_local:
        node_patches = {}
        for t in targets:
            entry = _entry_patch(artifact, t, now, node_local=True)
            if entry is not None:
                node_patches[t.node] = entry
        if node_patches:
            patch["nodes"] = node_patches
        patch["readyNodes"] = sum(1 for t in targets if t.phase == "Ready")
        patch["targetNodes"] = len(targets)
        patch["progress"] = _aggregate(artifact, targets, phase, now)
        stale = sorted(n for n in artifact.status.nodes if n not in wanted)
    else:
        entry = _entry_patch(artifact, targets[0], now, node_local=False)
        if entry is not None:
            if phase == "Failed" and targets[0].phase != "Failed":
                entry["phase"] = "Failed"
            patch["progress"] = entry

    return Plan(
        create=create,
        delete=sorted(delete),
        status_patch=patch,
        phase=phase,
        targets=targets,
        stale_nodes=stale,
    )


def _overall(artifact: ModelArtifact, targets: Sequence[TargetState]) -> tuple[str, str, str]:
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


@dataclass(frozen=True)
class Retirement:
    """What to do about nodes in status.nodes that are no longer targets."""

    cleanup: list[str] = field(default_factory=list)  # create a cleanup Job there
    forget: list[str] = field(default_factory=list)  # drop the status.nodes entry
    remove_jobs: list[str] = field(default_factory=list)  # finished cleanup Jobs


def retire_nodes(
    artifact: ModelArtifact,
    stale: Sequence[str],
    nodes: Mapping[str, Mapping[str, Any]],
    cleanup_jobs: Mapping[str, JobState],
    busy: Iterable[str],
) -> Retirement:
    """Nodes whose labels no longer match lose their copy (``Delete``) or just their entry (``Retain``).

    ``nodes``: Node dicts by name; ``cleanup_jobs``: cleanup Jobs by node; ``busy``: nodes where a
    fetch pod still runs (its files are removed only once it stopped). A node that still matches
    the selector but is unschedulable, tainted or NotReady keeps its copy: it is only away for a
    while. A node that no longer exists is forgotten (its disk went with it).
    """
    local = artifact.spec.storage.node_local
    if local is None:
        return Retirement()
    busy_nodes = set(busy)
    out = Retirement()
    for node in stale:
        found = nodes.get(node)
        if found is None:
            out.forget.append(node)
            continue
        labels = (found.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in (local.node_selector or {}).items()) or node in busy_nodes:
            continue
        if artifact.spec.deletion_policy == "Retain":
            out.forget.append(node)
            continue
        job = cleanup_jobs.get(node)
        if job is None:
            out.cleanup.append(node)
        elif job.finished:
            out.forget.append(node)
            out.remove_jobs.append(job.name)
    return out


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
