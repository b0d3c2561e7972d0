"""The operator's service layer: gather an artifact's world, decide, apply.

A `Reconciler` is made once at operator start-up (kopf's memo) with the settings and a
`ClusterApi` (the `kube` module in production, an in-memory fake in unit tests). Its `reconcile()`
reads the artifact, checks the admin policy and path ownership, reads its target nodes, its fetch
Jobs and their pods' results, asks `decisions.plan()` what to do, creates/deletes Jobs,
merge-patches the status when it changes and applies the node entries that changed (removing
those of retired nodes); `finalize()` runs one pass of the deletion flow (`deletion.py`). Both are
serialized per artifact. Handlers (kopf) stay thin and call these.

Why one module of ~470 lines: every function here is a step of the same blocking pass that talks to
`ClusterApi` (observe Jobs, check blockers and refusals, apply the Plan, retire nodes, record
metrics); the decisions it applies live in `decisions/`, the deletion flow in `deletion.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from . import builders, decisions, metrics, policy
from .clusterapi import ClusterApi
from .deletion import FinalizeStep, finalize_step, job_defaults
from .errors import ModelDepotError
from .models import (
    CLEANUP_APP,
    FETCHER_APP,
    ConditionStatus,
    JobResult,
    ModelArtifact,
    ModelArtifactStatus,
    status_merge_patch,
    validation_message,
)
from .settings import OperatorSettings
from .vocabulary import Phase, Reason

ClaimLookup = Callable[[str], Iterable[policy.PathClaim]]
"""The path claims of every artifact on one storage (kopf index in handlers.py)."""
JobLookup = Callable[[str, str], list[dict[str, Any]]]
"""Jobs by (namespace, label selector), like `ClusterApi.list_jobs`: in production kopf's in-memory
index of the Jobs it already watches (handlers.py), so a pass lists nothing from the API server."""

log = logging.getLogger(__name__)

# status keys whose change alone is not worth a write
_VOLATILE = {"updatedAt", "lastTransitionTime"}
# core/v1 pod phases of a pod that no longer runs
_POD_DONE = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Outcome:
    """What a reconciliation did, for events and metrics."""

    phase: Phase
    previous_phase: str | None
    created: int
    deleted: int
    reason: str | None = None
    message: str | None = None
    uid: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def changed(current: Any, patch: Any) -> bool:
    """Whether a merge patch would change `current`, ignoring timestamps that always move."""
    if isinstance(patch, Mapping):
        if not isinstance(current, Mapping):
            return True
        return any(key not in _VOLATILE and changed(current.get(key), value) for key, value in patch.items())
    if isinstance(patch, list) and isinstance(current, list) and len(patch) == len(current):
        return any(changed(c, p) for c, p in zip(current, patch, strict=True))
    return bool(current != patch)


def _jobs_namespace(artifact: ModelArtifact, settings: OperatorSettings) -> str:
    return builders.job_namespace(artifact, settings.operator_namespace)


def _job_states(
    api: ClusterApi, artifact: ModelArtifact, settings: OperatorSettings, list_jobs: JobLookup
) -> tuple[list[decisions.JobState], dict[str, float]]:
    """The artifact's fetch Jobs as decision inputs, and how long each completed one took (by uid).
    Their pods are listed only when a decision needs them (`decisions.pods_needed`)."""
    namespace = _jobs_namespace(artifact, settings)
    selector = builders.artifact_selector(artifact, FETCHER_APP)
    jobs = list_jobs(namespace, selector)
    needed = decisions.pods_needed(artifact, (decisions.JobState.from_job(job) for job in jobs))
    pods = api.list_pods(namespace, selector) if needed else []
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods:
        job_name = (pod["metadata"].get("labels") or {}).get("job-name")
        if job_name:
            by_job[job_name].append(pod)
    states = []
    durations: dict[str, float] = {}
    for job in jobs:
        job_pods = by_job[job["metadata"]["name"]]
        state = decisions.JobState.from_job(job, decisions.pod_result(job_pods))
        config_error = decisions.config_error(job_pods)
        if config_error and not state.finished and state.succeeded == 0:
            secret = artifact.hugging_face.token_secret_ref
            what = f"Secret {secret.name!r} key {secret.key!r}" if secret else "a referenced Secret"
            message = (
                f"{what} is missing in namespace {artifact.namespace}; the download starts once it exists"
            )
            state = replace(
                state,
                failure_reason=Reason.TOKEN_SECRET_NOT_FOUND,
                failure_message=f"{message} ({config_error})",
                result=JobResult(phase=Phase.FAILED, reason=Reason.TOKEN_SECRET_NOT_FOUND, message=message),
            )
        states.append(state)
        duration = decisions.job_duration(job)
        if state.complete and duration is not None:
            durations[job["metadata"]["uid"]] = duration
    return states, durations


def _token_blocker(api: ClusterApi, artifact: ModelArtifact) -> tuple[str, str] | None:
    """TokenSecretNotFound while the Secret (or its key) named by tokenSecretRef is missing."""
    ref = artifact.hugging_face.token_secret_ref
    if ref is None or api.read_secret_key(artifact.namespace, ref.name, ref.key) is not None:
        return None
    return (
        Reason.TOKEN_SECRET_NOT_FOUND,
        f"Secret {ref.name!r} key {ref.key!r} is missing in namespace {artifact.namespace}; "
        "the download starts once it exists",
    )


def _blocker(api: ClusterApi, artifact: ModelArtifact) -> tuple[str, str] | None:
    claim_spec = artifact.spec.storage.persistent_volume_claim
    if claim_spec is None:
        return None
    if claim_spec.create is not None:
        return None  # created with the first Job (`_prepare_fetcher`)
    claim = api.get_claim(artifact.namespace, claim_spec.claim_name)
    if claim is None:
        return (
            Reason.STORAGE_NOT_FOUND,
            f"PersistentVolumeClaim {claim_spec.claim_name!r} does not exist in namespace "
            f"{artifact.namespace}; create it or set storage.persistentVolumeClaim.create",
        )
    return None


def _prepare_fetcher(api: ClusterApi, artifact: ModelArtifact, defaults: builders.JobDefaults) -> None:
    """What a fetch Job needs before it is created: the artifact's own ServiceAccount and a Role
    that may patch only this artifact's status, and for node-local Jobs (which run in the
    operator's namespace) a copy of the token; the claim, when the spec asks to create it. Called
    only when Jobs are about to be created, so steady passes make none of these calls."""
    claim_spec = artifact.spec.storage.persistent_volume_claim
    if claim_spec is not None and claim_spec.create is not None:
        api.create_claim(builders.claim(artifact))
    api.ensure_fetcher_identity(
        builders.fetcher_service_account(artifact, defaults),
        builders.fetcher_role(artifact),
        builders.fetcher_role_binding(artifact, defaults),
    )
    ref = artifact.hugging_face.token_secret_ref
    if ref is not None and artifact.is_node_local:
        token = api.read_secret_key(artifact.namespace, ref.name, ref.key)
        if token is not None:
            api.apply_secret(builders.token_secret_copy(artifact, token, defaults))


def _refusal(api: ClusterApi, artifact: ModelArtifact | None, settings: OperatorSettings) -> int:
    """Cancel an artifact's download Jobs (it was refused); returns how many were deleted."""
    if artifact is None:
        return 0
    namespace = _jobs_namespace(artifact, settings)
    jobs = api.list_jobs(namespace, builders.artifact_selector(artifact, FETCHER_APP))
    for job in jobs:
        api.delete_job(namespace, job["metadata"]["name"])
    return len(jobs)


def _refuse(
    api: ClusterApi,
    body: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    artifact: ModelArtifact | None = None,
    settings: OperatorSettings | None = None,
) -> Outcome:
    """A spec the operator will not act on (invalid, against policy, or on another artifact's path):
    cancel its downloads, say why in status, create nothing."""
    deleted = _refusal(api, artifact, settings) if settings is not None else 0
    generation = body["metadata"].get("generation")
    now = _now()
    # a spec the models reject has no parsed status either: every condition starts now
    refused: tuple[tuple[str, ConditionStatus], ...] = (
        (decisions.READY, "False"),
        (decisions.RECONCILING, "False"),
        (decisions.STALLED, "True"),
    )
    conditions = [
        decisions.condition((), type_, status, reason, message, generation=generation, now=now)
        for type_, status in refused
    ]
    status = ModelArtifactStatus(observed_generation=generation, phase=Phase.FAILED, conditions=conditions)
    patch = status_merge_patch(status)
    current = body.get("status") or {}
    if changed(current, patch):
        api.patch_artifact_status(body["metadata"]["namespace"], body["metadata"]["name"], {"status": patch})
    return Outcome(
        Phase.FAILED, current.get("phase"), 0, deleted, reason, message, uid=body["metadata"].get("uid", "")
    )


def _refusal_reason(
    artifact: ModelArtifact, settings: OperatorSettings, claims: ClaimLookup
) -> tuple[str, str] | None:
    """PolicyViolation or PathConflict, checked again before any Job (admission may be off)."""
    broken = policy.violations(artifact, policy.Policy.from_settings(settings))
    if broken:
        return Reason.POLICY_VIOLATION, "; ".join(broken)
    mine = policy.path_claim(artifact)
    other = policy.conflicting_claim(mine, claims(mine.storage))
    if other is not None:
        return Reason.PATH_CONFLICT, policy.conflict_message(mine, other)
    return None


def _reconcile_pass(
    api: ClusterApi,
    namespace: str,
    name: str,
    settings: OperatorSettings,
    claims: ClaimLookup,
    timed: TimedJobs,
    list_jobs: JobLookup,
) -> Outcome | None:
    """One reconciliation (blocking): read, check, decide, apply, write status."""
    body = api.get_artifact(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    body = _without_node_map(api, body)
    previous = (body.get("status") or {}).get("phase")
    try:
        artifact = ModelArtifact.from_body(body)
    except ValidationError as error:
        return _refuse(api, body, Reason.INVALID_SPEC, validation_message(error))
    refused = _refusal_reason(artifact, settings, claims)
    if refused is not None:
        return _refuse(api, body, *refused, artifact=artifact, settings=settings)
    node_objects = api.list_nodes() if artifact.is_node_local else []
    nodes = decisions.matching_nodes(artifact, node_objects) if artifact.is_node_local else None
    jobs, durations = _job_states(api, artifact, settings, list_jobs)
    records = _node_records(api, artifact, settings)
    retry = settings.failed_retry_seconds
    plan = decisions.plan(
        artifact,
        nodes=nodes,
        jobs=jobs,
        now=_now(),
        blocker=_blocker(api, artifact) or _token_blocker(api, artifact),
        retry_after=timedelta(seconds=retry) if retry else None,
        records=records,
        records_ref=f"{settings.operator_namespace}/{builders.fetcher_identity_name(artifact)}",
    )
    created, forgotten = _apply_plan(api, artifact, plan, node_objects, settings, list_jobs)
    _write_records(api, artifact, plan, records, forgotten, settings)
    _write_status(api, body, plan, forgotten)
    _record_metrics(artifact, plan, durations, previous, timed)
    return _outcome(artifact, plan, previous, created)


def _without_node_map(api: ClusterApi, body: dict[str, Any]) -> dict[str, Any]:
    """An artifact written before status.nodes became a list still holds the old map, and the API
    server would refuse every node's apply against it: remove the map, once. The only merge patch
    that ever names `nodes`; the entries are written again by their nodes' writers."""
    status = body.get("status") or {}
    if not isinstance(status.get("nodes"), Mapping):
        return body
    meta = body["metadata"]
    api.patch_artifact_status(meta["namespace"], meta["name"], {"status": {"nodes": None}})
    return {**body, "status": {k: v for k, v in status.items() if k != "nodes"}}


def _node_records(
    api: ClusterApi, artifact: ModelArtifact, settings: OperatorSettings
) -> decisions.NodeRecords | None:
    """Which nodes of a node-local artifact hold a verified copy (one read of its ConfigMap)."""
    if not artifact.is_node_local:
        return None
    data = api.get_node_records(settings.operator_namespace, builders.fetcher_identity_name(artifact))
    return decisions.NodeRecords.from_data(artifact.metadata.uid, data)


def _write_records(
    api: ClusterApi,
    artifact: ModelArtifact,
    plan: decisions.Plan,
    read: decisions.NodeRecords | None,
    retired: list[str],
    settings: OperatorSettings,
) -> None:
    """The node records, when they changed: before any entry they replace is forgotten, so a
    restart in between finds each verified copy in one place or the other."""
    if plan.records is None or read is None:
        return
    records = plan.records.with_changes({}, drop=retired)
    if records.nodes != read.nodes:
        defaults = job_defaults(settings)
        api.write_node_records(builders.node_records(artifact, records.to_data(), defaults))


def _write_status(
    api: ClusterApi, body: Mapping[str, Any], plan: decisions.Plan, forgotten: list[str]
) -> None:
    """The listed nodes' entries that changed, each applied by its own node's field manager, and
    the removal of the entries of nodes recorded, over the budget or retired (`decisions.fleet`;
    all at once by one merge patch when there are many, then the kept ones applied again); then
    the merge patch of the rest, when it changes anything, so that a reader who sees the new
    phase also sees the entries it summarizes."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    listed = {entry.get("name") for entry in (body.get("status") or {}).get("nodes") or ()}
    if plan.compact:
        api.patch_artifact_status(namespace, name, {"status": {"nodes": None}})
    for entry in plan.nodes:
        api.apply_node_status(namespace, name, entry)
    if not plan.compact:
        for node in sorted({*plan.forget, *forgotten} & listed):
            api.forget_node_status(namespace, name, node)
    patch = plan.status_patch
    if changed(body.get("status") or {}, patch):
        api.patch_artifact_status(namespace, name, {"status": patch})


def _apply_plan(
    api: ClusterApi,
    artifact: ModelArtifact,
    plan: decisions.Plan,
    node_objects: list[dict[str, Any]],
    settings: OperatorSettings,
    list_jobs: JobLookup,
) -> tuple[int, list[str]]:
    """Delete and create the Plan's Jobs, retire stale nodes; returns how many Jobs were created
    and the retired nodes whose status entries go."""
    jobs_namespace = _jobs_namespace(artifact, settings)
    for job_name in plan.delete:
        api.delete_job(jobs_namespace, job_name)
    # only needed when Jobs are created or nodes retired, not on every progress event
    needs_cleanup_jobs = artifact.is_node_local and bool(plan.create or plan.stale_nodes)
    cleanup_jobs = _cleanup_jobs_by_node(list_jobs, artifact, settings) if needs_cleanup_jobs else {}
    defaults = job_defaults(settings)
    if plan.create:
        _prepare_fetcher(api, artifact, defaults)
    created = 0
    for request in plan.create:
        cleanup = cleanup_jobs.get(request.node)
        if cleanup is not None:
            # the node matches again while (or after) its copy was being removed
            if not cleanup.finished:
                continue  # download after the cleanup, on a later pass
            api.delete_job(jobs_namespace, cleanup.name)
        manifest = builders.fetch_job(
            artifact, node=request.node, defaults=defaults, revision=request.revision, report=request.report
        )
        created += api.create_job(manifest)
    forgotten: list[str] = []
    if plan.stale_nodes:
        forgotten = _retire_nodes(api, artifact, plan.stale_nodes, node_objects, cleanup_jobs, settings)
    return created, forgotten


def _outcome(artifact: ModelArtifact, plan: decisions.Plan, previous: str | None, created: int) -> Outcome:
    failed = next((t for t in plan.targets if t.phase == Phase.FAILED), None)
    ready = plan.status.condition(decisions.READY)
    return Outcome(
        phase=plan.phase,
        previous_phase=previous,
        created=created,
        deleted=len(plan.delete),
        reason=(failed.reason if failed else None) or (ready.reason if ready else None),
        message=ready.message if ready else None,
        uid=artifact.metadata.uid,
    )


def _cleanup_jobs_by_node(
    list_jobs: JobLookup, artifact: ModelArtifact, settings: OperatorSettings
) -> dict[str | None, decisions.JobState]:
    jobs = list_jobs(_jobs_namespace(artifact, settings), builders.artifact_selector(artifact, CLEANUP_APP))
    states = (decisions.JobState.from_job(job) for job in jobs)
    return {state.node: state for state in states if state.node}


def _retire_nodes(
    api: ClusterApi,
    artifact: ModelArtifact,
    stale: list[str],
    node_objects: list[dict[str, Any]],
    cleanup_jobs: Mapping[str | None, decisions.JobState],
    settings: OperatorSettings,
) -> list[str]:
    """Clean up nodes that stopped matching; returns the nodes whose status.nodes entries go."""
    namespace = _jobs_namespace(artifact, settings)
    busy = {
        pod["spec"].get("nodeName", "")
        for pod in api.list_pods(namespace, builders.artifact_selector(artifact, FETCHER_APP))
        if (pod.get("status") or {}).get("phase") not in _POD_DONE
    }
    by_name = {node["metadata"]["name"]: node for node in node_objects}
    by_node = {node: job for node, job in cleanup_jobs.items() if node}
    retirement = decisions.retire_nodes(artifact, stale, by_name, by_node, busy)
    for node in retirement.cleanup:
        api.create_job(builders.cleanup_job(artifact, node=node, defaults=job_defaults(settings)))
    for job_name in retirement.remove_jobs:
        api.delete_job(namespace, job_name)
    return retirement.forget


def _record_metrics(
    artifact: ModelArtifact,
    plan: decisions.Plan,
    durations: Mapping[str, float],
    previous: str | None,
    timed: TimedJobs,
) -> None:
    metrics.record_phase(artifact.namespace, artifact.name, plan.phase)
    if plan.phase == Phase.FAILED and previous != Phase.FAILED:
        failed = next((t for t in plan.targets if t.phase == Phase.FAILED), None)
        metrics.failures.labels(reason=(failed.reason if failed else None) or Reason.UNKNOWN).inc()
    # a Job's completion time may land after the status turned Ready: observe each Job once
    for uid, seconds in durations.items():
        if timed.first_time(uid):
            metrics.download_duration.observe(seconds)
    if plan.phase == Phase.READY and previous != Phase.READY:
        for target in plan.targets:
            if target.result and target.result.total_bytes:
                metrics.downloaded_bytes.inc(target.result.total_bytes)
            metrics.downloads_completed.inc()


class TimedJobs:
    """Uids of completed fetch Jobs whose duration is already in the histogram: a bounded memory
    (the oldest are forgotten first; a Job's completion lands within minutes of its Ready)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, uid: str) -> bool:
        if uid in self._seen:
            return False
        self._seen[uid] = None
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def _no_claims(storage: str) -> Iterable[policy.PathClaim]:
    return ()


class Reconciler:
    """The operator's state, with bounded lifetime: one lock per artifact while someone uses it
    (weakly held, so deleted artifacts leave nothing behind) and the Jobs already timed."""

    def __init__(self, settings: OperatorSettings, api: ClusterApi) -> None:
        self.settings = settings
        self.api = api
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._timed = TimedJobs()
        # artifacts with a pass waiting for the lock, not started yet (see `reconcile`)
        self._waiting: set[tuple[str, str]] = set()

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        lock = self._locks.get((namespace, name))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[(namespace, name)] = lock
        return lock

    async def reconcile(
        self, namespace: str, name: str, claims: ClaimLookup = _no_claims, jobs: JobLookup | None = None
    ) -> Outcome | None:
        """Bring one artifact's Jobs and status in line with its spec. ``claims`` gives the paths
        other artifacts hold on a storage (``PathConflict`` checks); ``jobs`` reads Jobs from
        memory (None: from the API).

        Coalesced: when a pass of this artifact already waits for the lock, it has not read
        anything yet and will see whatever this call was made for, so this call returns None at
        once. A fleet's Jobs change by the thousand (each a Job event), and one pass each would
        queue passes for hours."""
        key = (namespace, name)
        if key in self._waiting:
            return None
        started = time.monotonic()
        list_jobs = jobs or self.api.list_jobs
        lock = self._lock(namespace, name)
        self._waiting.add(key)
        try:
            await lock.acquire()
        finally:  # started, or cancelled while waiting: the next call needs a pass of its own
            self._waiting.discard(key)
        try:
            return await asyncio.to_thread(
                _reconcile_pass, self.api, namespace, name, self.settings, claims, self._timed, list_jobs
            )
        except ModelDepotError as error:
            metrics.reconcile_errors.labels(retryable=str(error.is_retryable).lower()).inc()
            raise
        finally:
            lock.release()
            metrics.reconcile_duration.observe(time.monotonic() - started)

    async def finalize(self, body: Mapping[str, Any], runtime: float) -> FinalizeStep:
        """One pass of the deletion flow; call again until `done` (each wait is bounded)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        async with self._lock(namespace, name):
            step = await asyncio.to_thread(finalize_step, self.api, body, runtime, self.settings)
        if step.done:
            metrics.record_phase(namespace, name, None)
        return step
