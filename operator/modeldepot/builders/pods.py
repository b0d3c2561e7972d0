"""The pods of fetch and cleanup Jobs: containers, volumes, security contexts, the fetcher's CLI.

Claim pods satisfy Pod Security `restricted` (non-root uid 65532, no capabilities, RuntimeDefault
seccomp, no privilege escalation, read-only root). Node-local pods add the root `prepare` init
step (only CHOWN and DAC_OVERRIDE, always the operator's image). The token is a mounted file.
Pure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from ..models import ModelArtifact
from .names import JobDefaults, fetcher_identity_name

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


def resources(artifact: ModelArtifact) -> dict[str, Any]:
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
    artifact: ModelArtifact,
    *,
    node: str | None,
    generation: int,
    revision: str | None = None,
    report: bool = True,
) -> list[str]:
    """The fetcher's arguments, exactly the CLI of docs/internals.md (after the ``modeldepot`` command).

    ``revision`` overrides the spec's (a commit another node of this generation resolved it to);
    without ``report`` the fetcher writes no progress into status, only its result (a big fleet's
    nodes beyond `decisions.nodes.REPORTING_NODES`).
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
    downloader = artifact.spec.downloader
    args += ["--concurrency", str(downloader.concurrency)]
    # unset: the fetcher's own defaults (FetchSettings), chosen from `make bench`
    for flag, value in (
        ("--streams", downloader.streams),
        ("--streams-min-size", downloader.streams_min_size),
        ("--chunk-size", downloader.chunk_size),
    ):
        if value is not None:
            args += [flag, str(value)]
    if report:
        args += ["--report", f"{artifact.namespace}/{artifact.name}"]
    args += ["--generation", str(generation)]
    args += ["--owner", owner_arg(artifact)]
    if node is not None:
        args += ["--node", node]
    return args


# settings the admin's extra env may never set: the token and where it is read from
_RESERVED_ENV = {"HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN"}


def fetch_env(artifact: ModelArtifact, extra_env: Mapping[str, str] | None) -> list[dict[str, Any]]:
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


def token_volume(artifact: ModelArtifact) -> dict[str, Any] | None:
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


def prepare_container(artifact: ModelArtifact, defaults: JobDefaults) -> dict[str, Any]:
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


def data_container(
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


def data_pod_spec(
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
