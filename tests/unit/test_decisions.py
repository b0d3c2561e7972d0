"""Reconcile decisions: Jobs to create/delete, phase, conditions, progress aggregation, node matching."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakecluster import merge_patch

from modeldepot import builders
from modeldepot.decisions import (
    JobState,
    NodeRecords,
    Plan,
    matching_nodes,
    node_matches,
    plan,
    pod_result,
    retire_nodes,
)
from modeldepot.models import JobResult, ModelArtifact, Toleration

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
IMAGE = "modeldepot:test"
DEFAULTS = builders.JobDefaults(image=IMAGE)
COMMIT = "53aa51172fb0b7b43cac4ae4ed8f8c4c1ee1f7ab"
DIGEST = "sha256:" + "ab" * 32


def body(*, node_local: bool = False, generation: int = 2, **spec: Any) -> dict[str, Any]:
    storage: dict[str, Any] = (
        {"nodeLocal": {"nodeSelector": {"gpu": "yes"}}}
        if node_local
        else {"persistentVolumeClaim": {"claimName": "models"}}
    )
    b: dict[str, Any] = {
        "metadata": {"name": "minilm", "namespace": "ml", "uid": "u1", "generation": generation},
        "spec": {"source": {"huggingFace": {"repo": "org/minilm"}}, "storage": storage},
        "status": {},
    }
    b["spec"].update(spec)
    return b


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it to status (on a copy)."""
    out = copy.deepcopy(target)
    merge_patch(out, patch)
    return out


def run(
    b: dict[str, Any],
    *,
    nodes: list[str] | None = None,
    jobs: list[JobState] | None = None,
    now: datetime = T0,
    records: NodeRecords | None = None,
) -> Plan:
    return plan(ModelArtifact.from_body(b), nodes=nodes, jobs=jobs or [], now=now, records=records)


def manifests(b: dict[str, Any], p: Plan) -> list[dict[str, Any]]:
    """The Jobs the reconciler builds from the Plan's requests."""
    artifact = ModelArtifact.from_body(b)
    return [
        builders.fetch_job(artifact, node=r.node, defaults=DEFAULTS, revision=r.revision) for r in p.create
    ]


def apply(b: dict[str, Any], p: Plan) -> dict[str, Any]:
    """The status after the reconciler's writes: the merge patch, then each node entry applied whole,
    and the entries of the nodes it forgets removed."""
    status = merge(b.get("status") or {}, p.status_patch)
    nodes = {entry["name"]: entry for entry in status.get("nodes", []) if entry["name"] not in p.forget}
    nodes.update({entry.name: entry.to_api() for entry in p.nodes})
    if nodes:
        status["nodes"] = list(nodes.values())
    return {**b, "status": status}


def entries(p: Plan) -> dict[str, dict[str, Any]]:
    """The status.nodes entries the Plan applies, by node."""
    return {entry.name: entry.model_dump(by_alias=True, mode="json") for entry in p.nodes}


def conds(p: Plan) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in p.status_patch["conditions"]}


def job(gen: int = 2, node: str | None = None, **kw: Any) -> JobState:
    return JobState(name=builders.fetch_job_name("minilm", gen, node), generation=gen, node=node, **kw)


def ready_result(
    total: int = 91_600_000, files: int = 12, commit: str = COMMIT, digest: str = DIGEST
) -> JobResult:
    return JobResult(
        phase="Ready", commit=commit, digest=digest, total_bytes=total, file_count=files, path="/data/x"
    )


# ------------------------------------------------------------------------------------------- PVC


def test_fresh_pvc_creates_one_job_and_is_pending() -> None:
    p = run(body())
    created = manifests(body(), p)
    assert [j["metadata"]["name"] for j in created] == [builders.fetch_job_name("minilm", 2, None)]
    assert created[0]["metadata"]["labels"]["modeldepot.dev/generation"] == "2"
    assert p.delete == []
    assert p.phase == "Pending"
    s = p.status_patch
    assert s["phase"] == "Pending" and s["observedGeneration"] == 2
    assert s["path"] == "pvc/models:minilm"
    assert conds(p) == {
        "Ready": ("False", "Pending"),
        "Reconciling": ("True", "Pending"),
        "Stalled": ("False", "Pending"),
    }
    for c in s["conditions"]:
        assert c["observedGeneration"] == 2 and c["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert s["progress"]["phase"] == "Pending" and s["progress"]["observedGeneration"] == 2
    assert "digest" not in s and "readyNodes" not in s


def test_running_job_reports_downloading_without_touching_fetcher_progress() -> None:
    b = body()
    b["status"] = {
        "progress": {
            "phase": "Downloading",
            "percent": 40.0,
            "observedGeneration": 2,
            "summary": "40% of 1.0 GB",
        }
    }
    p = run(b, jobs=[job(active=1)])
    assert p.create == [] and p.delete == []
    assert p.phase == "Downloading"
    assert conds(p)["Reconciling"] == ("True", "Downloading")
    assert "progress" not in p.status_patch  # the fetcher owns live progress
    assert p.status_patch["conditions"][0]["message"] == "40% of 1.0 GB"


def test_active_job_with_stale_progress_is_pending() -> None:
    b = body()
    b["status"] = {"progress": {"phase": "Ready", "percent": 100.0, "observedGeneration": 1}}
    p = run(b, jobs=[job(active=1)])
    assert p.phase == "Pending"
    prog = p.status_patch["progress"]
    assert prog["phase"] == "Pending" and prog["observedGeneration"] == 2 and prog["percent"] is None


def test_succeeded_job_makes_it_ready() -> None:
    p = run(body(), jobs=[job(succeeded=1, complete=True, result=ready_result())])
    assert p.phase == "Ready" and p.create == [] and p.delete == []
    s = p.status_patch
    assert conds(p) == {
        "Ready": ("True", "Verified"),
        "Reconciling": ("False", "Verified"),
        "Stalled": ("False", "Verified"),
    }
    assert s["digest"] == DIGEST and s["resolvedRevision"] == COMMIT
    assert s["revision"] == "main@53aa511"
    assert (s["totalBytes"], s["size"], s["fileCount"]) == (91_600_000, "91.6 MB", 12)
    assert s["progress"]["percent"] == 100.0 and s["progress"]["summary"] == "100% of 91.6 MB"
    assert DIGEST in s["conditions"][0]["message"]


def test_ready_is_remembered_when_the_job_is_gone_and_patch_is_stable() -> None:
    b = body()
    first = run(b, jobs=[job(succeeded=1, complete=True, result=ready_result())])
    b = apply(b, first)
    later = run(b, jobs=[], now=T0 + timedelta(hours=1))
    assert later.phase == "Ready" and later.create == []
    assert later.status_patch["conditions"] == first.status_patch["conditions"]
    assert "progress" not in later.status_patch  # nothing changed, nothing rewritten
    assert later.status_patch["digest"] == DIGEST


def test_new_generation_replaces_old_jobs_and_keeps_the_old_copy_described() -> None:
    b = body()
    b = apply(b, run(b, jobs=[job(succeeded=1, complete=True, result=ready_result())]))
    b["metadata"]["generation"] = 3
    old = job(gen=2, succeeded=1, complete=True, result=ready_result())
    p = run(b, jobs=[old], now=T0 + timedelta(minutes=5))
    assert p.delete == [old.name]
    assert [j["metadata"]["name"] for j in manifests(b, p)] == [builders.fetch_job_name("minilm", 3, None)]
    assert p.phase == "Pending"
    ready = next(c for c in p.status_patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["observedGeneration"] == 3
    assert ready["lastTransitionTime"] == "2026-05-01T12:05:00Z"
    # digest/size keep describing the verified copy that stays published until the new one is ready
    assert "digest" not in p.status_patch
    assert apply(b, p)["status"]["digest"] == DIGEST


@pytest.mark.parametrize(
    ("job_kw", "reason", "in_message"),
    [
        (
            {
                "failure_reason": "PodFailurePolicy",
                "failed": 1,
                "result": JobResult(
                    phase="Failed", reason="ChecksumMismatch", message="model.bin: sha256 differs"
                ),
            },
            "ChecksumMismatch",
            "model.bin: sha256 differs",
        ),
        (
            {
                "failure_reason": "BackoffLimitExceeded",
                "failure_message": "Job has reached the specified backoff limit",
                "failed": 5,
                "result": JobResult(phase="Failed", reason="HubUnavailable", message="503 from the Hub"),
            },
            "BackoffLimitExceeded",
            "HubUnavailable: 503 from the Hub",
        ),
        (
            {"failure_reason": "DeadlineExceeded", "failure_message": "Job was active longer than specified"},
            "DeadlineExceeded",
            "active longer",
        ),
        ({"failure_reason": "PodFailurePolicy", "failed": 1}, "DownloadFailed", "without a result"),
        ({"succeeded": 1, "complete": True}, "DownloadFailed", "no result"),
    ],
)
def test_failures(job_kw: dict[str, Any], reason: str, in_message: str) -> None:
    p = run(body(), jobs=[job(**job_kw)])
    assert p.phase == "Failed"
    assert p.create == [] and p.delete == []  # a failed Job is a record, not retried for the same generation
    assert conds(p) == {
        "Ready": ("False", reason),
        "Reconciling": ("False", reason),
        "Stalled": ("True", reason),
    }
    assert in_message in p.status_patch["conditions"][0]["message"]
    assert p.status_patch["progress"]["phase"] == "Failed"


def test_retrying_job_stays_pending() -> None:
    p = run(body(), jobs=[job(failed=2, active=0)])
    assert p.phase == "Pending" and p.create == []
    assert "retrying after 2" in p.status_patch["conditions"][0]["message"]


def test_suspend_cancels_running_job() -> None:
    b = body(suspend=True)
    b["status"] = {
        "progress": {
            "phase": "Downloading",
            "percent": 45.0,
            "bytesTotal": 91_600_000,
            "observedGeneration": 2,
        }
    }
    running = job(active=1)
    p = run(b, jobs=[running])
    assert p.delete == [running.name] and p.create == []
    assert p.phase == "Suspended"
    assert conds(p) == {
        "Ready": ("False", "Suspended"),
        "Reconciling": ("False", "Suspended"),
        "Stalled": ("False", "Suspended"),
    }
    assert p.status_patch["progress"]["summary"] == "Suspended at 45% of 91.6 MB"
    assert "percent" not in p.status_patch["progress"]  # the partial numbers stay as the fetcher left them


def test_suspend_without_jobs_creates_nothing_and_ready_stays_ready() -> None:
    p = run(body(suspend=True))
    assert p.create == [] and p.phase == "Suspended"
    done = run(body(suspend=True), jobs=[job(succeeded=1, complete=True, result=ready_result())])
    assert done.phase == "Ready" and done.delete == []


def test_transition_time_kept_while_status_unchanged() -> None:
    b = body()
    b = apply(b, run(b))
    p2 = run(b, jobs=[job(active=1)], now=T0 + timedelta(minutes=1))
    c = {x["type"]: x for x in p2.status_patch["conditions"]}
    assert c["Ready"]["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    b = apply(b, p2)
    p3 = run(b, jobs=[job(succeeded=1, complete=True, result=ready_result())], now=T0 + timedelta(minutes=9))
    c = {x["type"]: x for x in p3.status_patch["conditions"]}
    assert c["Ready"]["lastTransitionTime"] == "2026-05-01T12:09:00Z"  # False -> True
    assert c["Stalled"]["lastTransitionTime"] == "2026-05-01T12:00:00Z"  # still False


def test_deleting_job_with_the_same_name_blocks_recreation() -> None:
    p = run(body(), jobs=[job(deleting=True)])
    assert p.create == [] and p.delete == []
    assert p.phase == "Pending"
    assert "previous Job" in p.status_patch["conditions"][0]["message"]


def test_blocker_fails_instead_of_creating_and_clears_when_resolved() -> None:
    b = body()
    a = ModelArtifact.from_body(b)
    p = plan(
        a,
        nodes=None,
        jobs=[],
        now=T0,
        blocker=("StorageNotFound", "claim models not found"),
    )
    assert p.create == [] and p.phase == "Failed"
    assert conds(p)["Stalled"] == ("True", "StorageNotFound")
    assert p.status_patch["conditions"][0]["message"] == "claim models not found"
    later = run(apply(b, p), now=T0 + timedelta(minutes=1))
    assert len(later.create) == 1 and later.phase == "Pending"
    # a running Job is not disturbed by a blocker found later
    running = plan(a, nodes=None, jobs=[job(active=1)], now=T0, blocker=("StorageNotFound", "x"))
    assert running.delete == [] and running.phase == "Pending"


def test_revision_display() -> None:
    b = body()
    b["spec"]["source"]["huggingFace"]["revision"] = COMMIT
    p = run(b, jobs=[job(succeeded=1, complete=True, result=ready_result())])
    assert p.status_patch["revision"] == "53aa511"


# ------------------------------------------------------------------------------------- nodeLocal


def test_node_local_creates_one_job_per_node() -> None:
    p = run(body(node_local=True), nodes=["b", "a", "c"])
    created = manifests(body(node_local=True), p)
    assert [j["metadata"]["annotations"]["modeldepot.dev/node"] for j in created] == ["a", "b", "c"]
    for j in created:
        node = j["metadata"]["annotations"]["modeldepot.dev/node"]
        terms = j["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert terms[0]["matchFields"][0]["values"] == [node]
    s = p.status_patch
    assert (s["readyNodes"], s["targetNodes"]) == (0, 3)
    assert set(entries(p)) == {"a", "b", "c"}
    assert entries(p)["a"]["phase"] == "Pending"
    assert s["progress"]["summary"].startswith("0/3 nodes")
    assert s["path"] == "node:/var/lib/modeldepot/ml/minilm"


def test_no_matching_nodes() -> None:
    p = run(body(node_local=True), nodes=[])
    assert p.create == [] and p.phase == "Failed"
    assert conds(p)["Stalled"] == ("True", "NoMatchingNodes")
    assert conds(p)["Ready"] == ("False", "NoMatchingNodes")
    assert "gpu" in p.status_patch["conditions"][0]["message"]
    assert p.status_patch["targetNodes"] == 0


def test_node_no_longer_matching_loses_its_job() -> None:
    b = body(node_local=True)
    b["status"] = {"nodes": [{"name": "gone", "phase": "Ready", "digest": DIGEST, "observedGeneration": 2}]}
    gone = job(node="gone", active=1)
    p = run(b, nodes=["a"], jobs=[gone, job(node="a", active=1)])
    assert p.delete == [gone.name]
    assert p.create == []
    assert p.stale_nodes == ["gone"]
    assert p.status_patch["targetNodes"] == 1


def test_node_local_aggregates_progress() -> None:
    b = body(node_local=True)
    b["status"] = {
        "nodes": [
            {
                "name": "a",
                "phase": "Downloading", "percent": 50.0, "bytesDone": 500, "bytesTotal": 1000, "filesDone": 1,
                "filesTotal": 2, "bytesPerSecond": 100.0, "etaSeconds": 5.0, "observedGeneration": 2,
                "resolvedRevision": COMMIT, "updatedAt": "2026-05-01T11:59:58Z",
            },
            {
                "name": "b",
                "phase": "Downloading", "percent": 10.0, "bytesDone": 100, "bytesTotal": 1000, "filesDone": 0,
                "filesTotal": 2, "bytesPerSecond": 50.0, "etaSeconds": 18.0, "observedGeneration": 2,
                "updatedAt": "2026-05-01T11:59:59Z",
            },
            {"name": "c", "phase": "Downloading", "percent": 99.0, "bytesDone": 990, "observedGeneration": 1},
        ]
    }  # fmt: skip
    p = run(b, nodes=["a", "b", "c"], jobs=[job(node="a", active=1), job(node="b", active=1), job(node="c")])
    assert p.phase == "Downloading" and p.create == []
    prog = p.status_patch["progress"]
    assert prog["percent"] == 20.0  # (50 + 10 + 0) / 3: c's entry is from an older generation
    assert prog["bytesDone"] == 600
    assert prog["bytesTotal"] == 3000  # c has not resolved its file list yet: counted like the others
    assert prog["filesTotal"] == 6
    assert prog["bytesPerSecond"] == 150.0 and prog["etaSeconds"] == 18.0
    assert prog["resolvedRevision"] == COMMIT
    assert prog["updatedAt"] == "2026-05-01T11:59:59Z"
    assert prog["summary"] == "0/3 nodes, 20% of 1.0 kB, 150 B/s, ETA 18s"
    assert set(entries(p)) == {"c"}  # a and b are the fetchers' to write
    assert entries(p)["c"]["phase"] == "Pending"
    assert entries(p)["c"]["bytesDone"] is None


def test_node_local_ready_on_all_nodes() -> None:
    b = body(node_local=True)
    jobs = [
        job(node=n, succeeded=1, complete=True, result=ready_result(total=1000, files=2)) for n in ("a", "b")
    ]
    p = run(b, nodes=["a", "b"], jobs=jobs)
    assert p.phase == "Ready"
    s = p.status_patch
    assert (s["readyNodes"], s["targetNodes"]) == (2, 2)
    # Ready nodes are recorded outside the artifact, not listed in it
    assert entries(p) == {}
    assert p.records is not None and set(p.records.nodes) == {"a", "b"}
    assert p.records.nodes["a"].digest == DIGEST and p.records.nodes["a"].generation == 2
    assert s["fleet"] == {
        "matched": 2, "ready": 2, "downloading": 0, "pending": 0, "queued": 0, "failed": 0,
        "suspended": 0, "listed": 0, "unlisted": 0,
    }  # fmt: skip
    assert s["progress"]["summary"] == "2/2 nodes, 100% of 1.0 kB"
    assert s["progress"]["bytesTotal"] == 2000 and s["progress"]["percent"] == 100.0
    assert s["digest"] == DIGEST and s["totalBytes"] == 1000
    # the Jobs are gone later (e.g. deleted by hand): the recorded per-node results keep it Ready
    again = run(apply(b, p), nodes=["a", "b"], jobs=[], now=T0 + timedelta(hours=1), records=p.records)
    assert again.phase == "Ready" and again.create == []
    # a new node joins: only it gets a Job, and Ready turns False until it has the files
    grown = run(apply(b, p), nodes=["a", "b", "c"], jobs=jobs, records=p.records)
    assert [r.node for r in grown.create] == ["c"]
    assert grown.phase == "Pending" and grown.status_patch["readyNodes"] == 2


def test_one_failed_node_fails_the_artifact() -> None:
    jobs = [
        job(node="a", succeeded=1, complete=True, result=ready_result()),
        job(
            node="b",
            failure_reason="PodFailurePolicy",
            result=JobResult(
                phase="Failed", reason="InsufficientStorage", message="need 91.6 MB, 10 MB free"
            ),
        ),
        job(node="c", active=1),
    ]
    p = run(body(node_local=True), nodes=["a", "b", "c"], jobs=jobs)
    assert p.phase == "Failed"
    assert conds(p)["Stalled"] == ("True", "InsufficientStorage")
    assert p.status_patch["conditions"][0]["message"].startswith("b: need 91.6 MB")
    assert entries(p)["b"]["reason"] == "InsufficientStorage"
    assert p.delete == []  # c keeps downloading


def test_nodes_disagreeing_on_digest_of_one_commit_is_a_checksum_failure() -> None:
    jobs = [
        job(node="a", succeeded=1, complete=True, result=ready_result(digest="sha256:" + "00" * 32)),
        job(node="b", succeeded=1, complete=True, result=ready_result()),
    ]
    p = run(body(node_local=True), nodes=["a", "b"], jobs=jobs)
    assert p.phase == "Failed"
    assert conds(p)["Stalled"] == ("True", "ChecksumMismatch")


def test_plan_is_a_fixed_point() -> None:
    """Re-planning on the status a plan produced yields the same patch (no churn of timestamps)."""
    b = body(node_local=True)
    jobs = [job(node="a", succeeded=1, complete=True, result=ready_result()), job(node="b")]
    first = run(b, nodes=["a", "b"], jobs=jobs)
    b = apply(b, first)
    second = run(b, nodes=["a", "b"], jobs=jobs, now=T0 + timedelta(minutes=3))
    assert second.nodes == []
    assert second.status_patch["conditions"] == first.status_patch["conditions"]
    assert second.status_patch["progress"] == first.status_patch["progress"]


# ------------------------------------------------------------------------------------ JobState


def test_job_state_from_manifest() -> None:
    a = ModelArtifact.from_body(body(node_local=True))
    manifest = builders.fetch_job(a, node="worker-1", defaults=DEFAULTS)
    manifest["status"] = {
        "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"},
            {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 2"},
        ],
    }
    s = JobState.from_job(
        manifest, '{"phase": "Failed", "reason": "RepoNotFound", "message": "no such repo"}'
    )
    assert s.name == manifest["metadata"]["name"]
    assert (s.generation, s.node, s.failed, s.active) == (2, "worker-1", 1, 0)
    assert s.failure_reason == "PodFailurePolicy" and s.finished and not s.complete
    assert s.result is not None and s.result.reason == "RepoNotFound"
    manifest["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    manifest["metadata"]["deletionTimestamp"] = "2026-05-01T12:00:00Z"
    s = JobState.from_job(manifest, "not json")
    assert s.complete and s.deleting and s.result is None and s.failure_reason is None
    assert JobState.from_job({"metadata": {"name": "x"}}).generation == -1


def test_pod_result_takes_the_newest_finished_pod() -> None:
    def pod(finished: str, message: str, *, last: bool = False, name: str = "fetch") -> dict[str, Any]:
        term = {"terminated": {"exitCode": 1, "finishedAt": finished, "message": message}}
        key = "lastState" if last else "state"
        return {"status": {"containerStatuses": [{"name": name, key: term}]}}

    failed = '{"phase": "Failed", "reason": "HubUnavailable", "message": "503"}'
    ready = '{"phase": "Ready", "digest": "sha256:ab", "commit": "c", "totalBytes": 1, "fileCount": 1}'
    pods = [
        pod("2026-05-01T12:00:05Z", failed),
        pod("2026-05-01T12:03:00Z", ready, last=True),
        pod("2026-05-01T12:09:00Z", ready, name="prepare"),
        pod("2026-05-01T12:10:00Z", "Traceback: not json"),
        {"status": {"containerStatuses": [{"name": "fetch", "state": {"running": {}}}]}},
        {"metadata": {}},
    ]
    res = pod_result(pods)
    assert res is not None and res.phase == "Ready" and res.digest == "sha256:ab"
    assert pod_result(pods[:1]) == JobResult(phase="Failed", reason="HubUnavailable", message="503")
    assert pod_result([]) is None


# --------------------------------------------------------------------------------------- nodes


NO_SCHED = {"key": "gpu", "value": "a100", "effect": "NoSchedule"}
NO_EXEC = {"key": "dedicated", "value": "ml", "effect": "NoExecute"}
PREFER = {"key": "spot", "value": "true", "effect": "PreferNoSchedule"}


@pytest.mark.parametrize(
    ("labels", "taints", "selector", "tolerations", "unschedulable", "expected"),
    [
        ({}, [], None, None, False, True),
        ({"gpu": "yes"}, [], {"gpu": "yes"}, None, False, True),
        ({"gpu": "no"}, [], {"gpu": "yes"}, None, False, False),
        ({}, [], {"gpu": "yes"}, None, False, False),
        ({}, [], None, None, True, False),
        ({}, [PREFER], None, None, False, True),
        ({}, [NO_SCHED], None, None, False, False),
        ({}, [NO_SCHED], None, [{"key": "gpu", "operator": "Exists"}], False, True),
        ({}, [NO_SCHED], None, [{"key": "gpu", "value": "a100"}], False, True),
        ({}, [NO_SCHED], None, [{"key": "gpu", "operator": "Equal", "value": "h100"}], False, False),
        ({}, [NO_SCHED], None, [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}], False, False),
        ({}, [NO_SCHED, NO_EXEC], None, [{"key": "gpu", "operator": "Exists"}], False, False),
        ({}, [NO_SCHED, NO_EXEC], None, [{"operator": "Exists"}], False, True),
        ({}, [NO_EXEC], None, [{"key": "dedicated", "value": "ml", "effect": "NoExecute"}], False, True),
    ],
)
def test_node_matches(
    labels: dict[str, str],
    taints: list[dict[str, str]],
    selector: dict[str, str] | None,
    tolerations: list[dict[str, Any]] | None,
    unschedulable: bool,
    expected: bool,
) -> None:
    tols = [Toleration.model_validate(t) for t in tolerations] if tolerations is not None else None
    assert node_matches(labels, taints, selector, tols, unschedulable=unschedulable) is expected


def test_matching_nodes_from_node_objects() -> None:
    b = body(node_local=True)
    b["spec"]["storage"]["nodeLocal"]["tolerations"] = [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    a = ModelArtifact.from_body(b)
    nodes: list[dict[str, Any]] = [
        {"metadata": {"name": "z", "labels": {"gpu": "yes"}}, "spec": {"taints": [NO_SCHED]}},
        {"metadata": {"name": "y", "labels": {"gpu": "yes"}}, "spec": {"unschedulable": True}},
        {"metadata": {"name": "x", "labels": {"gpu": "no"}}, "spec": {}},
        {"metadata": {"name": "w", "labels": {"gpu": "yes"}}, "spec": {"taints": [NO_EXEC]}},
        {"metadata": {"name": "v", "labels": {"gpu": "yes"}}},
    ]
    assert matching_nodes(a, nodes) == ["v", "z"]
    assert matching_nodes(ModelArtifact.from_body(body()), nodes) == []


def test_later_node_jobs_fetch_the_commit_earlier_nodes_resolved() -> None:
    b = body(node_local=True)
    b["status"] = {
        "nodes": [
            {"name": "n1", "phase": "Downloading", "observedGeneration": 2, "resolvedRevision": COMMIT},
            {"name": "old", "phase": "Ready", "observedGeneration": 1, "resolvedRevision": "f" * 40},
        ]
    }
    p = run(b, nodes=["n1", "n2"], jobs=[job(node="n1", active=1)])
    (created,) = manifests(b, p)
    args = created["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--revision") + 1] == COMMIT
    assert args[args.index("--node") + 1] == "n2"


def test_first_node_jobs_resolve_the_spec_revision() -> None:
    b = body(node_local=True, source={"huggingFace": {"repo": "org/minilm", "revision": "v2"}})
    p = run(b, nodes=["n1"])
    args = manifests(b, p)[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--revision") + 1] == "v2"


def failed_job(reason: str, failed_ago: timedelta, job_reason: str = "BackoffLimitExceeded") -> JobState:
    return job(
        failed=5,
        failure_reason=job_reason,
        failure_message="Job has reached the specified backoff limit",
        failed_at=T0 - failed_ago,
        result=JobResult(phase="Failed", reason=reason, message=f"{reason} happened"),
    )


def test_transient_failure_says_when_it_will_be_retried() -> None:
    b = body()
    p = plan(
        ModelArtifact.from_body(b),
        nodes=None,
        jobs=[failed_job("HubUnavailable", timedelta(seconds=10))],
        now=T0,
        retry_after=timedelta(minutes=5),
    )
    assert p.phase == "Failed" and not p.delete and not p.create
    assert "retrying at 2026-05-01T12:04:50Z" in conds_message(p)


def test_transient_failure_is_retried_after_the_delay() -> None:
    old = failed_job("HubUnavailable", timedelta(minutes=6))
    p = plan(
        ModelArtifact.from_body(body()),
        nodes=None,
        jobs=[old],
        now=T0,
        retry_after=timedelta(minutes=5),
    )
    assert p.delete == [old.name]
    assert p.phase == "Pending"
    assert conds(p)["Ready"] == ("False", "Retrying")
    assert not p.create, "the replacement waits until the failed Job is gone"


@pytest.mark.parametrize("reason", ["RepoNotFound", "Unauthorized", "ChecksumMismatch", "NoMatchingFiles"])
def test_permanent_failures_are_not_retried(reason: str) -> None:
    p = plan(
        ModelArtifact.from_body(body()),
        nodes=None,
        # a permanent error fails the Job at once through its podFailurePolicy
        jobs=[failed_job(reason, timedelta(hours=2), job_reason="PodFailurePolicy")],
        now=T0,
        retry_after=timedelta(minutes=5),
    )
    assert not p.delete and p.phase == "Failed"
    assert conds(p)["Ready"] == ("False", reason)
    assert "retrying" not in conds_message(p)


def test_retry_disabled_keeps_transient_failures() -> None:
    p = run(body(), jobs=[failed_job("HubUnavailable", timedelta(hours=2))])
    assert not p.delete and p.phase == "Failed"


def test_job_failure_time_is_read_from_the_failed_condition() -> None:
    manifest = builders.fetch_job(ModelArtifact.from_body(body()), node=None, defaults=DEFAULTS)
    manifest["status"] = {
        "failed": 5,
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "lastTransitionTime": "2026-05-01T11:00:00Z",
            }
        ],
    }
    assert JobState.from_job(manifest).failed_at == T0 - timedelta(hours=1)


def conds_message(p: Plan) -> str:
    return next(c["message"] for c in p.status_patch["conditions"] if c["type"] == "Ready")


def node_obj(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def test_retire_cleans_nodes_whose_labels_no_longer_match() -> None:
    artifact = ModelArtifact.from_body(body(node_local=True))
    nodes = {"moved": node_obj("moved", gpu="no"), "away": node_obj("away", gpu="yes")}
    out = retire_nodes(artifact, ["moved", "away", "gone"], nodes, {}, busy=[])
    # "away" still matches the selector (tainted or NotReady): it keeps its copy
    assert out.cleanup == ["moved"]
    assert out.forget == ["gone"]
    done = job(node="moved", complete=True)
    finished = retire_nodes(artifact, ["moved"], nodes, {"moved": done}, busy=[])
    assert finished.forget == ["moved"] and finished.remove_jobs == [done.name] and not finished.cleanup


def test_retire_waits_for_a_running_download_and_honours_retain() -> None:
    nodes = {"moved": node_obj("moved")}
    artifact = ModelArtifact.from_body(body(node_local=True))
    assert retire_nodes(artifact, ["moved"], nodes, {}, busy=["moved"]).cleanup == []
    retained = ModelArtifact.from_body(body(node_local=True, deletionPolicy="Retain"))
    out = retire_nodes(retained, ["moved"], nodes, {}, busy=[])
    assert out.forget == ["moved"] and not out.cleanup


def test_a_job_snapshot_keeps_what_a_pass_reads_and_drops_the_pod_template() -> None:
    from modeldepot.decisions import job_duration, job_snapshot

    full = {
        "metadata": {
            "name": "fetch-x",
            "namespace": "team-a",
            "uid": "u1",
            "labels": {"modeldepot.dev/generation": "3", "modeldepot.dev/node": "n1"},
            "annotations": {"modeldepot.dev/node": "n1"},
            "deletionTimestamp": "2026-11-22T06:02:00Z",
            "managedFields": [{"manager": "kube-controller-manager"}] * 20,
        },
        "spec": {"template": {"spec": {"containers": [{"name": "fetch", "args": ["x"] * 100}]}}},
        "status": {
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            "startTime": "2026-11-22T06:00:00Z",
            "completionTime": "2026-11-22T06:01:00Z",
        },
    }
    snapshot = job_snapshot(full)
    assert "spec" not in snapshot and "managedFields" not in snapshot["metadata"]
    assert JobState.from_job(snapshot) == JobState.from_job(full)
    assert job_duration(snapshot) == job_duration(full) == 60.0
    snapshot["status"]["failed"] = 2
    assert full["status"]["failed"] == 1  # a copy: the index never aliases kopf's bodies
