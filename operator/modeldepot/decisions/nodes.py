"""Which nodes are targets of a node-local artifact, which commit they share, what to do about
nodes that stopped matching, and how a fleet of any size stays small in the artifact: the node
records kept outside it (`NodeRecords`), and which nodes `status.nodes` lists (`fleet`). Pure:
reads core/v1 Node dicts, the artifact's status and the records' ConfigMap data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..formatting import progress_summary
from ..models import FleetStatus, JobResult, ModelArtifact, NodeStatus, Toleration
from ..vocabulary import Phase
from .observe import JobState
from .status import TargetState

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


# ------------------------------------------------------------------------------- big fleets
# The artifact lists only the nodes that need attention; which nodes hold a verified copy is
# recorded in a ConfigMap the operator owns (docs/internals.md, "Writing the status").

LISTED_NODES = 20
"""At most this many `status.nodes` entries the operator keeps (failed first, then waiting)."""
REPORTING_NODES = 10
"""At most this many fetch pods of an artifact report their node's progress into `status.nodes`
(the others report only their result, in the termination message)."""
RECORDS_KEY = "nodes.json"
"""The ConfigMap data key holding the records."""
_RECORDS_VERSION = 1
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NODE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class NodeRecord:
    """A node that holds a verified copy: the generation it was fetched for and what it holds."""

    generation: int
    commit: str
    digest: str
    total_bytes: int
    file_count: int

    def result(self) -> JobResult:
        return JobResult(
            phase=Phase.READY,
            commit=self.commit,
            digest=self.digest,
            total_bytes=self.total_bytes,
            file_count=self.file_count,
        )


def _record_of(generation: int, result: JobResult) -> NodeRecord | None:
    if not result.digest or not result.commit:
        return None
    return NodeRecord(
        generation, result.commit, result.digest, result.total_bytes or 0, result.file_count or 0
    )


@dataclass(frozen=True)
class NodeRecords:
    """Which nodes of one artifact (by uid) hold a verified copy. Written only by the operator, into
    a ConfigMap in its own namespace; read once per pass; survives operator restarts."""

    uid: str
    nodes: Mapping[str, NodeRecord] = field(default_factory=dict)

    @classmethod
    def from_data(cls, uid: str, data: Mapping[str, Any] | None) -> NodeRecords:
        """The records of the ConfigMap's data. Records of another uid (an earlier artifact of the
        same name) and anything malformed are ignored: a missing record costs a download, a
        wrong one would skip it."""
        try:
            doc = json.loads((data or {}).get(RECORDS_KEY) or "{}")
        except ValueError:
            return cls(uid)
        if not isinstance(doc, dict) or doc.get("uid") != uid or doc.get("version") != _RECORDS_VERSION:
            return cls(uid)
        results = doc.get("results")
        entries = doc.get("nodes")
        if not isinstance(results, list) or not isinstance(entries, dict):
            return cls(uid)
        nodes: dict[str, NodeRecord] = {}
        for node, ref in entries.items():
            record = _parse_record(node, ref, results)
            if record is not None:
                nodes[node] = record
        return cls(uid, nodes)

    def to_data(self) -> dict[str, str]:
        """The ConfigMap's data: one JSON document whose results are listed once and referred to by
        index, so a node costs its name and two numbers (~30 bytes; 1 MiB holds ~30,000 nodes)."""
        results: list[NodeRecord] = []
        index: dict[tuple[str, str, int, int], int] = {}
        entries: dict[str, list[int]] = {}
        for node in sorted(self.nodes):
            rec = self.nodes[node]
            key = (rec.commit, rec.digest, rec.total_bytes, rec.file_count)
            if key not in index:
                index[key] = len(results)
                results.append(rec)
            entries[node] = [rec.generation, index[key]]
        doc = {
            "version": _RECORDS_VERSION,
            "uid": self.uid,
            "results": [
                {
                    "commit": r.commit,
                    "digest": r.digest,
                    "totalBytes": r.total_bytes,
                    "fileCount": r.file_count,
                }
                for r in results
            ],
            "nodes": entries,
        }
        return {RECORDS_KEY: json.dumps(doc, separators=(",", ":"), sort_keys=True)}

    def with_changes(self, add: Mapping[str, NodeRecord], drop: Iterable[str] = ()) -> NodeRecords:
        gone = set(drop)
        nodes = {n: r for n, r in self.nodes.items() if n not in gone} | {
            n: r for n, r in add.items() if n not in gone
        }
        return NodeRecords(self.uid, nodes)


def _parse_record(node: Any, ref: Any, results: list[Any]) -> NodeRecord | None:
    if not isinstance(node, str) or not _NODE.match(node):
        return None
    if not (isinstance(ref, list) and len(ref) == 2 and all(type(v) is int for v in ref)):
        return None
    generation, i = ref
    if generation < 1 or not 0 <= i < len(results) or not isinstance(results[i], dict):
        return None
    r = results[i]
    commit, digest, size, count = r.get("commit"), r.get("digest"), r.get("totalBytes"), r.get("fileCount")
    if not (
        isinstance(commit, str)
        and _COMMIT.match(commit)
        and isinstance(digest, str)
        and _DIGEST.match(digest)
    ):
        return None
    if type(size) is not int or type(count) is not int or size < 0 or count < 0:
        return None
    return NodeRecord(generation, commit, digest, size, count)


def with_records(artifact: ModelArtifact, records: NodeRecords) -> ModelArtifact:
    """The artifact as the decisions see it: each recorded node that `status.nodes` does not list
    reads as the Ready entry the operator used to keep there, so recorded nodes are not fetched
    again, pin the commit, and are retired and cleaned up like listed ones."""
    listed = {entry.name for entry in artifact.status.nodes}
    extra = [
        NodeStatus(
            name=node,
            phase=Phase.READY,
            percent=100.0,
            bytes_done=rec.total_bytes,
            bytes_total=rec.total_bytes,
            files_done=rec.file_count,
            files_total=rec.file_count,
            summary=progress_summary(phase=Phase.READY, bytes_total=rec.total_bytes),
            resolved_revision=rec.commit,
            observed_generation=rec.generation,
            digest=rec.digest,
        )
        for node, rec in sorted(records.nodes.items())
        if node not in listed
    ]
    if not extra:
        return artifact
    status = artifact.status.model_copy(update={"nodes": [*artifact.status.nodes, *extra]})
    return artifact.model_copy(update={"status": status})


@dataclass(frozen=True)
class Fleet:
    """What the operator writes about a node-local fleet in one pass."""

    status: FleetStatus
    apply: list[NodeStatus]  # entries to apply, each by its node's field manager
    forget: list[str]  # listed nodes whose entries go (Ready: recorded instead; or over the budget)
    records: NodeRecords  # to write before the entries are forgotten, when it changed
    compact: bool = False  # forget by one merge patch (`nodes: null`) and apply the kept again
    report: frozenset[str] = frozenset()  # nodes whose new fetch Job reports its progress


_COMPACT_AT = LISTED_NODES
"""More entries to forget than this in one pass (a status written before the records existed)
go by one merge patch instead of one apply each."""
_ATTENTION = {Phase.FAILED: 0, Phase.SUSPENDED: 2, Phase.PENDING: 3}


def fleet(
    artifact: ModelArtifact,
    targets: Sequence[TargetState],
    entries: Sequence[NodeStatus],
    records: NodeRecords,
    *,
    new_jobs: Sequence[str] = (),
    records_ref: str | None = None,
) -> Fleet:
    """Decide what `status.nodes` lists and what the records hold.

    ``artifact``: as read (its `status.nodes` are the real entries); ``targets``: the decided
    target nodes; ``entries``: the entries `plan` would apply (`status.node_entry`);
    ``new_jobs``: nodes whose fetch Job is created now. Ready nodes are recorded and leave the
    list; downloading nodes stay listed as their fetch pods write them (at most
    `REPORTING_NODES` new Jobs report, counting those already listed); failed, then suspended,
    then waiting nodes fill the rest of `LISTED_NODES`, in name order; the others are counted.
    """
    real = {entry.name: entry for entry in artifact.status.nodes}
    gen = artifact.generation
    add: dict[str, NodeRecord] = {}
    for entry in artifact.status.nodes:  # verified copies listed before the records existed
        if entry.phase == Phase.READY and entry.digest and entry.observed_generation:
            rec = _record_of(entry.observed_generation, _entry_result(entry))
            if rec is not None and entry.name not in records.nodes:
                add[entry.name] = rec
    for t in targets:
        if t.phase == Phase.READY and t.node is not None and t.result is not None:
            rec = _record_of(gen, t.result)
            if rec is not None:
                add[t.node] = rec
    new_records = records.with_changes({n: r for n, r in add.items() if records.nodes.get(n) != r})
    downloading = sorted(
        t.node for t in targets
        if t.node is not None and t.phase == Phase.DOWNLOADING
        and (e := real.get(t.node)) is not None and e.observed_generation == gen
        and e.phase == Phase.DOWNLOADING  # the fetcher's own entry, not the one it never replaced
    )  # fmt: skip
    waiting = sorted(
        (t for t in targets if t.node is not None and t.phase in _ATTENTION),
        key=lambda t: (_ATTENTION[Phase(t.phase)], t.node or ""),
    )
    shown = [t.node for t in waiting[: max(0, LISTED_NODES - len(downloading))] if t.node is not None]
    keep = set(downloading) | set(shown)
    # a Ready entry goes only once its node is recorded; a node no longer a target is retired instead
    unrecorded = {t.node for t in targets if t.phase == Phase.READY and t.node not in new_records.nodes}
    wanted = {t.node for t in targets}
    forget = sorted(n for n in real if n in wanted and n not in keep and n not in unrecorded)
    by_node = {e.name: e for e in entries}
    compact = len(forget) > _COMPACT_AT
    if compact:  # the merge patch removes every entry: apply again what stays listed
        apply = [by_node.get(n) or real[n] for n in shown if n in by_node or n in real]
    else:
        apply = [by_node[n] for n in shown if n in by_node]
    room = max(0, REPORTING_NODES - len(downloading))
    report = frozenset(sorted(new_jobs)[:room])
    counts = Counter(str(t.phase) for t in targets)
    listed = len(keep & ({*real} | {e.name for e in apply}))
    status = FleetStatus(
        matched=len(targets),
        ready=counts[Phase.READY],
        downloading=counts[Phase.DOWNLOADING],
        pending=counts[Phase.PENDING],
        queued=counts["Queued"],
        failed=counts[Phase.FAILED],
        suspended=counts[Phase.SUSPENDED],
        listed=listed,
        unlisted=len(targets) - counts[Phase.READY] - listed,
    )
    if records_ref is not None:
        status = status.model_copy(update={"records": records_ref})
    return Fleet(status, apply, forget, new_records, compact, report)


def _entry_result(entry: NodeStatus) -> JobResult:
    return JobResult(
        phase=Phase.READY,
        commit=entry.resolved_revision,
        digest=entry.digest,
        total_bytes=entry.bytes_total,
        file_count=entry.files_total,
    )
