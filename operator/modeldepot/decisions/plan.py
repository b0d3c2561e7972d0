"""The reconcile decision: from an artifact, its target nodes and its Jobs to a `Plan`.

`plan()` is a pipeline of short pure steps: triage the Jobs (keep, replace, delete), decide each
target (claim or node) and which need a Job, judge the whole (phase, reason, a fleet that
disagrees on a digest), render conditions, the status and the node entries. The Plan names the
Jobs to create in domain terms (`JobRequest`); the reconciler asks `builders` for their manifests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .. import builders
from ..formatting import format_bytes
from ..models import (
    Condition,
    ConditionStatus,
    JobResult,
    ModelArtifact,
    ModelArtifactStatus,
    NodeStatus,
    status_merge_patch,
)
from ..vocabulary import Phase, Reason
from .nodes import NodeRecords, fleet, pinned_commit, with_records
from .observe import JOB_REASONS, JobState, is_transient, retry_due
from .status import (
    READY,
    RECONCILING,
    STALLED,
    TargetState,
    Verdict,
    aggregate,
    claim_progress,
    condition,
    current_entry,
    display_revision,
    iso,
    node_entry,
    overall,
    recorded,
    retry_message,
)


@dataclass(frozen=True)
class JobRequest:
    """A fetch Job to create: for the claim (`node` None) or one node, at a pinned commit or not;
    whether its fetcher reports progress into status (`nodes.REPORTING_NODES` bounds a fleet's)."""

    node: str | None
    revision: str | None = None
    report: bool = True


@dataclass(frozen=True)
class Plan:
    """What to do: Jobs to create and delete (names), the status the operator merges (`status`,
    never `nodes`) and the status.nodes entries it applies, one per node that changed."""

    create: list[JobRequest]
    delete: list[str]
    status: ModelArtifactStatus
    phase: Phase
    nodes: list[NodeStatus] = field(default_factory=list)
    targets: list[TargetState] = field(default_factory=list)
    # nodes in status.nodes or the records that are no longer targets (files stay until cleaned up)
    stale_nodes: list[str] = field(default_factory=list)
    # nodeLocal: listed nodes whose entries go, the records to write first, and whether the
    # entries go by one merge patch (`nodes.fleet`)
    forget: list[str] = field(default_factory=list)
    records: NodeRecords | None = None
    compact: bool = False

    @property
    def status_patch(self) -> dict[str, Any]:
        """`status` as the body of the JSON merge patch the reconciler sends."""
        return status_merge_patch(self.status)


@dataclass
class Triage:
    """The artifact's Jobs sorted by what happens to them."""

    current: dict[str | None, JobState] = field(default_factory=dict)
    retrying: dict[str | None, JobState] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    # names of Jobs still being deleted: a Job of the same name cannot be created yet
    blocked: set[str] = field(default_factory=set)


def triage(
    artifact: ModelArtifact,
    jobs: Sequence[JobState],
    wanted: set[str | None],
    *,
    now: datetime,
    retry_after: timedelta | None,
) -> Triage:
    """Keep the current generation's Jobs of wanted targets; delete the rest (and, when suspended,
    the unfinished ones); replace Jobs whose transient failure is old enough to retry."""
    out = Triage()
    for job in jobs:
        if job.deleting:
            out.blocked.add(job.name)
        elif (
            job.generation != artifact.generation
            or job.node not in wanted
            or (artifact.spec.suspend and not job.finished)
        ):
            out.delete.append(job.name)
        elif retry_due(job, retry_after, now):
            out.delete.append(job.name)
            out.retrying[job.node] = job
        else:
            out.current[job.node] = job
    return out


def failure(job: JobState) -> tuple[str, str]:
    """Reason and message of a finished, failed Job."""
    res = job.result if job.result is not None and job.result.phase == Phase.FAILED else None
    detail = f"{res.reason}: {res.message}" if res and res.reason else (res.message if res else None)
    if job.failure_reason in JOB_REASONS:
        msg = job.failure_message or f"Job {job.name} failed"
        return job.failure_reason or Reason.DOWNLOAD_FAILED, f"{msg}; last error: {detail}" if detail else msg
    if res is not None and res.reason:
        return res.reason, res.message or res.reason
    return Reason.DOWNLOAD_FAILED, job.failure_message or f"Job {job.name} failed without a result"


def _finished_target(artifact: ModelArtifact, node: str | None, job: JobState) -> TargetState:
    """A Job that succeeded: Ready with its result (or what status recorded), else Failed."""
    if job.result and job.result.phase == Phase.READY and job.result.digest:
        return TargetState(node, Phase.READY, result=job.result)
    known = recorded(artifact, node)
    if known is not None:
        return TargetState(node, Phase.READY, result=known)
    message = f"Job {job.name} succeeded but left no result in its termination message"
    return TargetState(node, Phase.FAILED, Reason.DOWNLOAD_FAILED, message)


def decide_target(
    artifact: ModelArtifact, node: str | None, job: JobState | None
) -> tuple[TargetState, bool]:
    """The target's state and whether its Job must be created."""
    if job is not None and (job.complete or job.succeeded > 0):
        return _finished_target(artifact, node, job), False
    if job is None and (known := recorded(artifact, node)) is not None:
        return TargetState(node, Phase.READY, result=known), False
    if artifact.spec.suspend:
        return TargetState(node, Phase.SUSPENDED, Reason.SUSPENDED, "spec.suspend is true"), False
    if job is not None and job.failure_reason is not None:
        return TargetState(node, Phase.FAILED, *failure(job)), False
    if job is None:
        return TargetState(node, Phase.PENDING, Reason.PENDING, "creating the download Job"), True
    entry = current_entry(artifact, node)
    if job.active > 0 and entry is not None and entry.phase not in (None, Phase.PENDING):
        if entry.phase == Phase.DOWNLOADING and entry.retry is not None:
            return TargetState(node, Phase.DOWNLOADING, entry.retry.reason, retry_message(entry.retry)), False
        message = entry.summary or "downloading"
        return TargetState(node, Phase.DOWNLOADING, Reason.DOWNLOADING, message), False
    if job.active > 0 and job.ready > 0 and (entry is None or entry.phase == Phase.PENDING):
        # a fetcher that does not report (beyond nodes.REPORTING_NODES) is running all the same
        return TargetState(node, Phase.DOWNLOADING, Reason.DOWNLOADING, "downloading"), False
    if job.failed > 0:
        message = f"Job {job.name} is retrying after {job.failed} failed attempt(s)"
        return TargetState(node, Phase.PENDING, Reason.PENDING, message), False
    return TargetState(node, Phase.PENDING, Reason.PENDING, f"waiting for Job {job.name} to start"), False


def _with_retry_time(state: TargetState, job: JobState | None, retry_after: timedelta | None) -> TargetState:
    """A transient failure says when it will be retried."""
    if state.phase != Phase.FAILED or retry_after is None or job is None or job.failed_at is None:
        return state
    if not is_transient(job):
        return state
    return replace(state, message=f"{state.message}; retrying at {iso(job.failed_at + retry_after)}")


def decide_targets(
    artifact: ModelArtifact,
    keys: Sequence[str | None],
    jobs: Triage,
    *,
    blocker: tuple[str, str] | None,
    retry_after: timedelta | None,
) -> tuple[list[TargetState], list[JobRequest]]:
    """Each target's state, and the Jobs to create (none while a blocker stands)."""
    pinned = pinned_commit(artifact) if artifact.is_node_local else None
    targets: list[TargetState] = []
    create: list[JobRequest] = []
    for key in keys:
        if key in jobs.retrying:
            reason, message = failure(jobs.retrying[key])
            retry = f"retrying after a transient failure ({reason}: {message})"
            targets.append(TargetState(key, Phase.PENDING, Reason.RETRYING, retry))
            continue
        job = jobs.current.get(key)
        state, needs_job = decide_target(artifact, key, job)
        state = _with_retry_time(state, job, retry_after)
        if needs_job and blocker is not None:
            state = TargetState(key, Phase.FAILED, blocker[0], blocker[1])
        elif needs_job:
            name = builders.fetch_job_name(artifact.name, artifact.generation, key, artifact.namespace)
            if name in jobs.blocked:
                message = "waiting for the previous Job to be deleted"
                state = TargetState(key, Phase.PENDING, Reason.PENDING, message)
            else:
                create.append(JobRequest(key, pinned))
        targets.append(state)
    return targets, create


def judge_fleet(targets: Sequence[TargetState], verdict: Verdict) -> Verdict:
    """A Ready fleet whose nodes disagree: on one commit that is corruption (Failed); on several
    commits (a branch moved before the revision was pinned), Ready with a hint."""
    phase, reason, message = verdict
    results = [t.result for t in targets if t.phase == Phase.READY and t.result is not None]
    if phase != Phase.READY or len({r.digest for r in results}) <= 1:
        return verdict
    commits = {r.commit for r in results}
    if len(commits) == 1:
        detail = ", ".join(f"{t.node}={t.result.digest}" for t in targets if t.result)
        return (
            Phase.FAILED,
            Reason.CHECKSUM_MISMATCH,
            f"nodes hold different digests of the same commit: {detail}",
        )
    listed = ", ".join(sorted(str(c) for c in commits))
    return (
        phase,
        reason,
        f"{message}; nodes resolved different commits ({listed}): set revision to a commit to pin it",
    )


def conditions(artifact: ModelArtifact, verdict: Verdict, now: datetime) -> list[Condition]:
    """Ready / Reconciling / Stalled for the verdict (docs/api.md)."""
    phase, reason, message = verdict
    existing, gen = artifact.status.conditions, artifact.generation

    def cond(type_: str, status: ConditionStatus, why: str) -> Condition:
        return condition(existing, type_, status, why, message, generation=gen, now=now)

    if phase == Phase.READY:
        return [
            cond(READY, "True", Reason.VERIFIED),
            cond(RECONCILING, "False", Reason.VERIFIED),
            cond(STALLED, "False", Reason.VERIFIED),
        ]
    working: ConditionStatus = "True" if phase in (Phase.PENDING, Phase.DOWNLOADING) else "False"
    stalled: ConditionStatus = "True" if phase == Phase.FAILED else "False"
    return [cond(READY, "False", reason), cond(RECONCILING, working, reason), cond(STALLED, stalled, reason)]


def _result_fields(artifact: ModelArtifact, targets: Sequence[TargetState]) -> dict[str, Any]:
    """The top-level result fields of a Ready artifact (the most common commit among targets)."""
    results = [t.result for t in targets if t.phase == Phase.READY and t.result is not None]
    if not results:
        return {}
    top = Counter(r.commit for r in results).most_common(1)[0][0]
    res: JobResult = next(r for r in results if r.commit == top)
    fields: dict[str, Any] = {
        "resolved_revision": res.commit,
        "revision": display_revision(artifact.hugging_face.revision, res.commit),
        "digest": res.digest,
        "total_bytes": res.total_bytes,
        "size": format_bytes(res.total_bytes) if res.total_bytes is not None else None,
        "file_count": res.file_count,
    }
    # what the model is comes with a fresh result only (not one rebuilt from status or records)
    described = [r.model for r in results if r.commit == top and r.digest == res.digest and r.model]
    if described:
        fields["model"] = described[0]
    return fields


def render_status(
    artifact: ModelArtifact, targets: Sequence[TargetState], verdict: Verdict, now: datetime
) -> ModelArtifactStatus:
    """The status the operator merges: only the fields it decides are set (see
    `models.status_merge_patch`); for a claim `progress` only when it is not the fetcher's turn."""
    phase = verdict[0]
    fields: dict[str, Any] = {
        "observed_generation": artifact.generation,
        "phase": phase,
        "conditions": conditions(artifact, verdict, now),
        "path": artifact.display_path,
    }
    if phase == Phase.READY:
        fields.update(_result_fields(artifact, targets))
    if not artifact.is_node_local:
        progress = claim_progress(artifact, targets[0], now)
        if progress is not None:
            fields["progress"] = progress
        return ModelArtifactStatus(**fields)
    fields["ready_nodes"] = sum(1 for t in targets if t.phase == Phase.READY)
    fields["target_nodes"] = len(targets)
    fields["progress"] = aggregate(artifact, targets, phase, now)
    return ModelArtifactStatus(**fields)


def plan(
    artifact: ModelArtifact,
    *,
    nodes: Sequence[str] | None,
    jobs: Sequence[JobState],
    now: datetime,
    blocker: tuple[str, str] | None = None,
    retry_after: timedelta | None = None,
    records: NodeRecords | None = None,
    records_ref: str | None = None,
) -> Plan:
    """Decide the next step. ``nodes``: the nodeLocal targets (see ``matching_nodes``), ignored for a
    claim; ``jobs``: the artifact's fetch Jobs of any generation. ``blocker``: a (reason, message)
    the caller found before any Job can run (e.g. ``StorageNotFound``, ``TokenSecretNotFound``):
    no Job is created and the targets that need one are Failed with it until it is resolved.
    ``retry_after``: a Job that failed for a transient reason is replaced that long after it
    failed (None: failures stay until the spec changes). ``records``: the nodes recorded as holding
    a verified copy (nodeLocal; None: none yet), kept in ``records_ref`` (`nodes.fleet`)."""
    keys: list[str | None] = [None]
    read = artifact
    if artifact.is_node_local:
        keys = list(sorted(set(nodes or ())))
        records = records if records is not None else NodeRecords(artifact.metadata.uid)
        artifact = with_records(artifact, records)
    wanted = set(keys)
    sorted_jobs = triage(artifact, jobs, wanted, now=now, retry_after=retry_after)
    targets, create = decide_targets(artifact, keys, sorted_jobs, blocker=blocker, retry_after=retry_after)
    verdict = judge_fleet(targets, overall(artifact, targets))
    entries = [e for t in targets if t.node is not None and (e := node_entry(artifact, t, now)) is not None]
    status = render_status(artifact, targets, verdict, now)
    stale = sorted(n.name for n in artifact.status.nodes if n.name not in wanted)
    if records is None:
        return Plan(create, sorted(sorted_jobs.delete), status, verdict[0], entries, targets, stale)
    decided = fleet(
        read, targets, entries, records, new_jobs=[str(r.node) for r in create], records_ref=records_ref
    )
    return Plan(
        create=[replace(r, report=r.node in decided.report) for r in create],
        delete=sorted(sorted_jobs.delete),
        status=status.model_copy(update={"fleet": decided.status}),
        phase=verdict[0],
        nodes=decided.apply,
        targets=targets,
        stale_nodes=stale,
        forget=decided.forget,
        records=decided.records,
        compact=decided.compact,
    )
