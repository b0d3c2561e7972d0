"""Each artifact's own fetcher identity: a ServiceAccount where its Jobs run, a Role that may get
and patch the status of that one artifact (resourceNames) and its RoleBinding, and for node-local
artifacts a one-key copy of the token in the operator's namespace and the ConfigMap of its node
records (same name, written only by the operator); and the claim the operator creates for
`storage.persistentVolumeClaim.create`. Pure.
"""

from __future__ import annotations

import base64
from typing import Any

from ..models import (
    FETCHER_APP,
    GROUP,
    LABEL_ARTIFACT,
    LABEL_ARTIFACT_NAMESPACE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PLURAL,
    ModelArtifact,
)
from .names import (
    ANNOTATION_ARTIFACT,
    ANNOTATION_ARTIFACT_NAMESPACE,
    JobDefaults,
    fetcher_identity_name,
    job_namespace,
    label_value,
    owned_here,
    owner_reference,
)
from .pods import COPIED_TOKEN_KEY

RECORDS_APP = "modeldepot-records"
"""`app.kubernetes.io/name` of a node-local artifact's node records (`node_records`)."""


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
        **owned_here(artifact, namespace, block_owner_deletion=False),
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


def node_records(artifact: ModelArtifact, data: dict[str, str], defaults: JobDefaults) -> dict[str, Any]:
    """The ConfigMap, in the operator's namespace, that records which nodes hold a verified copy of
    a node-local artifact (`decisions.NodeRecords` makes ``data``). Only the operator writes it
    (tenants and fetchers have no rights there); the finalizer deletes it."""
    metadata = _identity_metadata(artifact, defaults.operator_namespace)
    metadata["labels"][LABEL_NAME] = RECORDS_APP
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


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
