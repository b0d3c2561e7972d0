"""Big fleets fit in one object: the node records kept outside the artifact, the aggregate
(`status.fleet`), which nodes `status.nodes` lists, which fetchers report, the compaction of a
status written before the records existed, and what a planted or malformed record gets.

Pure decisions first, then reconcile and finalize against the in-memory FakeCluster.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fakecluster import FakeCluster

from modeldepot import builders
from modeldepot.decisions import (
    LISTED_NODES,
    REPORTING_NODES,
    JobState,
    NodeRecord,
    NodeRecords,
    plan,
    with_records,
)
from modeldepot.decisions.nodes import RECORDS_KEY
from modeldepot.models import JobResult, ModelArtifact
from modeldepot.reconciler import Reconciler
from modeldepot.settings import OperatorSettings

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NS, OPS, UID = "team-a", "md-system", "uid-team-a-llm"
COMMIT = "c" * 40
DIGEST = "sha256:" + "d" * 64
RECORD = NodeRecord(generation=1, commit=COMMIT, digest=DIGEST, total_bytes=1000, file_count=2)
RESULT = {"phase": "Ready", "commit": COMMIT, "digest": DIGEST, "totalBytes": 1000, "fileCount": 2}


def artifact(*, generation: int = 1, nodes: list[dict[str, Any]] | None = None) -> ModelArtifact:
    return ModelArtifact.from_body(
        {
            "metadata": {"name": "llm", "namespace": NS, "uid": UID, "generation": generation},
            "spec": {
                "source": {"huggingFace": {"repo": "org/llm"}},
                "storage": {"nodeLocal": {"nodeSelector": {"gpu": "yes"}}},
            },
            "status": {"nodes": nodes or []},
        }
    )


def node_names(n: int) -> list[str]:
    return [f"node-{i:04d}" for i in range(n)]


def ready_entry(node: str, generation: int = 1) -> dict[str, Any]:
    return {
        "name": node,
        "phase": "Ready",
        "percent": 100.0,
        "bytesDone": 1000,
        "bytesTotal": 1000,
        "filesDone": 2,
        "filesTotal": 2,
        "summary": "100% of 1.0 kB",
        "resolvedRevision": COMMIT,
        "observedGeneration": generation,
        "digest": DIGEST,
    }


def job(node: str, **kw: Any) -> JobState:
    return JobState(name=builders.fetch_job_name("llm", 1, node, NS), generation=1, node=node, **kw)


def done(node: str) -> JobState:
    result = JobResult.model_validate(RESULT)
    return job(node, succeeded=1, complete=True, result=result)


# ------------------------------------------------------------------------------------ the records


def test_records_round_trip_and_stay_small_at_a_thousand_nodes() -> None:
    records = NodeRecords(UID, dict.fromkeys(node_names(1000), RECORD))
    data = records.to_data()
    assert NodeRecords.from_data(UID, data) == records
    # one result listed once, each node its name and two numbers: far below a ConfigMap's 1 MiB
    assert len(data[RECORDS_KEY]) < 30_000
    assert json.loads(data[RECORDS_KEY])["results"] == [
        {"commit": COMMIT, "digest": DIGEST, "totalBytes": 1000, "fileCount": 2}
    ]


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"version": 1, "uid": "someone-else", "results": [], "nodes": {}}),
        json.dumps({"version": 99, "uid": UID, "results": [], "nodes": {}}),
    ],
)
def test_records_of_another_artifact_or_unreadable_ones_are_no_records(doc: str) -> None:
    assert NodeRecords.from_data(UID, {RECORDS_KEY: doc}).nodes == {}


def test_a_malformed_record_is_ignored_and_the_others_kept() -> None:
    good = {"commit": COMMIT, "digest": DIGEST, "totalBytes": 1, "fileCount": 1}
    doc = {
        "version": 1,
        "uid": UID,
        "results": [good, {**good, "digest": "sha256:short"}, {**good, "commit": "../etc"}],
        "nodes": {
            "ok": [1, 0],
            "bad-digest": [1, 1],
            "bad-commit": [1, 2],
            "no-such-result": [1, 7],
            "Not_A_Node/..": [1, 0],
            "bad-generation": [0, 0],
            "bad-ref": "1:0",
        },
    }
    assert set(NodeRecords.from_data(UID, {RECORDS_KEY: json.dumps(doc)}).nodes) == {"ok"}


def test_recorded_nodes_read_as_ready_entries_and_a_listed_entry_wins() -> None:
    listed = {"name": "b", "phase": "Failed", "reason": "DownloadFailed", "observedGeneration": 1}
    view = with_records(artifact(nodes=[listed]), NodeRecords(UID, {"a": RECORD, "b": RECORD}))
    a, b = view.status.node("a"), view.status.node("b")
    assert a is not None and a.phase == "Ready" and a.digest == DIGEST and a.observed_generation == 1
    assert b is not None and b.phase == "Failed"


# ---------------------------------------------------------------------------------- the decisions


def test_ready_nodes_are_recorded_and_leave_the_list() -> None:
    nodes = node_names(3)
    listed = [ready_entry(n) for n in nodes[:2]]  # as the fetchers left them
    p = plan(artifact(nodes=listed), nodes=nodes, jobs=[done(n) for n in nodes], now=T0)
    assert p.phase == "Ready"
    assert p.records is not None and set(p.records.nodes) == set(nodes)
    assert p.forget == nodes[:2] and p.nodes == [] and not p.compact
    fleet = p.status_patch["fleet"]
    assert (fleet["matched"], fleet["ready"], fleet["listed"], fleet["unlisted"]) == (3, 3, 0, 0)


def test_a_restart_with_only_the_records_fetches_nothing_again() -> None:
    nodes = node_names(50)
    records = NodeRecords(UID, dict.fromkeys(nodes, RECORD))
    p = plan(artifact(), nodes=nodes, jobs=[], now=T0, records=records)
    assert p.phase == "Ready" and p.create == [] and p.nodes == [] and p.forget == []
    assert p.records == records  # nothing to write
    assert p.status_patch["readyNodes"] == 50 and p.status_patch["digest"] == DIGEST


def test_a_new_generation_fetches_again_and_keeps_the_old_record_until_then() -> None:
    nodes = ["a", "b"]
    records = NodeRecords(UID, dict.fromkeys(nodes, RECORD))
    p = plan(artifact(generation=2), nodes=nodes, jobs=[], now=T0, records=records)
    assert sorted(str(r.node) for r in p.create) == nodes
    assert p.records == records  # the files are still there (cleanup, retirement)
    assert {e.name: e.phase for e in p.nodes} == {"a": "Pending", "b": "Pending"}


def test_the_list_is_bounded_failed_first_then_waiting_and_the_rest_counted() -> None:
    nodes = node_names(100)
    failed = {n: job(n, failed=5, failure_reason="BackoffLimitExceeded") for n in nodes[:30]}
    downloading = {n: job(n, active=1, ready=1) for n in nodes[30:60]}
    reporting = nodes[30:34]  # four downloading nodes report their progress
    waiting = {n: job(n, active=1) for n in nodes[60:90]}
    ready = {n: done(n) for n in nodes[90:]}
    listed = [
        {"name": n, "phase": "Downloading", "percent": 5.0, "observedGeneration": 1, "updatedAt": "x"}
        for n in reporting
    ]
    jobs = [*failed.values(), *downloading.values(), *waiting.values(), *ready.values()]
    p = plan(artifact(nodes=listed), nodes=nodes, jobs=jobs, now=T0)
    applied = [e.name for e in p.nodes]
    assert applied == sorted(failed)[: LISTED_NODES - len(reporting)]  # failed come first
    assert all(e.phase == "Failed" for e in p.nodes)
    fleet = p.status_patch["fleet"]
    assert (fleet["matched"], fleet["ready"], fleet["failed"]) == (100, 10, 30)
    assert (fleet["downloading"], fleet["pending"]) == (30, 30)
    assert fleet["listed"] == LISTED_NODES
    assert fleet["unlisted"] == 100 - 10 - LISTED_NODES
    assert p.phase == "Failed"


def test_waiting_nodes_fill_the_list_when_none_failed() -> None:
    nodes = node_names(40)
    p = plan(artifact(), nodes=nodes, jobs=[job(n, active=1) for n in nodes], now=T0)
    assert [e.name for e in p.nodes] == nodes[:LISTED_NODES]
    assert p.status_patch["fleet"]["unlisted"] == 40 - LISTED_NODES


def test_at_most_reporting_nodes_fetchers_report_counting_those_listed() -> None:
    nodes = node_names(100)
    p = plan(artifact(), nodes=nodes, jobs=[], now=T0)
    assert len(p.create) == 100
    assert sum(r.report for r in p.create) == REPORTING_NODES
    listed = [{"name": n, "phase": "Downloading", "observedGeneration": 1, "percent": 1.0} for n in nodes[:4]]
    running = [job(n, active=1, ready=1) for n in nodes[:4]]
    p = plan(artifact(nodes=listed), nodes=nodes, jobs=running, now=T0)
    assert len(p.create) == 96 and sum(r.report for r in p.create) == REPORTING_NODES - 4
    artifact_ = artifact()
    silent = next(r for r in p.create if not r.report)
    manifest = builders.fetch_job(
        artifact_, node=silent.node, defaults=builders.JobDefaults(image="img"), report=False
    )
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--report" not in args and "--node" in args


def test_a_running_fetcher_that_does_not_report_counts_as_downloading() -> None:
    p = plan(artifact(), nodes=["a"], jobs=[job("a", active=1, ready=1)], now=T0)
    assert p.phase == "Downloading" and p.status_patch["fleet"]["downloading"] == 1
    assert p.nodes == []  # its entry is the fetcher's to write, and this one does not


def test_a_silent_download_does_not_keep_the_pending_entry_it_never_replaces() -> None:
    pending = {"name": "a", "phase": "Pending", "summary": "Pending", "observedGeneration": 1}
    p = plan(artifact(nodes=[pending]), nodes=["a"], jobs=[job("a", active=1, ready=1)], now=T0)
    assert p.forget == ["a"]
    fleet = p.status_patch["fleet"]
    assert (fleet["downloading"], fleet["listed"], fleet["unlisted"]) == (1, 0, 1)


def test_a_status_full_of_ready_entries_is_compacted_once() -> None:
    nodes = node_names(300)
    listed = [ready_entry(n) for n in nodes]
    p = plan(artifact(nodes=listed), nodes=nodes, jobs=[], now=T0)
    assert p.phase == "Ready" and p.create == []
    assert p.compact and p.records is not None and set(p.records.nodes) == set(nodes)
    again = plan(artifact(), nodes=nodes, jobs=[], now=T0, records=p.records)
    assert not again.compact and again.forget == [] and again.records == p.records


def test_a_ready_entry_stays_listed_until_its_node_can_be_recorded() -> None:
    entry = {**ready_entry("a"), "resolvedRevision": None}  # no commit: nothing to record it by
    p = plan(artifact(nodes=[entry]), nodes=["a"], jobs=[], now=T0)
    assert p.records is not None and p.records.nodes == {} and p.forget == []


# ------------------------------------------------------------------------ reconcile and finalize


def settings() -> OperatorSettings:
    return OperatorSettings(
        operator_namespace=OPS,
        allowed_endpoints=["https://huggingface.co"],
        cancel_timeout_seconds=60,
        cleanup_timeout_seconds=120,
    )


def node_cluster(n: int) -> FakeCluster:
    cluster = FakeCluster()
    for node in node_names(n):
        cluster.add_node(node, gpu="yes")
    cluster.add_artifact("llm", {"source": {"huggingFace": {"repo": "org/llm"}}, "storage": {
        "nodeLocal": {"nodeSelector": {"gpu": "yes"}}}})  # fmt: skip
    return cluster


def reconcile(cluster: FakeCluster) -> None:
    assert asyncio.run(Reconciler(settings(), cluster).reconcile(NS, "llm")) is not None


def finish_all(cluster: FakeCluster) -> None:
    for stored in cluster.jobs_in(OPS):
        cluster.complete(stored)
        node = stored["metadata"]["annotations"][builders.ANNOTATION_NODE]
        cluster.add_pod_for(stored, node=node, result=RESULT)


def records_name() -> str:
    return builders.fetcher_identity_name(ModelArtifact.from_body(cluster_body()))


def cluster_body() -> dict[str, Any]:
    return {
        "metadata": {"name": "llm", "namespace": NS, "uid": UID},
        "spec": {"source": {"huggingFace": {"repo": "org/llm"}}, "storage": {"nodeLocal": {}}},
    }


def test_a_fleet_becomes_ready_with_an_empty_list_and_stays_ready_across_a_restart() -> None:
    cluster = node_cluster(30)
    reconcile(cluster)
    assert len(cluster.jobs_in(OPS)) == 30
    finish_all(cluster)
    reconcile(cluster)
    status = cluster.status(NS, "llm")
    assert status["phase"] == "Ready" and "nodes" not in status
    assert status["fleet"]["ready"] == 30 and status["fleet"]["records"] == f"{OPS}/{records_name()}"
    cm = cluster.config_maps[(OPS, records_name())]
    assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == builders.RECORDS_APP
    assert len(NodeRecords.from_data(UID, cm["data"]).nodes) == 30
    # the Jobs expire (TTL) and a new operator process starts: nothing is fetched again
    cluster.jobs.clear()
    cluster.pods.clear()
    cluster.writes.clear()
    reconcile(cluster)
    assert cluster.jobs_in(OPS) == [] and cluster.writes == []


def test_finalize_cleans_every_recorded_node_and_deletes_the_records() -> None:
    cluster = node_cluster(5)
    reconcile(cluster)
    finish_all(cluster)
    reconcile(cluster)
    cluster.jobs.clear()
    cluster.pods.clear()
    assert "nodes" not in cluster.status(NS, "llm")
    cluster.artifacts[(NS, "llm")]["metadata"]["deletionTimestamp"] = "2026-11-22T07:00:00Z"
    body = cluster.get_artifact(NS, "llm")
    assert body is not None
    step = asyncio.run(Reconciler(settings(), cluster).finalize(body, 0))
    assert not step.done
    cleaned = sorted(
        j["metadata"]["annotations"][builders.ANNOTATION_NODE]
        for j in cluster.jobs_in(OPS, "modeldepot-cleanup")
    )
    assert cleaned == node_names(5)
    for stored in cluster.jobs_in(OPS, "modeldepot-cleanup"):
        cluster.complete(stored)
    assert asyncio.run(Reconciler(settings(), cluster).finalize(body, 1)).done
    assert (OPS, records_name()) not in cluster.config_maps


def test_an_old_status_full_of_ready_entries_is_compacted_by_one_patch() -> None:
    cluster = node_cluster(200)
    cluster.artifacts[(NS, "llm")]["status"] = {"nodes": [ready_entry(n) for n in node_names(200)]}
    before = len(json.dumps(cluster.artifacts[(NS, "llm")]))
    reconcile(cluster)
    assert cluster.jobs_in(OPS) == []  # every node already holds the files
    assert "nodes" not in cluster.status(NS, "llm")
    after = len(json.dumps(cluster.artifacts[(NS, "llm")]))
    assert after < before / 10
    patches = [w for w in cluster.writes if w.startswith(("patch-status", "apply-status"))]
    assert len(patches) == 2  # `nodes: null`, then the rest of the status: no apply per node
    assert cluster.writes.index(f"write-records {OPS}/{records_name()}") < cluster.writes.index(patches[0])
    cluster.writes.clear()
    reconcile(cluster)
    assert cluster.writes == []


def test_a_planted_record_of_another_artifact_skips_no_download() -> None:
    cluster = node_cluster(3)
    planted = NodeRecords("uid-of-someone-else", dict.fromkeys(node_names(3), RECORD))
    cluster.config_maps[(OPS, records_name())] = {"metadata": {}, "data": planted.to_data()}
    reconcile(cluster)
    assert len(cluster.jobs_in(OPS)) == 3
    assert cluster.status(NS, "llm")["phase"] == "Pending"


def test_the_fetcher_identity_gains_no_right_to_the_records() -> None:
    role = builders.fetcher_role(ModelArtifact.from_body(cluster_body()))
    assert [r["resources"] for r in role["rules"]] == [["modelartifacts/status"]]
    assert all("configmaps" not in r["resources"] for r in role["rules"])


def test_passes_queued_behind_a_waiting_one_are_coalesced() -> None:
    """A fleet's Jobs change by the thousand: a call made while a pass of the same artifact
    still waits for the lock is served by that pass (it has read nothing yet)."""
    cluster = node_cluster(3)
    reconciler = Reconciler(settings(), cluster)

    async def burst() -> list[Any]:
        return list(await asyncio.gather(*(reconciler.reconcile(NS, "llm") for _ in range(5))))

    outcomes = asyncio.run(burst())
    assert [o is not None for o in outcomes] == [True, True, False, False, False]
    assert len(cluster.jobs_in(OPS)) == 3
    # once nothing waits, the next call gets a pass of its own
    assert asyncio.run(reconciler.reconcile(NS, "llm")) is not None
