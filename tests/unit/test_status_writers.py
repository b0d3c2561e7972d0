"""The status writing protocol (docs/internals.md, Writing the status): the operator merge-patches
everything but `status.nodes`; each node's entry is server-side applied by that node's field
manager, whether the fetch pod there or the operator writes it; retiring a node removes exactly
its entry. So concurrent writers never clobber each other's entries.

The FakeCluster applies merge patches and applies with the API server's semantics (a list in a
merge patch replaces the list; an apply merges by the list-map key and tracks field ownership);
tests/integration/test_operator_resilience.py runs the same protocol against a real API server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakecluster import FakeCluster

from modeldepot import kube
from modeldepot.models import ModelArtifactStatus, NodeStatus, node_field_manager, status_merge_patch
from modeldepot.reconciler import Outcome, Reconciler
from modeldepot.settings import OperatorSettings
from modeldepot.vocabulary import Phase

NS, OPS, NAME = "team-a", "md-system", "local"


def reconcile(cluster: FakeCluster) -> Outcome:
    settings = OperatorSettings(operator_namespace=OPS, allowed_endpoints=["https://huggingface.co"])
    outcome = asyncio.run(Reconciler(settings, cluster).reconcile(NS, NAME))
    assert outcome is not None
    return outcome


def entries(cluster: FakeCluster) -> dict[str, dict[str, Any]]:
    nodes: list[dict[str, Any]] = cluster.status(NS, NAME).get("nodes") or []
    assert len({e["name"] for e in nodes}) == len(nodes), "one entry per node"
    return {e["name"]: e for e in nodes}


def fetcher_reports(cluster: FakeCluster, node: str, done: int) -> None:
    """What `modeldepot fetch --node NODE` sends every ~2 s (cli._status_sink)."""
    progress = NodeStatus(
        name=node,
        phase=Phase.DOWNLOADING,
        percent=done / 10,
        bytes_done=done,
        bytes_total=1000,
        files_done=0,
        files_total=2,
        bytes_per_second=100.0,
        observed_generation=1,
        updated_at=f"2026-11-22T06:00:{done // 100:02d}Z",
    )
    cluster.apply_node_status(NS, NAME, progress)


def downloading_on_two_nodes() -> FakeCluster:
    """A node-local artifact whose Jobs on n1 and n2 are running."""
    cluster = FakeCluster()
    for node in ("n1", "n2"):
        cluster.add_node(node, pool="a")
    cluster.add_artifact(NAME, {"source": {"huggingFace": {"repo": "org/model"}}, "storage": {
        "nodeLocal": {"nodeSelector": {"pool": "a"}}
    }})  # fmt: skip
    assert reconcile(cluster).created == 2
    for job in cluster.jobs_in(OPS):
        node = job["metadata"]["annotations"]["modeldepot.dev/node"]
        cluster.jobs[(OPS, job["metadata"]["name"])]["status"] = {"active": 1}
        cluster.add_pod_for(job, node=node)
    return cluster


def test_fetchers_and_the_operator_never_clobber_each_others_entries() -> None:
    cluster = downloading_on_two_nodes()
    assert {n: e["phase"] for n, e in entries(cluster).items()} == {"n1": "Pending", "n2": "Pending"}

    fetcher_reports(cluster, "n1", 100)
    reconcile(cluster)  # folds n1's progress into the aggregate while n2 still waits
    fetcher_reports(cluster, "n2", 300)
    fetcher_reports(cluster, "n1", 500)
    reconcile(cluster)

    got = entries(cluster)
    assert (got["n1"]["bytesDone"], got["n2"]["bytesDone"]) == (500, 300)
    assert got["n1"]["phase"] == got["n2"]["phase"] == "Downloading"
    status = cluster.status(NS, NAME)
    assert status["phase"] == "Downloading" and status["progress"]["bytesDone"] == 800
    assert cluster.status_patches, "the operator merge-patched its fields"
    assert not [p for p in cluster.status_patches if "nodes" in p["status"]]
    # one owner per entry, whoever wrote it: the node's own field manager
    owners = cluster.node_owners[(NS, NAME)]
    assert {node: set(by) for node, by in owners.items()} == {
        "n1": {node_field_manager("n1")},
        "n2": {node_field_manager("n2")},
    }


def test_retiring_a_node_removes_exactly_its_entry() -> None:
    cluster = downloading_on_two_nodes()
    fetcher_reports(cluster, "n1", 500)
    fetcher_reports(cluster, "n2", 300)
    reconcile(cluster)
    kept = entries(cluster)["n1"]

    cluster.nodes["n2"]["metadata"]["labels"]["pool"] = "b"  # n2 stops matching
    reconcile(cluster)  # its Job is cancelled; the files stay while its pod still runs
    assert set(entries(cluster)) == {"n1", "n2"}
    for key in [k for k, pod in cluster.pods.items() if pod["spec"]["nodeName"] == "n2"]:
        del cluster.pods[key]
    reconcile(cluster)  # a cleanup Job removes n2's copy
    (cleanup,) = cluster.jobs_in(OPS, "modeldepot-cleanup")
    cluster.complete(cleanup)
    reconcile(cluster)

    assert entries(cluster) == {"n1": kept}
    assert f"apply-status {NS}/{NAME} {node_field_manager('n2')}" in cluster.writes
    fetcher_reports(cluster, "n1", 600)
    assert set(entries(cluster)) == {"n1"} and entries(cluster)["n1"]["bytesDone"] == 600


def test_a_merge_patch_naming_nodes_would_clobber_the_other_entries() -> None:
    """Why the protocol exists (and that the fake models it): a list in a merge patch replaces the list."""
    cluster = downloading_on_two_nodes()
    fetcher_reports(cluster, "n1", 500)
    fetcher_reports(cluster, "n2", 300)
    lone = {"name": "n2", "phase": "Pending"}
    cluster.patch_artifact_status(NS, NAME, {"status": {"nodes": [lone]}})
    assert entries(cluster) == {"n2": lone}


def test_a_node_map_of_an_older_version_is_removed_once_and_the_entries_written_again() -> None:
    cluster = FakeCluster()
    cluster.add_node("n1")
    cluster.add_artifact(
        NAME, {"source": {"huggingFace": {"repo": "org/model"}}, "storage": {"nodeLocal": {}}}
    )
    cluster.artifacts[(NS, NAME)]["status"] = {"nodes": {"n1": {"phase": "Pending", "observedGeneration": 1}}}
    assert reconcile(cluster).created == 1
    assert cluster.status_patches[0] == {"status": {"nodes": None}}
    assert entries(cluster)["n1"]["phase"] == "Pending"
    patches = len(cluster.status_patches)
    reconcile(cluster)
    assert not [p for p in cluster.status_patches[patches:] if "nodes" in p["status"]]


def test_the_status_merge_patch_never_names_nodes() -> None:
    status = ModelArtifactStatus(phase=Phase.READY, nodes=[NodeStatus(name="n1")])
    with pytest.raises(ValueError, match="never merge-patched"):
        status_merge_patch(status)
    # set to None, a field is removed; never set, it is left alone
    assert status_merge_patch(ModelArtifactStatus(phase=Phase.READY, digest=None)) == {
        "phase": "Ready",
        "digest": None,
    }


def test_node_field_managers_fit_the_api_servers_limit_and_stay_distinct() -> None:
    assert node_field_manager("gpu-1") == "modeldepot-node/gpu-1"
    long_a, long_b = "a" * 250 + "x", "a" * 250 + "y"
    assert len(node_field_manager(long_a)) == 128
    assert node_field_manager(long_a) != node_field_manager(long_b)


def test_kube_applies_a_node_entry_server_side_as_that_nodes_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class CustomObjectsApi:
        def __init__(self, api_client: object) -> None:
            pass

        def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
            calls.append((args, kwargs))

    monkeypatch.setattr(kube, "api_client", lambda: None)
    monkeypatch.setattr(kube.client, "CustomObjectsApi", CustomObjectsApi)
    kube.apply_node_status("ns", "art", NodeStatus(name="gpu-1", phase=Phase.DOWNLOADING, bytes_done=5))
    kube.forget_node_status("ns", "art", "gpu-1")

    (args, kwargs), (forget_args, forget_kwargs) = calls
    assert args[:5] == ("modeldepot.dev", "v1alpha1", "ns", "modelartifacts", "art")
    assert args[5] == {
        "apiVersion": "modeldepot.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "art", "namespace": "ns"},
        "status": {"nodes": [{"name": "gpu-1", "phase": "Downloading", "bytesDone": 5}]},
    }
    assert kwargs == {
        "field_manager": "modeldepot-node/gpu-1",
        "force": True,
        "_content_type": "application/apply-patch+yaml",
    }
    # the same manager applying no entry: the API server removes the fields it owned, the entry
    assert forget_args[5]["status"] == {} and forget_kwargs == kwargs
