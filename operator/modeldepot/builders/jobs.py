"""Fetch and cleanup Jobs, as plain dicts: where they run, their retry and failure policies.

Claim Jobs run in the artifact's namespace and are owned by it; node-local Jobs run in the
operator's namespace (docs/security.md). Pure.
"""

from __future__ import annotations

from typing import Any

from ..models import CLEANUP_APP, FETCHER_APP, LABEL_GENERATION, ModelArtifact
from .names import (
    JobDefaults,
    artifact_annotations,
    cleanup_job_name,
    common_labels,
    fetch_job_name,
    fetcher_identity_name,
    job_namespace,
    owned_here,
)
from .pods import (
    CLEANUP_CONTAINER,
    FETCH_CONTAINER,
    data_container,
    data_path,
    data_pod_spec,
    fetch_args,
    fetch_env,
    owner_arg,
    prepare_container,
    resources,
    token_volume,
)

# The fetcher exits 2 on a permanent failure (docs/internals.md): retrying cannot help.
PERMANENT_EXIT_CODE = 2
CLEANUP_BACKOFF_LIMIT = 3
CLEANUP_DEADLINE_SECONDS = 900
CLEANUP_TTL_SECONDS = 3600


def fetch_job(
    artifact: ModelArtifact,
    *,
    node: str | None,
    defaults: JobDefaults,
    generation: int | None = None,
    revision: str | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """The download Job for one target: the claim (``node=None``) or one node of nodeLocal storage.

    ``defaults.image`` is the operator's; ``spec.downloader.image`` overrides it for the fetch
    container only, and only when the admin policy allows that image (``policy.violations``).
    ``defaults.extra_env`` passes ``MODELDEPOT_*`` settings (it can never set the token).
    """
    if artifact.is_node_local and node is None:
        raise ValueError("nodeLocal storage needs a node")
    if not artifact.is_node_local and node is not None:
        raise ValueError("persistentVolumeClaim storage takes no node")
    gen = artifact.generation if generation is None else generation
    dl = artifact.spec.downloader
    labels = common_labels(artifact, app=FETCHER_APP, node=node)
    labels[LABEL_GENERATION] = str(gen)
    namespace = job_namespace(artifact, defaults.operator_namespace)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": fetch_job_name(artifact.name, gen, node, artifact.namespace),
            "namespace": namespace,
            "labels": labels,
            "annotations": artifact_annotations(artifact, node),
            **owned_here(artifact, namespace, block_owner_deletion=True),
        },
        "spec": {
            "backoffLimit": dl.backoff_limit,
            "activeDeadlineSeconds": dl.active_deadline_seconds,
            "completions": 1,
            "parallelism": 1,
            # a replacement pod starts only once the old one is gone: two writers on one staging dir
            # would corrupt the resume state
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _FETCH_FAILURE_POLICY,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": artifact_annotations(artifact, node)},
                "spec": _fetch_pod_spec(
                    artifact, node, defaults, generation=gen, revision=revision, report=report
                ),
            },
        },
    }


_FETCH_FAILURE_POLICY: dict[str, Any] = {
    "rules": [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": FETCH_CONTAINER,
                "operator": "In",
                "values": [PERMANENT_EXIT_CODE],
            },
        },
        # eviction, preemption, node drain: not the download's fault, not a retry
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
}


def _fetch_pod_spec(
    artifact: ModelArtifact,
    node: str | None,
    defaults: JobDefaults,
    *,
    generation: int,
    revision: str | None,
    report: bool = True,
) -> dict[str, Any]:
    """The fetch pod: the fetch container (the spec's image when the policy allowed it), the token
    as a file, the artifact's own identity, and for node-local the `prepare` init step."""
    dl = artifact.spec.downloader
    token = token_volume(artifact)
    container = data_container(
        FETCH_CONTAINER,
        dl.image or defaults.image,
        dl.image_pull_policy or defaults.image_pull_policy,
        args=fetch_args(artifact, node=node, generation=generation, revision=revision, report=report),
        resources=resources(artifact),
        env=fetch_env(artifact, defaults.extra_env),
        token=token is not None,
    )
    pod_spec = data_pod_spec(
        artifact,
        container,
        node,
        service_account=fetcher_identity_name(artifact),
        extra_volumes=[token] if token else None,
    )
    if node is not None:
        pod_spec["initContainers"] = [prepare_container(artifact, defaults)]
    return pod_spec


def cleanup_job(artifact: ModelArtifact, *, node: str | None, defaults: JobDefaults) -> dict[str, Any]:
    """The Job that removes ``/data/P`` and its store and staging copies (``modeldepot cleanup``).

    Always the operator's own image (a tenant's image never deletes files), no API token (cleanup
    needs no API access), and only what the artifact's owner record names is removed.
    """
    if artifact.is_node_local and node is None:
        raise ValueError("nodeLocal storage needs a node")
    labels = common_labels(artifact, app=CLEANUP_APP, node=node)
    namespace = job_namespace(artifact, defaults.operator_namespace)
    container = data_container(
        CLEANUP_CONTAINER,
        defaults.image,
        defaults.image_pull_policy,
        args=["cleanup", "--to", data_path(artifact), "--owner", owner_arg(artifact)],
        resources={"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    )
    pod_spec = data_pod_spec(artifact, container, node, service_account=None)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(artifact.name, node, artifact.namespace),
            "namespace": namespace,
            "labels": labels,
            "annotations": artifact_annotations(artifact, node),
            # not blocking: deletion of the artifact must be able to finish without this Job
            **owned_here(artifact, namespace, block_owner_deletion=False),
        },
        "spec": {
            "backoffLimit": CLEANUP_BACKOFF_LIMIT,
            "activeDeadlineSeconds": CLEANUP_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": CLEANUP_TTL_SECONDS,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": artifact_annotations(artifact, node)},
                "spec": pod_spec,
            },
        },
    }
