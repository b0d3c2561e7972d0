"""The operator's service layer: gather an artifact's world through `kube`, decide, apply.

`reconcile()` reads the artifact, its target nodes, its fetch Jobs and their pods' results, asks
`decisions.plan()` what to do, creates/deletes Jobs, and merge-patches the status when it changes.
`finalize()` is the deletion flow behind the finalizer: cancel downloads, remove files under
`deletionPolicy: Delete` with cleanup Jobs, and always finish within bounded waits.
Handlers (kopf) stay thin and call these.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from . import builders, decisions, kube, metrics, policy
from .errors import (
    InvalidSpecError,
    ModelDepotError,
    PathConflictError,
    PolicyViolationError,
    StorageNotFoundError,
    TokenSecretNotFoundError,
)
from .models import (
    CLEANUP_APP,
    FETCHER_APP,
    JobResult,
    ModelArtifact,
    validation_message,
)
from .settings import OperatorSettings

ClaimLookup = Callable[[str], Iterable[policy.PathClaim]]
"""The path claims of every artifact on one storage (kopf index in handlers.py)."""

log = logging.getLogger(__name__)

# pod waiting reasons that mean the fetcher cannot start until the user fixes something
_CONFIG_ERRORS = {"CreateContainerConfigError"}
# status keys whose change alone is not worth a write
_VOLATILE = {"updatedAt", "lastTransitionTime"}

EventFn = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class Outcome:
    """What a reconciliation did, for events and metrics."""

    phase: str
    previous_phase: str | None
    created: int
    deleted: int
    reason: str | None = None
    message: str | None = None
    uid: str = ""


_locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


def _lock_for(namespace: str, name: str) -> asyncio.Lock:
    return _locks[(namespace, name)]


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


def _config_error(pods: list[dict[str, Any]]) -> str | None:
    """Why the fetcher cannot start (a missing Secret key, as the kubelet reports it), if so."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _CONFIG_ERRORS:
                return str(waiting.get("message") or waiting["reason"])
    return None


def _duration(job: Mapping[str, Any]) -> float | None:
    status = job.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return (parse(str(end).replace("Z", "+00:00")) - parse(str(start).replace("Z", "+00:00"))).total_seconds()


def _defaults(settings: OperatorSettings) -> builders.JobDefaults:
    return builders.JobDefaults(
        image=settings.fetcher_image,
        image_pull_policy=settings.fetcher_image_pull_policy,
        extra_env=settings.fetcher_env,
        operator_namespace=settings.operator_namespace,
    )


def _jobs_namespace(artifact: ModelArtifact, settings: OperatorSettings) -> str:
    return builders.job_namespace(artifact, settings.operator_namespace)


def _job_states(
    artifact: ModelArtifact, settings: OperatorSettings
) -> tuple[list[decisions.JobState], dict[str, float]]:
    """The artifact's fetch Jobs as decision inputs, and how long each completed one took (by uid)."""
    namespace = _jobs_namespace(artifact, settings)
    selector = builders.artifact_selector(artifact, FETCHER_APP)
    jobs = kube.list_jobs(namespace, selector)
    pods = kube.list_pods(namespace, selector)
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
        config_error = _config_error(job_pods)
        if config_error and not state.finished and state.succeeded == 0:
            secret = artifact.hugging_face.token_secret_ref
            what = f"Secret {secret.name!r} key {secret.key!r}" if secret else "a referenced Secret"
            message = (
                f"{what} is missing in namespace {artifact.namespace}; the download starts once it exists"
            )
            state = replace(
                state,
                failure_reason=TokenSecretNotFoundError.reason,
                failure_message=f"{message} ({config_error})",
                result=JobResult(phase="Failed", reason=TokenSecretNotFoundError.reason, message=message),
            )
        states.append(state)
        duration = _duration(job)
        if state.complete and duration is not None:
            durations[job["metadata"]["uid"]] = duration
    return states, durations


def _token_blocker(artifact: ModelArtifact) -> tuple[str, str] | None:
    """TokenSecretNotFound while the Secret (or its key) named by tokenSecretRef is missing."""
    ref = artifact.hugging_face.token_secret_ref
    if ref is None or kube.read_secret_key(artifact.namespace, ref.name, ref.key) is not None:
        return None
    return (
        TokenSecretNotFoundError.reason,
        f"Secret {ref.name!r} key {ref.key!r} is missing in namespace {artifact.namespace}; "
        "the download starts once it exists",
    )


def _blocker(artifact: ModelArtifact) -> tuple[str, str] | None:
    claim_spec = artifact.spec.storage.persistent_volume_claim
    if claim_spec is None:
        return None
    if claim_spec.create is not None:
        kube.create_claim(builders.claim(artifact))
        return None
    claim = kube.get_claim(artifact.namespace, claim_spec.claim_name)
    if claim is None:
        return (
            StorageNotFoundError.reason,
            f"PersistentVolumeClaim {claim_spec.claim_name!r} does not exist in namespace "
            f"{artifact.namespace}; create it or set storage.persistentVolumeClaim.create",
        )
    return None


# uids of completed fetch Jobs whose duration is already in the histogram
_timed_jobs: set[str] = set()


def _prepare_fetcher(artifact: ModelArtifact, defaults: builders.JobDefaults) -> None:
    """What a fetch Job needs before it is created: the artifact's own ServiceAccount and a Role
    that may patch only this artifact's status, and for node-local Jobs (which run in the
    operator's namespace) a copy of the token. Called only when Jobs are about to be created."""
    kube.ensure_fetcher_identity(
        builders.fetcher_service_account(artifact, defaults),
        builders.fetcher_role(artifact),
        builders.fetcher_role_binding(artifact, defaults),
    )
    ref = artifact.hugging_face.token_secret_ref
    if ref is not None and artifact.is_node_local:
        token = kube.read_secret_key(artifact.namespace, ref.name, ref.key)
        if token is not None:
            kube.apply_secret(builders.token_secret_copy(artifact, token, defaults))


def _refusal(artifact: ModelArtifact | None, settings: OperatorSettings) -> int:
    """Cancel an artifact's download Jobs (it was refused); returns how many were deleted."""
    if artifact is None:
        return 0
    namespace = _jobs_namespace(artifact, settings)
    jobs = kube.list_jobs(namespace, builders.artifact_selector(artifact, FETCHER_APP))
    for job in jobs:
        kube.delete_job(namespace, job["metadata"]["name"])
    return len(jobs)


def _refuse(
    body: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    artifact: ModelArtifact | None = None,
    settings: OperatorSettings | None = None,
) -> Outcome:
    """A spec the operator will not act on (invalid, against policy, or on another artifact's path):
    cancel its downloads, say why in status, create nothing."""
    deleted = _refusal(artifact, settings) if settings is not None else 0
    generation = body["metadata"].get("generation")
    stamp = _now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def cond(type_: str, status: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp,
            "observedGeneration": generation,
        }

    patch = {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": [
            cond(decisions.READY, "False"),
            cond(decisions.RECONCILING, "False"),
            cond(decisions.STALLED, "True"),
        ],
    }
    current = body.get("status") or {}
    if changed(current, patch):
        kube.patch_artifact_status(body["metadata"]["namespace"], body["metadata"]["name"], {"status": patch})
    return Outcome(
        "Failed", current.get("phase"), 0, deleted, reason, message, uid=body["metadata"].get("uid", "")
    )


def _refusal_reason(
    artifact: ModelArtifact, settings: OperatorSettings, claims: ClaimLookup
) -> tuple[str, str] | None:
    """PolicyViolation or PathConflict, checked again before any Job (admission may be off)."""
    broken = policy.violations(artifact, policy.Policy.from_settings(settings))
    if broken:
        return PolicyViolationError.reason, "; ".join(broken)
    mine = policy.path_claim(artifact)
    other = policy.conflicting_claim(mine, claims(mine.storage))
    if other is not None:
        return PathConflictError.reason, policy.conflict_message(mine, other)
    return None


def _reconcile_sync(
    namespace: str, name: str, settings: OperatorSettings, claims: ClaimLookup
) -> Outcome | None:
    body = kube.get_artifact(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    previous = (body.get("status") or {}).get("phase")
    try:
        artifact = ModelArtifact.from_body(body)
    except ValidationError as error:
        return _refuse(body, InvalidSpecError.reason, validation_message(error))
    refused = _refusal_reason(artifact, settings, claims)
    if refused is not None:
        return _refuse(body, *refused, artifact=artifact, settings=settings)
    defaults = _defaults(settings)
    node_objects = kube.list_nodes() if artifact.is_node_local else []
    nodes = decisions.matching_nodes(artifact, node_objects) if artifact.is_node_local else None
    jobs, durations = _job_states(artifact, settings)
    blocker = _blocker(artifact) or _token_blocker(artifact)
    plan = decisions.plan(
        artifact,
        nodes=nodes,
        jobs=jobs,
        now=_now(),
        defaults=defaults,
        blocker=blocker,
        retry_after=timedelta(seconds=settings.failed_retry_seconds)
        if settings.failed_retry_seconds
        else None,
    )
    jobs_namespace = _jobs_namespace(artifact, settings)
    for job_name in plan.delete:
        kube.delete_job(jobs_namespace, job_name)
    # only needed when Jobs are created or nodes retired, not on every progress event
    needs_cleanup_jobs = artifact.is_node_local and bool(plan.create or plan.stale_nodes)
    cleanup_jobs = _cleanup_jobs_by_node(artifact, settings) if needs_cleanup_jobs else {}
    if plan.create:
        _prepare_fetcher(artifact, defaults)
    created = 0
    for manifest in plan.create:
        cleanup = cleanup_jobs.get(
            (manifest["metadata"].get("annotations") or {}).get(builders.ANNOTATION_NODE)
        )
        if cleanup is not None:
            # the node matches again while (or after) its copy was being removed
            if not cleanup.finished:
                continue  # download after the cleanup, on a later pass
            kube.delete_job(jobs_namespace, cleanup.name)
        if kube.create_job(manifest):
            created += 1
    if plan.stale_nodes:
        forgotten = _retire_nodes(artifact, plan.stale_nodes, node_objects, cleanup_jobs, settings)
        if forgotten:
            plan.status_patch.setdefault("nodes", {}).update(dict.fromkeys(forgotten))
    if changed(body.get("status") or {}, plan.status_patch):
        kube.patch_artifact_status(namespace, name, {"status": plan.status_patch})
    _record_metrics(artifact, plan, durations, previous)
    failed = next((t for t in plan.targets if t.phase == "Failed"), None)
    conditions = plan.status_patch.get("conditions") or []
    ready = next((c for c in conditions if c["type"] == decisions.READY), None)
    return Outcome(
        phase=plan.phase,
        previous_phase=previous,
        created=created,
        deleted=len(plan.delete),
        reason=(failed.reason if failed else None) or (ready["reason"] if ready else None),
        message=ready["message"] if ready else None,
        uid=artifact.metadata.uid,
    )


def _cleanup_jobs_by_node(
    artifact: ModelArtifact, settings: OperatorSettings
) -> dict[str | None, decisions.JobState]:
    jobs = kube.list_jobs(
        _jobs_namespace(artifact, settings), builders.artifact_selector(artifact, CLEANUP_APP)
    )
    states = (decisions.JobState.from_job(job) for job in jobs)
    return {state.node: state for state in states if state.node}


def _retire_nodes(
    artifact: ModelArtifact,
    stale: list[str],
    node_objects: list[dict[str, Any]],
    cleanup_jobs: Mapping[str | None, decisions.JobState],
    settings: OperatorSettings,
) -> list[str]:
    """Clean up nodes that stopped matching; returns the status.nodes entries to drop."""
    namespace = _jobs_namespace(artifact, settings)
    busy = {
        pod["spec"].get("nodeName", "")
        for pod in kube.list_pods(namespace, builders.artifact_selector(artifact, FETCHER_APP))
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    }
    by_name = {node["metadata"]["name"]: node for node in node_objects}
    by_node = {node: job for node, job in cleanup_jobs.items() if node}
    retirement = decisions.retire_nodes(artifact, stale, by_name, by_node, busy)
    for node in retirement.cleanup:
        kube.create_job(builders.cleanup_job(artifact, node=node, defaults=_defaults(settings)))
    for job_name in retirement.remove_jobs:
        kube.delete_job(namespace, job_name)
    return retirement.forget


def _record_metrics(
    artifact: ModelArtifact, plan: decisions.Plan, durations: Mapping[str, float], previous: str | None
) -> None:
    metrics.record_phase(artifact.namespace, artifact.name, plan.phase)
    if plan.phase == "Failed" and previous != "Failed":
        failed = next((t for t in plan.targets if t.phase == "Failed"), None)
        metrics.failures.labels(reason=(failed.reason if failed else None) or "Unknown").inc()
    # a Job's completion time may land after the status turned Ready: observe each Job once
    for uid, seconds in durations.items():
        if uid not in _timed_jobs:
            _timed_jobs.add(uid)
            metrics.download_duration.observe(seconds)
    if plan.phase == "Ready" and previous != "Ready":
        for target in plan.targets:
            if target.result and target.result.total_bytes:
                metrics.downloaded_bytes.inc(target.result.total_bytes)
            metrics.downloads_completed.inc()


def _no_claims(storage: str) -> Iterable[policy.PathClaim]:
    return ()


async def reconcile(
    namespace: str, name: str, settings: OperatorSettings, claims: ClaimLookup = _no_claims
) -> Outcome | None:
    """Bring one artifact's Jobs and status in line with its spec. Serialized per artifact.

    ``claims`` gives the paths other artifacts hold on a storage (``PathConflict`` checks)."""
    started = time.monotonic()
    async with _lock_for(namespace, name):
        try:
            return await kube.run_blocking(_reconcile_sync, namespace, name, settings, claims)
        except ModelDepotError as error:
            metrics.reconcile_errors.labels(retryable=str(error.is_retryable).lower()).inc()
            raise
        finally:
            metrics.reconcile_duration.observe(time.monotonic() - started)


# ----------------------------------------------------------------------------------------- deletion


@dataclass(frozen=True)
class FinalizeStep:
    """Where the deletion flow stands: done, or waiting (with what for)."""

    done: bool
    waiting_for: str = ""
    warnings: tuple[tuple[str, str], ...] = ()


def _cleanup_targets(
    artifact: ModelArtifact, settings: OperatorSettings
) -> tuple[list[str | None], list[tuple[str, str]]]:
    """The targets whose files a cleanup Job must remove, and warnings for the unreachable ones."""
    warnings: list[tuple[str, str]] = []
    claim_spec = artifact.spec.storage.persistent_volume_claim
    if claim_spec is not None:
        if claim_spec.create is not None:
            return [], []  # the claim is ours and goes with the artifact, files and all
        claim = kube.get_claim(artifact.namespace, claim_spec.claim_name)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            # a claim being deleted admits no new pods; its files go with its volume
            state = "is gone" if claim is None else "is being deleted"
            message = f"PersistentVolumeClaim {claim_spec.claim_name!r} {state}; nothing to clean up"
            return [], [("StorageGone", message)]
        return [None], warnings
    known = set(artifact.status.nodes)
    known.update(
        (job["metadata"].get("annotations") or {}).get(builders.ANNOTATION_NODE, "")
        for job in kube.list_jobs(
            _jobs_namespace(artifact, settings), builders.artifact_selector(artifact, FETCHER_APP)
        )
    )
    targets: list[str | None] = []
    for node in sorted(n for n in known if n):
        if kube.node_exists(node):
            targets.append(node)
        else:
            warnings.append(("NodeGone", f"node {node} no longer exists; its copy cannot be removed"))
    return targets, warnings


def _finalize_sync(body: Mapping[str, Any], runtime: float, settings: OperatorSettings) -> FinalizeStep:
    artifact = ModelArtifact.from_body(body)
    namespace, name = artifact.namespace, artifact.name
    jobs_namespace = _jobs_namespace(artifact, settings)
    fetch_selector = builders.artifact_selector(artifact, FETCHER_APP)
    if (body.get("status") or {}).get("phase") != "Deleting":
        kube.patch_artifact_status(
            namespace,
            name,
            {"status": decisions.deleting_patch(artifact, now=_now(), message="cancelling downloads")},
        )
    metrics.record_phase(namespace, name, "Deleting")
    for job in kube.list_jobs(jobs_namespace, fetch_selector):
        if not job["metadata"].get("deletionTimestamp"):
            kube.delete_job(jobs_namespace, job["metadata"]["name"])
    warnings: list[tuple[str, str]] = []
    pods = kube.list_pods(jobs_namespace, fetch_selector)
    if pods:
        if runtime < settings.cancel_timeout_seconds:
            return FinalizeStep(False, f"{len(pods)} download pod(s) to stop")
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if not node or not kube.node_exists(node):
                kube.force_delete_pod(jobs_namespace, pod["metadata"]["name"])
        warnings.append(
            (
                "CancelTimedOut",
                f"{len(pods)} download pod(s) did not stop in {settings.cancel_timeout_seconds}s",
            )
        )
    if artifact.spec.deletion_policy == "Retain":
        return _finalized(artifact, settings, warnings)
    broken = policy.violations(artifact, policy.Policy.from_settings(settings))
    if broken:
        # no Job ever runs for a spec against policy, not even to delete (it could name /etc)
        warnings.append((PolicyViolationError.reason, "no cleanup Job: " + "; ".join(broken)))
        return _finalized(artifact, settings, warnings)
    targets, target_warnings = _cleanup_targets(artifact, settings)
    warnings.extend(target_warnings)
    cleanup_jobs = {
        job["metadata"]["name"]: job
        for job in kube.list_jobs(jobs_namespace, builders.artifact_selector(artifact, CLEANUP_APP))
    }
    pending = []
    for node in targets:
        job_name = builders.cleanup_job_name(name, node, namespace)
        cleanup = cleanup_jobs.get(job_name)
        if cleanup is None:
            kube.create_job(builders.cleanup_job(artifact, node=node, defaults=_defaults(settings)))
            pending.append(job_name)
            continue
        state = decisions.JobState.from_job(cleanup)
        if state.failure_reason:
            warnings.append(("CleanupFailed", f"cleanup Job {job_name} failed: {state.failure_message}"))
        elif not state.complete:
            pending.append(job_name)
    if pending and runtime < settings.cleanup_timeout_seconds:
        return FinalizeStep(False, f"cleanup Job(s) {', '.join(pending)}", tuple(warnings))
    if pending:
        warnings.append(
            (
                "CleanupTimedOut",
                f"cleanup Job(s) {', '.join(pending)} did not finish in {settings.cleanup_timeout_seconds}s; files may remain",
            )
        )
    return _finalized(artifact, settings, warnings)


def _finalized(
    artifact: ModelArtifact, settings: OperatorSettings, warnings: list[tuple[str, str]]
) -> FinalizeStep:
    """The last step: what lives in the operator's namespace has no ownerReference to collect it."""
    if artifact.is_node_local:
        kube.delete_fetcher_objects(settings.operator_namespace, builders.fetcher_identity_name(artifact))
    return FinalizeStep(True, warnings=tuple(warnings))


async def finalize(body: Mapping[str, Any], runtime: float, settings: OperatorSettings) -> FinalizeStep:
    """One pass of the deletion flow; call again until `done` (each wait is bounded by settings)."""
    async with _lock_for(body["metadata"]["namespace"], body["metadata"]["name"]):
        step = await kube.run_blocking(_finalize_sync, body, runtime, settings)
    if step.done:
        metrics.record_phase(body["metadata"]["namespace"], body["metadata"]["name"], None)
        _locks.pop((body["metadata"]["namespace"], body["metadata"]["name"]), None)
    return step
