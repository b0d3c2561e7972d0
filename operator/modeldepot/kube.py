"""The only module that talks to the Kubernetes API (the official `kubernetes` client).

Objects cross this boundary as plain dicts in API form (camelCase), so the rest of the package
never sees client model classes. Reads return None on 404; creates treat 409 AlreadyExists as
done; every other API failure becomes a `KubernetesApiError` (retryable for 429, 5xx, conflicts
and connection problems). The module itself implements `clusterapi.ClusterApi`; its calls block,
so the `Reconciler` runs each pass in a worker thread.
"""

from __future__ import annotations

import base64
import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .errors import KubernetesApiError
from .models import GROUP, PLURAL, VERSION, NodeStatus, node_apply, node_field_manager

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the client sends the dict as JSON
RECORDS_FIELD_MANAGER = "modeldepot-operator"
P = ParamSpec("P")
T = TypeVar("T")

_configured = threading.Lock()
_api_client: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """Load in-cluster config (inside a pod) or the kubeconfig (KUBECONFIG / ~/.kube/config), once."""
    global _api_client
    with _configured:
        if _api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _api_client = client.ApiClient()
        return _api_client


def _to_dict(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = api_client().sanitize_for_serialization(obj)
    return data


def _api_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Translate client exceptions into the package's error hierarchy."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except ApiException as error:
            raise KubernetesApiError.from_status(error.status, error.reason, error.body) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubernetesApiError.from_status(None, str(error), None) from error

    return wrapper


def _none_on_404(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _ignore_exists(call: Callable[[], object]) -> bool:
    """Run a create; False when the object already existed."""
    try:
        call()
        return True
    except ApiException as error:
        if error.status == 409:
            return False
        raise


# ---------------------------------------------------------------------------------- ModelArtifacts


@_api_errors
def patch_artifact_status(namespace: str, name: str, patch: Mapping[str, Any]) -> None:
    """JSON-merge-patch the status subresource of a ModelArtifact (the operator; the fetcher for
    `status.progress`). Never with `status.nodes`: see `apply_node_status`."""
    api = client.CustomObjectsApi(api_client())
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, dict(patch), _content_type=MERGE_PATCH
    )


@_api_errors
def apply_node_status(namespace: str, name: str, entry: NodeStatus) -> None:
    """Server-side apply one node's `status.nodes` entry as that node's field manager (the fetch
    pod on the node, or the operator). The list is a list-map keyed by `name`, so the API server
    merges this entry into it and leaves the other nodes' entries alone, whoever writes them at
    the same time. `force`: the entry is this manager's, whatever wrote a field of it before."""
    _apply_status(namespace, name, entry.name, node_apply(namespace, name, entry))


@_api_errors
def forget_node_status(namespace: str, name: str, node: str) -> None:
    """Remove one node's `status.nodes` entry: its field manager applies a status without it, and
    the API server removes the fields that manager owned, which is the whole entry. Chosen over a
    JSON patch `remove` at the entry's index: that needs a `test` of the name at that index and a
    retry whenever another entry moved it, while this names no index and is idempotent."""
    _none_on_404(lambda: _apply_status(namespace, name, node, node_apply(namespace, name, None)))


def _apply_status(namespace: str, name: str, node: str, body: dict[str, Any]) -> None:
    api = client.CustomObjectsApi(api_client())
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        body,
        field_manager=node_field_manager(node),
        force=True,
        _content_type=APPLY_PATCH,
    )


@_api_errors
def get_artifact(namespace: str, name: str) -> dict[str, Any] | None:
    api = client.CustomObjectsApi(api_client())
    found = _none_on_404(lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    return dict(found) if found is not None else None


# ------------------------------------------------------------------------------------------- nodes


@_api_errors
def list_nodes() -> list[dict[str, Any]]:
    return [_to_dict(node) for node in client.CoreV1Api(api_client()).list_node().items]


@_api_errors
def node_exists(name: str) -> bool:
    core = client.CoreV1Api(api_client())
    return _none_on_404(lambda: core.read_node(name)) is not None


# -------------------------------------------------------------------------------------- Jobs, pods


@_api_errors
def list_jobs(namespace: str, selector: str) -> list[dict[str, Any]]:
    batch = client.BatchV1Api(api_client())
    return [_to_dict(job) for job in batch.list_namespaced_job(namespace, label_selector=selector).items]


@_api_errors
def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    core = client.CoreV1Api(api_client())
    return [_to_dict(pod) for pod in core.list_namespaced_pod(namespace, label_selector=selector).items]


@_api_errors
def create_job(manifest: Mapping[str, Any]) -> bool:
    batch = client.BatchV1Api(api_client())
    namespace = manifest["metadata"]["namespace"]
    return _ignore_exists(lambda: batch.create_namespaced_job(namespace, dict(manifest)))


@_api_errors
def delete_job(namespace: str, name: str) -> None:
    """Delete a Job and, in the background, its pods (they get their grace period)."""
    batch = client.BatchV1Api(api_client())
    _none_on_404(
        lambda: batch.delete_namespaced_job(
            name, namespace, body=client.V1DeleteOptions(propagation_policy="Background")
        )
    )


@_api_errors
def force_delete_pod(namespace: str, name: str) -> None:
    """Remove a pod object at once (its node is gone, so no kubelet will ever confirm it)."""
    core = client.CoreV1Api(api_client())
    _none_on_404(
        lambda: core.delete_namespaced_pod(
            name, namespace, body=client.V1DeleteOptions(grace_period_seconds=0)
        )
    )


# ------------------------------------------------------------------------------- claims and RBAC


@_api_errors
def get_claim(namespace: str, name: str) -> dict[str, Any] | None:
    core = client.CoreV1Api(api_client())
    found = _none_on_404(lambda: core.read_namespaced_persistent_volume_claim(name, namespace))
    return _to_dict(found) if found is not None else None


@_api_errors
def create_claim(manifest: Mapping[str, Any]) -> bool:
    core = client.CoreV1Api(api_client())
    namespace = manifest["metadata"]["namespace"]
    return _ignore_exists(lambda: core.create_namespaced_persistent_volume_claim(namespace, dict(manifest)))


@_api_errors
def ensure_fetcher_identity(
    service_account: Mapping[str, Any], role: Mapping[str, Any], binding: Mapping[str, Any]
) -> None:
    """Create an artifact's fetcher ServiceAccount, Role and RoleBinding (each in its own namespace)."""
    core = client.CoreV1Api(api_client())
    rbac = client.RbacAuthorizationV1Api(api_client())
    _ignore_exists(
        lambda: core.create_namespaced_service_account(
            service_account["metadata"]["namespace"], dict(service_account)
        )
    )
    _ignore_exists(lambda: rbac.create_namespaced_role(role["metadata"]["namespace"], dict(role)))
    _ignore_exists(
        lambda: rbac.create_namespaced_role_binding(binding["metadata"]["namespace"], dict(binding))
    )


@_api_errors
def read_secret_key(namespace: str, name: str, key: str) -> bytes | None:
    """The value of one key of a Secret; None when the Secret or the key does not exist."""
    core = client.CoreV1Api(api_client())
    secret = _none_on_404(lambda: core.read_namespaced_secret(name, namespace))
    if secret is None or key not in (secret.data or {}):
        return None
    return base64.b64decode(secret.data[key])


@_api_errors
def apply_secret(manifest: Mapping[str, Any]) -> None:
    """Create a Secret, or replace the data of the existing one."""
    core = client.CoreV1Api(api_client())
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    if not _ignore_exists(lambda: core.create_namespaced_secret(namespace, dict(manifest))):
        core.patch_namespaced_secret(name, namespace, {"data": manifest["data"]})


@_api_errors
def delete_fetcher_objects(namespace: str, name: str) -> None:
    """Delete an artifact's ServiceAccount, token copy and node records that live in the operator's
    namespace (ownerReferences cannot cross namespaces, so the garbage collector does not remove
    them)."""
    core = client.CoreV1Api(api_client())
    _none_on_404(lambda: core.delete_namespaced_service_account(name, namespace))
    _none_on_404(lambda: core.delete_namespaced_secret(name, namespace))
    _none_on_404(lambda: core.delete_namespaced_config_map(name, namespace))


# ------------------------------------------------------------------------------------ node records


@_api_errors
def get_node_records(namespace: str, name: str) -> dict[str, str] | None:
    """The data of a node-local artifact's node records ConfigMap; None when it does not exist."""
    core = client.CoreV1Api(api_client())
    found = _none_on_404(lambda: core.read_namespaced_config_map(name, namespace))
    return dict(found.data or {}) if found is not None else None


@_api_errors
def write_node_records(manifest: Mapping[str, Any]) -> None:
    """Create or replace a node records ConfigMap: one server-side apply by the operator's own field
    manager (its only writer), so a pass needs no read-modify-write."""
    core = client.CoreV1Api(api_client())
    meta = manifest["metadata"]
    core.patch_namespaced_config_map(
        meta["name"],
        meta["namespace"],
        dict(manifest),
        field_manager=RECORDS_FIELD_MANAGER,
        force=True,
        _content_type=APPLY_PATCH,
    )
