"""Which nodes are targets of a node-local artifact, which commit they share, and what to do
about nodes that stopped matching. Pure: reads core/v1 Node dicts and the artifact's status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..models import ModelArtifact, Toleration
from .observe import JobState

_SCHEDULING_EFFECTS = {"NoSchedule", "NoExecute"}


def tolerates(tolerations: Iterable[Toleration], taint: Mapping[str, Any]) -> bool:
    """Whether one of the tolerations tolerates the taint (core/v1 semantics)."""
    for tol in tolerations:
        if tol.effect and tol.effect != taint.get("effect"):
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.get("key"):
                return True
        elif tol.key == taint.get("key") and (tol.value or "") == (taint.get("value") or ""):
            return True
    return False


def node_matches(
    node_labels: Mapping[str, str],
    node_taints: Iterable[Mapping[str, Any]],
    selector: Mapping[str, str] | None,
    tolerations: Iterable[Toleration] | None,
    *,
    unschedulable: bool = False,
) -> bool:
    """Whether a node is a nodeLocal target: schedulable, has every selector label, and every
    NoSchedule/NoExecute taint is tolerated (PreferNoSchedule never excludes a node)."""
    if unschedulable:
        return False
    if any(node_labels.get(k) != v for k, v in (selector or {}).items()):
        return False
    tols = list(tolerations or ())
    return all(tolerates(tols, taint) for taint in node_taints if taint.get("effect") in _SCHEDULING_EFFECTS)


def matching_nodes(artifact: ModelArtifact, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the core/v1 Node dicts that are targets of a nodeLocal artifact, sorted."""
    local = artifact.spec.storage.node_local
    if local is None:
        return []
    out = []
    for node in nodes:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        if node_matches(
            meta.get("labels") or {},
            spec.get("taints") or (),
            local.node_selector,
            local.tolerations,
            unschedulable=bool(spec.get("unschedulable")),
        ):
            out.append(str(meta["name"]))
    return sorted(out)


def pinned_commit(artifact: ModelArtifact) -> str | None:
    """The commit this generation's nodes already resolved the revision to, if any.

    Jobs started later (a new matching node, a retry) fetch that commit instead of resolving a
    branch again, so a branch that moves mid-rollout cannot leave nodes on different commits.
    """
    gen = artifact.generation
    commits = Counter(
        entry.resolved_revision
        for entry in artifact.status.nodes
        if entry.observed_generation == gen and entry.resolved_revision
    )
    return commits.most_common(1)[0][0] if commits else None


@dataclass(frozen=True)
class Retirement:
    """What to do about nodes in status.nodes that are no longer targets."""

    cleanup: list[str] = field(default_factory=list)  # create a cleanup Job there
    forget: list[str] = field(default_factory=list)  # remove the status.nodes entry
    remove_jobs: list[str] = field(default_factory=list)  # finished cleanup Jobs


def retire_nodes(
    artifact: ModelArtifact,
    stale: Sequence[str],
    nodes: Mapping[str, Mapping[str, Any]],
    cleanup_jobs: Mapping[str, JobState],
    busy: Iterable[str],
) -> Retirement:
    """Nodes whose labels no longer match lose their copy (``Delete``) or just their entry (``Retain``).

    ``nodes``: Node dicts by name; ``cleanup_jobs``: cleanup Jobs by node; ``busy``: nodes where a
    fetch pod still runs (its files are removed only once it stopped). A node that still matches
    the selector but is unschedulable, tainted or NotReady keeps its copy: it is only away for a
    while. A node that no longer exists is forgotten (its disk went with it).
    """
    local = artifact.spec.storage.node_local
    if local is None:
        return Retirement()
    busy_nodes = set(busy)
    out = Retirement()
    for node in stale:
        found = nodes.get(node)
        if found is None:
            out.forget.append(node)
            continue
        labels = (found.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in (local.node_selector or {}).items()) or node in busy_nodes:
            continue
        if artifact.spec.deletion_policy == "Retain":
            out.forget.append(node)
            continue
        job = cleanup_jobs.get(node)
        if job is None:
            out.cleanup.append(node)
        elif job.finished:
            out.forget.append(node)
            out.remove_jobs.append(job.name)
    return out
