"""Pure manifest builders: the Kubernetes objects the operator creates, as plain dicts.

Fetch Jobs, cleanup Jobs, the per-namespace fetcher ServiceAccount/Role/RoleBinding and the
PersistentVolumeClaim of ``storage.persistentVolumeClaim.create``. No I/O: ``kube.py`` applies what
these functions return. Names, labels and the fetcher CLI follow docs/internals.md.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any

from .models import (
    API_VERSION,
    CLEANUP_APP,
    FETCHER_APP,
    FETCHER_SERVICE_ACCOUNT,
    GROUP,
    KIND,
    LABEL_ARTIFACT,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_NODE,
    MANAGED_BY,
    PLURAL,
    ModelArtifact,
)

DATA_MOUNT = "/data"
FETCH_CONTAINER = "fetch"
CLEANUP_CONTAINER = "cleanup"
PREPARE_CONTAINER = "prepare"
RUN_AS = 65532
TERMINATION_LOG = "/dev/termination-log"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
# The fetcher exits 2 on a permanent failure (docs/internals.md): retrying cannot help.
PERMANENT_EXIT_CODE = 2
CLEANUP_BACKOFF_LIMIT = 3
CLEANUP_DEADLINE_SECONDS = 900
CLEANUP_TTL_SECONDS = 3600

MAX_NAME = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Annotations carry the full artifact and node names, which may exceed a label value's 63 characters.
ANNOTATION_ARTIFACT = LABEL_ARTIFACT
ANNOTATION_NODE = LABEL_NODE


def _hash8(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:8]


def label_value(value: str) -> str:
    """``value`` if it is a valid label value, else a valid ≤63-char prefix plus a hash of it."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    head = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:54].rstrip("-_.")
    return f"{head}-{_hash8(value)}" if head else _hash8(value)


def _job_name(prefix: str, name: str, *hashed: str) -> str:
    # prefix + "-" + trunc + "-" + 8 hex chars must fit in 63 (the Job's pods get it as a label value)
    room = MAX_NAME - len(prefix) - 1 - 1 - 8
    trunc = re.sub(r"[^a-z0-9-]", "-", name.lower())[:room].strip("-")
    return f"{prefix}-{trunc}-{_hash8(name, *hashed)}" if trunc else f"{prefix}-{_hash8(name, *hashed)}"


def fetch_job_name(name: str, generation: int, node: str | None) -> str:
    """``md-<name, truncated>-<hash8 over (name, generation, node)>``, at most 63 characters."""
    return _job_name("md", name, str(generation), node or "")


def cleanup_job_name(name: str, node: str | None) -> str:
    """``mdc-<name, truncated>-<hash8 over (name, "cleanup", node)>``, at most 63 characters."""
    return _job_name("mdc", name, "cleanup", node or "")


def common_labels(artifact: ModelArtifact, *, app: str, node: str | None = None) -> dict[str, str]:
    """Labels of everything the operator creates for an artifact (docs/internals.md)."""
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: app,
        LABEL_ARTIFACT: label_value(artifact.name),
        LABEL_GENERATION: str(artifact.generation),
    }
    if node is not None:
        labels[LABEL_NODE] = label_value(node)
    return labels


def owner_reference(artifact: ModelArtifact, *, block_owner_deletion: bool = True) -> dict[str, Any]:
    """The controller ownerReference pointing at the ModelArtifact."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": artifact.name,
        "uid": artifact.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": block_owner_deletion,
    }


def data_path(artifact: ModelArtifact) -> str:
    """Where the published path ``P`` is inside a pod: ``/data/P``."""
    return posixpath.join(DATA_MOUNT, artifact.published_path)


def _data_volume(artifact: ModelArtifact) -> dict[str, Any]:
    pvc = artifact.spec.storage.persistent_volume_claim
    if pvc is not None:
        return {"name": "data", "persistentVolumeClaim": {"claimName": pvc.claim_name}}
    local = artifact.spec.storage.node_local
    assert local is not None
    return {"name": "data", "hostPath": {"path": local.path, "type": "DirectoryOrCreate"}}


def _node_affinity(node: str) -> dict[str, Any]:
    # matchFields on metadata.name instead of spec.nodeName: the scheduler still checks resources,
    # taints and volume topology, and the pod stays Pending (not Failed) while the node is full.
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            }
        }
    }


def _resources(artifact: ModelArtifact) -> dict[str, Any]:
    res = artifact.spec.downloader.resources
    if res is None or (res.requests is None and res.limits is None):
        return {k: dict(v) for k, v in DEFAULT_RESOURCES.items()}
    # the user's resources replace the defaults entirely: a partial merge could leave requests > limits
    return {k: {rk: str(rv) for rk, rv in v.items()} for k, v in res.to_api().items()}


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def fetch_args(
    artifact: ModelArtifact, *, node: str | None, generation: int, revision: str | None = None
) -> list[str]:
    """The fetcher's arguments, exactly the CLI of docs/internals.md (after the ``modeldepot`` command).

    ``revision`` overrides the spec's (a commit another node of this generation resolved it to).
    """
    hf = artifact.hugging_face
    args = [
        "fetch",
        hf.repo,
        "--to",
        data_path(artifact),
        "--revision",
        revision or hf.revision,
        "--repo-type",
        hf.repo_type,
    ]
    for pattern in hf.include or ():
        args += ["--include", pattern]
    for pattern in hf.exclude or ():
        args += ["--exclude", pattern]
    if hf.endpoint:
        args += ["--endpoint", hf.endpoint]
    args += ["--concurrency", str(artifact.spec.downloader.concurrency)]
    args += ["--report", f"{artifact.namespace}/{artifact.name}", "--generation", str(generation)]
    if node is not None:
        args += ["--node", node]
    return args


def _fetch_env(artifact: ModelArtifact, extra_env: Mapping[str, str] | None) -> list[dict[str, Any]]:
    hf = artifact.hugging_face
    env: list[dict[str, Any]] = [
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        # the root filesystem is read-only; anything that wants a home or cache gets the emptyDir
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "MODELDEPOT_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MODELDEPOT_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if hf.endpoint:
        env.append({"name": "HF_ENDPOINT", "value": hf.endpoint})
    if hf.token_secret_ref is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": hf.token_secret_ref.name,
                        "key": hf.token_secret_ref.key,
                        "optional": False,
                    }
                },
            }
        )
    taken = {e["name"] for e in env}
    for key, value in sorted((extra_env or {}).items()):
        if key not in taken and key != "HF_TOKEN":
            env.append({"name": key, "value": value})
    return env


def _prepare_container(artifact: ModelArtifact, image: str) -> dict[str, Any]:
    """Init container that creates the node-local directories and hands them to the fetcher's uid.

    hostPath directories are created root-owned and fsGroup does not apply to hostPath, so a
    root step with only CAP_CHOWN and CAP_DAC_OVERRIDE prepares exactly the directories the
    fetcher writes into (not recursively: files below are already the fetcher's).
    """
    p = artifact.published_path
    parent = posixpath.dirname(p)
    dirs = [
        DATA_MOUNT + "/.modeldepot",
        DATA_MOUNT + "/.modeldepot/store",
        DATA_MOUNT + "/.modeldepot/staging",
    ]
    for base in (DATA_MOUNT, DATA_MOUNT + "/.modeldepot/store", DATA_MOUNT + "/.modeldepot/staging"):
        acc = base
        for part in parent.split("/") if parent else ():
            acc = f"{acc}/{part}"
            dirs.append(acc)
    quoted = " ".join(shlex.quote(d) for d in dirs)
    script = f"set -eu; mkdir -p {quoted}; chown {RUN_AS}:{RUN_AS} {quoted}"
    return {
        "name": PREPARE_CONTAINER,
        "image": image,
        "command": ["/bin/sh", "-c", script],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _annotations(artifact: ModelArtifact, node: str | None) -> dict[str, str]:
    annotations = {ANNOTATION_ARTIFACT: artifact.name}
    if node is not None:
        annotations[ANNOTATION_NODE] = node
    return annotations


def _data_container(
    name: str,
    image: str,
    pull: str | None,
    *,
    args: list[str],
    resources: dict[str, Any],
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `modeldepot` container working on the data volume at /data (fetch or cleanup)."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": ["modeldepot"],
        "args": args,
        "resources": resources,
        "securityContext": _restricted_container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env is not None:
        container["env"] = env
    if pull:
        container["imagePullPolicy"] = pull
    return container


def _data_pod_spec(
    artifact: ModelArtifact, container: dict[str, Any], node: str | None, *, service_account: str | None
) -> dict[str, Any]:
    """The pod of a fetch or cleanup Job: the data volume, and for node-local the node pinning.

    Without a service account the pod gets no API token (cleanup needs no API access).
    """
    pod_spec: dict[str, Any] = {"restartPolicy": "Never"}
    if service_account is not None:
        pod_spec["serviceAccountName"] = service_account
    pod_spec.update(
        {
            "automountServiceAccountToken": service_account is not None,
            "terminationGracePeriodSeconds": 30,
            "securityContext": _pod_security(),
            "containers": [container],
            "volumes": [_data_volume(artifact), {"name": "tmp", "emptyDir": {}}],
        }
    )
    if node is not None:
        local = artifact.spec.storage.node_local
        assert local is not None
        pod_spec["affinity"] = _node_affinity(node)
        if local.tolerations:
            pod_spec["tolerations"] = [t.to_api() for t in local.tolerations]
    return pod_spec


def fetch_job(
    artifact: ModelArtifact,
    *,
    node: str | None,
    image: str,
    generation: int | None = None,
    image_pull_policy: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    service_account: str = FETCHER_SERVICE_ACCOUNT,
    revision: str | None = None,
) -> dict[str, Any]:
    """The download Job for one target: the claim (``node=None``) or one node of nodeLocal storage.

    ``image`` is the operator's default; ``spec.downloader.image`` overrides it when set.
    ``extra_env`` passes ``MODELDEPOT_*`` settings to the fetcher (it can never set HF_TOKEN).
    """
    if artifact.is_node_local and node is None:
        raise ValueError("nodeLocal storage needs a node")
    if not artifact.is_node_local and node is not None:
        raise ValueError("persistentVolumeClaim storage takes no node")
    gen = artifact.generation if generation is None else generation
    dl = artifact.spec.downloader
    image = dl.image or image
    pull = dl.image_pull_policy or image_pull_policy
    labels = common_labels(artifact, app=FETCHER_APP, node=node)
    labels[LABEL_GENERATION] = str(gen)

    container = _data_container(
        FETCH_CONTAINER,
        image,
        pull,
        args=fetch_args(artifact, node=node, generation=gen, revision=revision),
        resources=_resources(artifact),
        env=_fetch_env(artifact, extra_env),
    )
    pod_spec = _data_pod_spec(artifact, container, node, service_account=service_account)
    if node is not None:
        pod_spec["initContainers"] = [_prepare_container(artifact, image)]
        if pull:
            pod_spec["initContainers"][0]["imagePullPolicy"] = pull

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": fetch_job_name(artifact.name, gen, node),
            "namespace": artifact.namespace,
            "labels": labels,
            "annotations": _annotations(artifact, node),
            "ownerReferences": [owner_reference(artifact)],
        },
        "spec": {
            "backoffLimit": dl.backoff_limit,
            "activeDeadlineSeconds": dl.active_deadline_seconds,
            "completions": 1,
            "parallelism": 1,
            # a replacement pod starts only once the old one is gone: two writers on one staging dir
            # would corrupt the resume state
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {
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
            },
            "template": {
                "metadata": {"labels": dict(labels), "annotations": _annotations(artifact, node)},
                "spec": pod_spec,
            },
        },
    }


def cleanup_job(
    artifact: ModelArtifact,
    *,
    node: str | None,
    image: str,
    image_pull_policy: str | None = None,
) -> dict[str, Any]:
    """The Job that removes ``/data/P`` and its store and staging copies (``modeldepot cleanup``).

    It runs with the namespace's default ServiceAccount and no API token (it needs no API access,
    and the fetcher identity may already be gone while a namespace is being deleted).
    """
    if artifact.is_node_local and node is None:
        raise ValueError("nodeLocal storage needs a node")
    dl = artifact.spec.downloader
    image = dl.image or image
    pull = dl.image_pull_policy or image_pull_policy
    labels = common_labels(artifact, app=CLEANUP_APP, node=node)
    container = _data_container(
        CLEANUP_CONTAINER,
        image,
        pull,
        args=["cleanup", "--to", data_path(artifact)],
        resources={"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    )
    pod_spec = _data_pod_spec(artifact, container, node, service_account=None)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(artifact.name, node),
            "namespace": artifact.namespace,
            "labels": labels,
            "annotations": _annotations(artifact, node),
            # not blocking: deletion of the artifact must be able to finish without this Job
            "ownerReferences": [owner_reference(artifact, block_owner_deletion=False)],
        },
        "spec": {
            "backoffLimit": CLEANUP_BACKOFF_LIMIT,
            "activeDeadlineSeconds": CLEANUP_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": CLEANUP_TTL_SECONDS,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": _annotations(artifact, node)},
                "spec": pod_spec,
            },
        },
    }


def _fetcher_labels() -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: FETCHER_APP}


def fetcher_service_account(namespace: str) -> dict[str, Any]:
    """The per-namespace identity of the fetch pods."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": FETCHER_SERVICE_ACCOUNT, "namespace": namespace, "labels": _fetcher_labels()},
    }


def fetcher_role(namespace: str) -> dict[str, Any]:
    """Only what the fetcher needs: read its ModelArtifact, patch its status."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": FETCHER_SERVICE_ACCOUNT, "namespace": namespace, "labels": _fetcher_labels()},
        "rules": [
            {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get"]},
        ],
    }


def fetcher_role_binding(namespace: str) -> dict[str, Any]:
    """Binds the fetcher Role to the fetcher ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": FETCHER_SERVICE_ACCOUNT, "namespace": namespace, "labels": _fetcher_labels()},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FETCHER_SERVICE_ACCOUNT,
        },
        "subjects": [{"kind": "ServiceAccount", "name": FETCHER_SERVICE_ACCOUNT, "namespace": namespace}],
    }


def claim(artifact: ModelArtifact) -> dict[str, Any]:
    """The PersistentVolumeClaim of ``storage.persistentVolumeClaim.create``.

    Owned by the artifact (garbage-collected with it) only under deletionPolicy Delete; under
    Retain the claim, and so the files, outlive the artifact.
    """
    pvc = artifact.spec.storage.persistent_volume_claim
    if pvc is None or pvc.create is None:
        raise ValueError("the artifact does not ask for a claim to be created")
    spec: dict[str, Any] = {
        "accessModes": list(pvc.create.access_modes),
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": str(pvc.create.size)}},
    }
    if pvc.create.storage_class_name is not None:
        spec["storageClassName"] = pvc.create.storage_class_name
    metadata: dict[str, Any] = {
        "name": pvc.claim_name,
        "namespace": artifact.namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_NAME: FETCHER_APP,
            LABEL_ARTIFACT: label_value(artifact.name),
        },
        "annotations": {ANNOTATION_ARTIFACT: artifact.name},
    }
    if artifact.spec.deletion_policy == "Delete":
        metadata["ownerReferences"] = [owner_reference(artifact)]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}
