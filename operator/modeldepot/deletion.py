"""The deletion flow behind the finalizer, one bounded pass at a time.

Cancel the downloads (delete fetch Jobs, wait for their pods up to `cancel_timeout_seconds`, then
release pods of vanished nodes), and under `deletionPolicy: Delete` remove the files with cleanup
Jobs, waiting up to `cleanup_timeout_seconds`; then delete what lives in the operator's namespace.
Deletion always completes: a vanished node or claim, a failed or slow cleanup Job become Warning
events, never a resource stuck in Terminating. Talks to Kubernetes only through `ClusterApi`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import builders, decisions, metrics, policy
from .clusterapi import ClusterApi
from .models import CLEANUP_APP, FETCHER_APP, ModelArtifact, status_merge_patch
from .settings import OperatorSettings
from .vocabulary import Phase, Reason

EventWarning = tuple[Reason, str]
"""A Warning Event to post: its reason and message."""


def job_defaults(settings: OperatorSettings) -> builders.JobDefaults:
    """What the admin set for every Job, from the operator's settings."""
    return builders.JobDefaults(
        image=settings.fetcher_image,
        image_pull_policy=settings.fetcher_image_pull_policy,
        extra_env=settings.fetcher_env,
        operator_namespace=settings.operator_namespace,
    )


@dataclass(frozen=True)
class FinalizeStep:
    """Where the deletion flow stands: done, or waiting (with what for)."""

    done: bool
    waiting_for: str = ""
    warnings: tuple[EventWarning, ...] = ()


def _cleanup_targets(
    api: ClusterApi, artifact: ModelArtifact, settings: OperatorSettings
) -> tuple[list[str | None], list[EventWarning]]:
    """The targets whose files a cleanup Job must remove, and warnings for the unreachable ones."""
    warnings: list[EventWarning] = []
    claim_spec = artifact.spec.storage.persistent_volume_claim
    if claim_spec is not None:
        if claim_spec.create is not None:
            return [], []  # the claim is ours and goes with the artifact, files and all
        claim = api.get_claim(artifact.namespace, claim_spec.claim_name)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            # a claim being deleted admits no new pods; its files go with its volume
            state = "is gone" if claim is None else "is being deleted"
            message = f"PersistentVolumeClaim {claim_spec.claim_name!r} {state}; nothing to clean up"
            return [], [(Reason.STORAGE_GONE, message)]
        return [None], warnings
    known = {entry.name for entry in artifact.status.nodes}
    # the nodes that hold a verified copy are recorded outside the artifact (decisions.NodeRecords)
    records = api.get_node_records(settings.operator_namespace, builders.fetcher_identity_name(artifact))
    known.update(decisions.NodeRecords.from_data(artifact.metadata.uid, records).nodes)
    known.update(
        (job["metadata"].get("annotations") or {}).get(builders.ANNOTATION_NODE, "")
        for job in api.list_jobs(
            builders.job_namespace(artifact, settings.operator_namespace),
            builders.artifact_selector(artifact, FETCHER_APP),
        )
    )
    targets: list[str | None] = []
    for node in sorted(n for n in known if n):
        if api.node_exists(node):
            targets.append(node)
        else:
            warnings.append((Reason.NODE_GONE, f"node {node} no longer exists; its copy cannot be removed"))
    return targets, warnings


def _cancel_downloads(
    api: ClusterApi, artifact: ModelArtifact, runtime: float, settings: OperatorSettings
) -> FinalizeStep | None:
    """Delete the fetch Jobs and wait for their pods; after the cancel timeout, release pods of
    vanished nodes. A FinalizeStep while still waiting (or with a warning), else None."""
    jobs_namespace = builders.job_namespace(artifact, settings.operator_namespace)
    selector = builders.artifact_selector(artifact, FETCHER_APP)
    for job in api.list_jobs(jobs_namespace, selector):
        if not job["metadata"].get("deletionTimestamp"):
            api.delete_job(jobs_namespace, job["metadata"]["name"])
    pods = api.list_pods(jobs_namespace, selector)
    if not pods:
        return None
    if runtime < settings.cancel_timeout_seconds:
        return FinalizeStep(False, f"{len(pods)} download pod(s) to stop")
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if not node or not api.node_exists(node):
            api.force_delete_pod(jobs_namespace, pod["metadata"]["name"])
    message = f"{len(pods)} download pod(s) did not stop in {settings.cancel_timeout_seconds}s"
    return FinalizeStep(True, warnings=((Reason.CANCEL_TIMED_OUT, message),))


def _remove_files(
    api: ClusterApi, artifact: ModelArtifact, runtime: float, settings: OperatorSettings
) -> FinalizeStep:
    """Cleanup Jobs on every reachable target, waited for up to the cleanup timeout."""
    targets, warnings = _cleanup_targets(api, artifact, settings)
    jobs_namespace = builders.job_namespace(artifact, settings.operator_namespace)
    cleanup_jobs = {
        job["metadata"]["name"]: job
        for job in api.list_jobs(jobs_namespace, builders.artifact_selector(artifact, CLEANUP_APP))
    }
    pending = []
    for node in targets:
        job_name = builders.cleanup_job_name(artifact.name, node, artifact.namespace)
        cleanup = cleanup_jobs.get(job_name)
        if cleanup is None:
            api.create_job(builders.cleanup_job(artifact, node=node, defaults=job_defaults(settings)))
            pending.append(job_name)
            continue
        state = decisions.JobState.from_job(cleanup)
        if state.failure_reason:
            message = f"cleanup Job {job_name} failed: {state.failure_message}"
            warnings.append((Reason.CLEANUP_FAILED, message))
        elif not state.complete:
            pending.append(job_name)
    waiting = f"cleanup Job(s) {', '.join(pending)}"
    if pending and runtime < settings.cleanup_timeout_seconds:
        return FinalizeStep(False, waiting, tuple(warnings))
    if pending:
        timeout = settings.cleanup_timeout_seconds
        warnings.append(
            (Reason.CLEANUP_TIMED_OUT, f"{waiting} did not finish in {timeout}s; files may remain")
        )
    return FinalizeStep(True, warnings=tuple(warnings))


def finalize_step(
    api: ClusterApi, body: Mapping[str, Any], runtime: float, settings: OperatorSettings
) -> FinalizeStep:
    """One pass of the deletion flow (blocking); `runtime`: seconds since deletion began."""
    artifact = ModelArtifact.from_body(body)
    if (body.get("status") or {}).get("phase") != Phase.DELETING:
        status = decisions.deleting_status(artifact, now=datetime.now(UTC), message="cancelling downloads")
        api.patch_artifact_status(artifact.namespace, artifact.name, {"status": status_merge_patch(status)})
    metrics.record_phase(artifact.namespace, artifact.name, Phase.DELETING)
    cancelled = _cancel_downloads(api, artifact, runtime, settings)
    if cancelled is not None and not cancelled.done:
        return cancelled
    warnings: list[EventWarning] = list(cancelled.warnings) if cancelled is not None else []
    if artifact.spec.deletion_policy == "Retain":
        return _finalized(api, artifact, settings, warnings)
    broken = policy.violations(artifact, policy.Policy.from_settings(settings))
    if broken:
        # no Job ever runs for a spec against policy, not even to delete (it could name /etc)
        warnings.append((Reason.POLICY_VIOLATION, "no cleanup Job: " + "; ".join(broken)))
        return _finalized(api, artifact, settings, warnings)
    removed = _remove_files(api, artifact, runtime, settings)
    warnings.extend(removed.warnings)
    if not removed.done:
        return FinalizeStep(False, removed.waiting_for, tuple(warnings))
    return _finalized(api, artifact, settings, warnings)


def _finalized(
    api: ClusterApi, artifact: ModelArtifact, settings: OperatorSettings, warnings: list[EventWarning]
) -> FinalizeStep:
    """The last step: what lives in the operator's namespace (identity, token copy, node records)
    has no ownerReference to collect it."""
    if artifact.is_node_local:
        api.delete_fetcher_objects(settings.operator_namespace, builders.fetcher_identity_name(artifact))
    return FinalizeStep(True, warnings=tuple(warnings))
