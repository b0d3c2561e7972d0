"""Pure manifest builders: the Kubernetes objects the operator creates, as plain dicts.

Fetch Jobs, cleanup Jobs, the per-artifact fetcher identity (ServiceAccount, a Role that may patch
only this artifact's status, its RoleBinding, and for node-local a copy of the token Secret) and
the PersistentVolumeClaim of ``storage.persistentVolumeClaim.create``. No I/O: ``kube.py`` applies
what these functions return. Names, labels and the fetcher CLI follow docs/internals.md.

Where Jobs run (docs/security.md): claim downloads in the artifact's namespace, as a Pod Security
``restricted`` pod; node-local downloads (hostPath) only in the operator's own namespace, so a
tenant namespace never needs to admit a privileged pod and tenants cannot see or edit those pods.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import (
    API_VERSION,
    CLEANUP_APP,
    FETCHER_APP,
    GROUP,
    KIND,
    LABEL_ARTIFACT,
    LABEL_ARTIFACT_NAMESPACE,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_NODE,
    MANAGED_BY,
    PLURAL,
    ModelArtifact,
)

DEFAULT_OPERATOR_NAMESPACE = "modeldepot-system"

DATA_MOUNT = "/data"
FETCH_CONTAINER = "fetch"
CLEANUP_CONTAINER = "cleanup"
PREPARE_CONTAINER = "prepare"
RUN_AS = 65532
TERMINATION_LOG = "/dev/termination-log"
TOKEN_DIR = "/var/run/secrets/modeldepot/hf-token"
TOKEN_FILE = "token"
# the key of the operator's copy of a token Secret (node-local Jobs run in the operator's namespace)
COPIED_TOKEN_KEY = "token"
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
ANNOTATION_ARTIFACT_NAMESPACE = LABEL_ARTIFACT_NAMESPACE
ANNOTATION_NODE = LABEL_NODE


@dataclass(frozen=True)
class JobDefaults:
    """What the admin set for every Job (operator settings): image, pull policy, fetcher env and the
    operator's namespace, where node-local Jobs run."""

    image: str
    image_pull_policy: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE


def job_namespace(artifact: ModelArtifact, operator_namespace: str) -> str:
    """Claim Jobs run in the artifact's namespace; node-local (hostPath) Jobs in the operator's."""
    return operator_namespace if artifact.is_node_local else artifact.namespace


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


def fetch_job_name(name: str, generation: int, node: str | None, namespace: str = "") -> str:
    """``md-<name, truncated>-<hash8 over (name, generation, node[, namespace])>``, ≤ 63 characters.

    Node-local Jobs of every namespace share the operator's namespace, so their hash includes the
    artifact's namespace (claim Jobs keep the names they always had).
    """
    extra = (namespace,) if node is not None and namespace else ()
    return _job_name("md", name, str(generation), node or "", *extra)


def cleanup_job_name(name: str, node: str | None, namespace: str = "") -> str:
    """``mdc-<name, truncated>-<hash8 over (name, "cleanup", node[, namespace])>``, ≤ 63 characters."""
    extra = (namespace,) if node is not None and namespace else ()
    return _job_name("mdc", name, "cleanup", node or "", *extra)


def fetcher_identity_name(artifact: ModelArtifact) -> str:
    """``mdf-<name, truncated>-<hash8 over (namespace, name)>``: the per-artifact fetcher
    ServiceAccount, Role, RoleBinding (and node-local token copy)."""
    return _job_name("mdf", artifact.name, artifact.namespace)


def common_labels(artifact: ModelArtifact, *, app: str, node: str | None = None) -> dict[str, str]:
    """Labels of everything the operator creates for an artifact (docs/internals.md)."""
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: app,
        LABEL_ARTIFACT: label_value(artifact.name),
        LABEL_GENERATION: str(artifact.generation),
    }
    if artifact.is_node_local:
        # node-local Jobs of all namespaces share the operator's namespace
        labels[LABEL_ARTIFACT_NAMESPACE] = label_value(artifact.namespace)
    if node is not None:
        labels[LABEL_NODE] = label_value(node)
    return labels


def artifact_selector(artifact: ModelArtifact, app: str) -> str:
    """The label selector of an artifact's Jobs and pods (see ``common_labels``)."""
    selector = (
        f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_NAME}={app},{LABEL_ARTIFACT}={label_value(artifact.name)}"
    )
    if artifact.is_node_local:
        selector += f",{LABEL_ARTIFACT_NAMESPACE}={label_value(artifact.namespace)}"
    return selector


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
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        # without it the kubelet re-chowns the whole claim (every model file) on every Job
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def owner_arg(artifact: ModelArtifact) -> str:
    """``NAMESPACE/NAME/UID``: whom the fetcher records as the owner of the artifact's directory."""
    return f"{artifact.namespace}/{artifact.name}/{artifact.metadata.uid}"


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
    args += ["--owner", owner_arg(artifact)]
    if node is not None:
        args += ["--node", node]
    return args


# settings the admin's extra env may never set: the token and where it is read from
_RESERVED_ENV = {"HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN"}


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
        # a file, never an env var: env shows up in `kubectl describe`, crash dumps and child processes
        env.append({"name": "HF_TOKEN_PATH", "value": f"{TOKEN_DIR}/{TOKEN_FILE}"})
    taken = {e["name"] for e in env}
    for key, value in sorted((extra_env or {}).items()):
        if key not in taken and key not in _RESERVED_ENV:
            env.append({"name": key, "value": value})
    return env


def _token_volume(artifact: ModelArtifact) -> dict[str, Any] | None:
    """The token Secret as a file: the tenant's own Secret for claim Jobs, the operator's copy of it
    (``token_secret_copy``) for node-local Jobs, which run in the operator's namespace."""
    ref = artifact.hugging_face.token_secret_ref
    if ref is None:
        return None
    if artifact.is_node_local:
        name, key = fetcher_identity_name(artifact), COPIED_TOKEN_KEY
    else:
        name, key = ref.name, ref.key
    return {
        "name": "hf-token",
        "secret": {
            "secretName": name,
            "items": [{"key": key, "path": TOKEN_FILE}],
            "defaultMode": 0o440,
            "optional": False,
        },
    }


def _prepare_container(artifact: ModelArtifact, defaults: JobDefaults) -> dict[str, Any]:
    """Init container that creates the node-local directories the fetcher writes into.

    hostPath directories are created root-owned and fsGroup does not apply to hostPath, so a root
    step with only CAP_CHOWN and CAP_DAC_OVERRIDE (``modeldepot prepare``) creates the missing
    directories of the artifact's path and hands exactly those to the fetcher's uid: it never
    follows a symlink and never chowns a directory it did not just create. Always the operator's
    own image, whatever the spec says.
    """
    container: dict[str, Any] = {
        "name": PREPARE_CONTAINER,
        "image": defaults.image,
        "command": ["modeldepot"],
        "args": ["prepare", "--to", data_path(artifact), "--uid", str(RUN_AS), "--gid", str(RUN_AS)],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if defaults.image_pull_policy:
        container["imagePullPolicy"] = defaults.image_pull_policy
    return container


def _annotations(artifact: ModelArtifact, node: str | None) -> dict[str, str]:
    annotations = {ANNOTATION_ARTIFACT: artifact.name}
    if artifact.is_node_local:
        annotations[ANNOTATION_ARTIFACT_NAMESPACE] = artifact.namespace
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
    token: bool = False,
) -> dict[str, Any]:
    """A `modeldepot` container working on the data volume at /data (fetch or cleanup)."""
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": DATA_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if token:
        mounts.append({"name": "hf-token", "mountPath": TOKEN_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": ["modeldepot"],
        "args": args,
        "resources": resources,
        "securityContext": _restricted_container_security(),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env is not None:
        container["env"] = env
    if pull:
        container["imagePullPolicy"] = pull
    return container


def _data_pod_spec(
    artifact: ModelArtifact,
    container: dict[str, Any],
    node: str | None,
    *,
    service_account: str | None,
    extra_volumes: list[dict[str, Any]] | None = None,
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
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 30,
            "securityContext": _pod_security(),
            "containers": [container],
            "volumes": [_data_volume(artifact), {"name": "tmp", "emptyDir": {}}, *(extra_volumes or [])],
        }
    )
    if node is not None:
        local = artifact.spec.storage.node_local
        assert local is not None
        pod_spec["affinity"] = _node_affinity(node)
        if local.tolerations:
            pod_spec["tolerations"] = [t.to_api() for t in local.tolerations]
    return pod_spec


def _owned_here(artifact: ModelArtifact, namespace: str, *, block_owner_deletion: bool) -> dict[str, Any]:
    """ownerReferences when the object lives in the artifact's namespace (they cannot cross
    namespaces; the finalizer deletes what lives in the operator's namespace)."""
    if namespace != artifact.namespace:
        return {}
    return {"ownerReferences": [owner_reference(artifact, block_owner_deletion=block_owner_deletion)]}


def fetch_job(
    artifact: ModelArtifact,
    *,
    node: str | None,
    defaults: JobDefaults,
    generation: int | None = None,
    revision: str | None = None,
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
    image = dl.image or defaults.image
    pull = dl.image_pull_policy or defaults.image_pull_policy
    labels = common_labels(artifact, app=FETCHER_APP, node=node)
    labels[LABEL_GENERATION] = str(gen)
    namespace = job_namespace(artifact, defaults.operator_namespace)
    token = _token_volume(artifact)

    container = _data_container(
        FETCH_CONTAINER,
        image,
        pull,
        args=fetch_args(artifact, node=node, generation=gen, revision=revision),
        resources=_resources(artifact),
        env=_fetch_env(artifact, defaults.extra_env),
        token=token is not None,
    )
    pod_spec = _data_pod_spec(
        artifact,
        container,
        node,
        service_account=fetcher_identity_name(artifact),
        extra_volumes=[token] if token else None,
    )
    if node is not None:
        pod_spec["initContainers"] = [_prepare_container(artifact, defaults)]

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": fetch_job_name(artifact.name, gen, node, artifact.namespace),
            "namespace": namespace,
            "labels": labels,
            "annotations": _annotations(artifact, node),
            **_owned_here(artifact, namespace, block_owner_deletion=True),
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


def cleanup_job(artifact: ModelArtifact, *, node: str | None, defaults: JobDefaults) -> dict[str, Any]:
    """The Job that removes ``/data/P`` and its store and staging copies (``modeldepot cleanup``).

    Always the operator's own image (a tenant's image never deletes files), no API token (cleanup
    needs no API access), and only what the artifact's owner record names is removed.
    """
    if artifact.is_node_local and node is None:
        raise ValueError("nodeLocal storage needs a node")
    labels = common_labels(artifact, app=CLEANUP_APP, node=node)
    namespace = job_namespace(artifact, defaults.operator_namespace)
    container = _data_container(
        CLEANUP_CONTAINER,
        defaults.image,
        defaults.image_pull_policy,
        args=["cleanup", "--to", data_path(artifact), "--owner", owner_arg(artifact)],
        resources={"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    )
    pod_spec = _data_pod_spec(artifact, container, node, service_account=None)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(artifact.name, node, artifact.namespace),
            "namespace": namespace,
            "labels": labels,
            "annotations": _annotations(artifact, node),
            # not blocking: deletion of the artifact must be able to finish without this Job
            **_owned_here(artifact, namespace, block_owner_deletion=False),
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


# ------------------------------------------------------------------------------- fetcher identity


def _identity_metadata(artifact: ModelArtifact, namespace: str) -> dict[str, Any]:
    return {
        "name": fetcher_identity_name(artifact),
        "namespace": namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_NAME: FETCHER_APP,
            LABEL_ARTIFACT: label_value(artifact.name),
            LABEL_ARTIFACT_NAMESPACE: label_value(artifact.namespace),
        },
        "annotations": {
            ANNOTATION_ARTIFACT: artifact.name,
            ANNOTATION_ARTIFACT_NAMESPACE: artifact.namespace,
        },
        **_owned_here(artifact, namespace, block_owner_deletion=False),
    }


def fetcher_service_account(artifact: ModelArtifact, defaults: JobDefaults) -> dict[str, Any]:
    """The artifact's own fetcher identity, in the namespace its Jobs run in."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _identity_metadata(artifact, job_namespace(artifact, defaults.operator_namespace)),
        "automountServiceAccountToken": False,
    }


def fetcher_role(artifact: ModelArtifact) -> dict[str, Any]:
    """Only what the fetcher needs: read and patch the status of this one artifact (resourceNames)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _identity_metadata(artifact, artifact.namespace),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [artifact.name],
                "verbs": ["get", "patch"],
            },
        ],
    }


def fetcher_role_binding(artifact: ModelArtifact, defaults: JobDefaults) -> dict[str, Any]:
    """Binds the artifact's Role to its fetcher ServiceAccount (which may live in the operator's
    namespace, for node-local Jobs)."""
    name = fetcher_identity_name(artifact)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _identity_metadata(artifact, artifact.namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": name,
                "namespace": job_namespace(artifact, defaults.operator_namespace),
            }
        ],
    }


def token_secret_copy(artifact: ModelArtifact, token: bytes, defaults: JobDefaults) -> dict[str, Any]:
    """The operator's copy of a node-local artifact's token, in its own namespace (a pod can mount
    only Secrets of its namespace). Only the one key is copied; the finalizer deletes it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _identity_metadata(artifact, defaults.operator_namespace),
        "data": {COPIED_TOKEN_KEY: base64.b64encode(token).decode()},
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
