"""Names, labels, selectors and ownership of everything the operator creates (docs/internals.md).

Job and identity names are DNS labels of at most 63 characters with a hash of what makes them
unique; label values that would be too long become a prefix plus a hash, and the full names ride
in annotations. Pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import (
    API_VERSION,
    KIND,
    LABEL_ARTIFACT,
    LABEL_ARTIFACT_NAMESPACE,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_NODE,
    MANAGED_BY,
    ModelArtifact,
)

DEFAULT_OPERATOR_NAMESPACE = "modeldepot-system"

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


def artifact_annotations(artifact: ModelArtifact, node: str | None) -> dict[str, str]:
    annotations = {ANNOTATION_ARTIFACT: artifact.name}
    if artifact.is_node_local:
        annotations[ANNOTATION_ARTIFACT_NAMESPACE] = artifact.namespace
    if node is not None:
        annotations[ANNOTATION_NODE] = node
    return annotations


def owned_here(artifact: ModelArtifact, namespace: str, *, block_owner_deletion: bool) -> dict[str, Any]:
    """ownerReferences when the object lives in the artifact's namespace (they cannot cross
    namespaces; the finalizer deletes what lives in the operator's namespace)."""
    if namespace != artifact.namespace:
        return {}
    return {"ownerReferences": [owner_reference(artifact, block_owner_deletion=block_owner_deletion)]}
