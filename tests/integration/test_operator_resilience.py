"""Deletion always completes: a vanished node or claim ends in a Warning Event, not a stuck finalizer;
nodes come and go: each node's status entry has its own writer, and a retired node loses only its own."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from support import Artifacts, ClusterHandle, node_entries, unique_repo, wait_until

SERVED_LABEL = "localdev.modeldepot.dev/podrunner"


def add_node(cluster: ClusterHandle, name: str, labels: dict[str, str]) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {SERVED_LABEL: "true", **labels}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node))

    def ready() -> bool:
        status = cluster.kubectl_json("get", "node", name).get("status", {})
        taints = cluster.kubectl_json("get", "node", name).get("spec", {}).get("taints")
        return not taints and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    wait_until(ready, timeout=30, what=f"node {name} Ready")


def warning_reasons(artifacts: Artifacts) -> set[str]:
    return {event["reason"] for event in artifacts.events() if event["type"] == "Warning"}


def test_deleting_while_a_node_has_vanished_mid_download_completes(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    node = f"md-node-{pool}"
    add_node(cluster, node, {"modeldepot-test-pool": pool})
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (40_000_000, 8)})
    hub.set_throttle(2_000_000, repo_id=repo)
    artifacts.apply(
        "stranded",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"nodeLocal": {"nodeSelector": {"modeldepot-test-pool": pool}}},
        },
    )
    artifacts.wait_bytes("stranded", 0, node=node)
    cluster.kubectl("delete", "node", node)
    started = time.monotonic()
    artifacts.delete("stranded", timeout="120s")
    elapsed = time.monotonic() - started
    assert artifacts.get("stranded") is None
    # bounded by the operator's cancel timeout (20 s in tests), not hanging in Terminating
    assert elapsed < 60, f"deletion took {elapsed:.0f}s"
    assert {"NodeGone", "CancelTimedOut"} & warning_reasons(artifacts)
    wait_until(lambda: not artifacts.pods(), timeout=60, what="the stranded pod to be removed")


def test_deleting_after_the_claim_is_gone_completes_with_a_warning(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.bin": (100_000, 2)})
    artifacts.create_claim("ephemeral")
    artifacts.apply(
        "orphan",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"persistentVolumeClaim": {"claimName": "ephemeral"}},
        },
    )
    artifacts.wait_phase("orphan", "Ready")
    # the claim stays Terminating while pvc-protection still counts the finished fetch pod;
    # either way the artifact must not wait for it
    cluster.kubectl("delete", "pvc", "ephemeral", "-n", artifacts.namespace, "--wait=false")
    started = time.monotonic()
    artifacts.delete("orphan", timeout="60s")
    assert time.monotonic() - started < 20
    assert "StorageGone" in warning_reasons(artifacts)


def test_missing_claim_is_reported_until_it_exists(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.bin": (100_000, 3)})
    artifacts.apply(
        "waiting",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"persistentVolumeClaim": {"claimName": "later"}},
        },
    )
    artifacts.wait_phase("waiting", "Failed", timeout=60)
    assert artifacts.condition("waiting", "Ready")["reason"] == "StorageNotFound"
    assert not artifacts.jobs()
    artifacts.create_claim("later")
    # the periodic resync (10 s in tests) notices the claim
    artifacts.wait_phase("waiting", "Ready", timeout=90)


def node_managers(cluster: ClusterHandle, artifacts: Artifacts, name: str) -> list[dict[str, Any]]:
    """The artifact's managedFields entries (who wrote which fields, and how)."""
    body = cluster.kubectl_json("get", "ma", name, "-n", artifacts.namespace, "--show-managed-fields")
    managers: list[dict[str, Any]] = body["metadata"].get("managedFields") or []
    return managers


def test_concurrent_node_writers_never_clobber_each_other(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """Two fetch pods write their nodes' entries every ~2 s while the operator merge-patches the
    rest of the status: no entry disappears before its node is recorded Ready, and each is owned
    by its own node's manager."""
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    nodes = [f"md-node-{pool}-1", f"md-node-{pool}-2"]
    repo = unique_repo()
    for node in nodes:
        add_node(cluster, node, {"modeldepot-test-pool": pool})
    try:
        hub.add_repo_from_files(repo, {"model.safetensors": (16_000_000, 9)})
        hub.set_throttle(4_000_000, repo_id=repo)  # shared: ~2 MB/s per node, ~8 s of progress each
        artifacts.apply(
            "pair",
            {
                "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
                "storage": {"nodeLocal": {"nodeSelector": {"modeldepot-test-pool": pool}}},
            },
        )
        present: set[str] = set()
        vanished: list[str] = []
        progress: dict[str, set[int]] = {node: set() for node in nodes}
        both: list[list[dict[str, Any]]] = []  # managedFields while both entries were listed

        def sample() -> bool:
            status = artifacts.status("pair")
            entries = node_entries(status)
            gone = present - set(entries)
            if gone:  # an entry may go only once its node is recorded as holding the files
                vanished.extend(sorted(gone - set(artifacts.node_records("pair"))))
            present.intersection_update(entries)
            present.update(entries)
            for node, entry in entries.items():
                if entry.get("phase") == "Downloading":
                    progress[node].add(int(entry.get("bytesDone") or 0))
            if not both and set(entries) == set(nodes):
                both.append(node_managers(cluster, artifacts, "pair"))
            return status.get("phase") == "Ready"

        wait_until(sample, timeout=120, interval=0.1, what="both nodes Ready")
        assert not vanished, f"entries disappeared before their nodes were recorded: {vanished}"
        assert all(len(seen) >= 2 for seen in progress.values()), progress  # both wrote while both ran
        assert node_entries(artifacts.status("pair")) == {}
        records = artifacts.node_records("pair")
        assert set(records) == set(nodes)
        assert records[nodes[0]]["digest"] == records[nodes[1]]["digest"]

        assert both, "the two entries were never listed at once"
        for node in nodes:
            (mine,) = [m for m in both[0] if m["manager"] == f"modeldepot-node/{node}"]
            assert (mine["operation"], mine["subresource"]) == ("Apply", "status")
            assert list(mine["fieldsV1"]["f:status"]["f:nodes"]) == [f'k:{{"name":"{node}"}}']
        # no merge patch ever wrote status.nodes (it would replace the list, and own it)
        managed = node_managers(cluster, artifacts, "pair")
        assert not [m for m in managed if m["operation"] == "Update" and '"f:nodes"' in json.dumps(m)]
    finally:
        hub.set_throttle(None, repo_id=repo)
        for node in nodes:
            cluster.kubectl("delete", "node", node, "--ignore-not-found")


def test_node_that_stops_matching_loses_its_copy(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    first, second = f"md-node-{pool}-1", f"md-node-{pool}-2"
    for node in (first, second):
        add_node(cluster, node, {"modeldepot-test-pool": pool})
    try:
        repo = unique_repo()
        hub.add_repo_from_files(repo, {"model.bin": (300_000, 5)})
        artifacts.apply(
            "shrinking",
            {
                "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
                "storage": {"nodeLocal": {"nodeSelector": {"modeldepot-test-pool": pool}}},
            },
        )
        status = artifacts.wait_phase("shrinking", "Ready")
        records = artifacts.node_records("shrinking")
        assert set(records) == {first, second} and node_entries(status) == {}
        published = cluster.node_dir(second) / "var/lib/modeldepot" / artifacts.namespace / "shrinking"
        assert (published / "model.bin").exists()

        cluster.kubectl("label", "node", second, "modeldepot-test-pool-")
        wait_until(
            lambda: set(artifacts.node_records("shrinking")) == {first},
            timeout=90,
            what=f"{second} to be retired from the node records",
        )
        # only the retired node's record went; the other one is exactly as it was
        assert artifacts.node_records("shrinking") == {first: records[first]}
        assert not published.exists()
        assert not list((cluster.node_dir(second) / "var/lib/modeldepot/.modeldepot").rglob("model.bin"))
        status = artifacts.status("shrinking")
        assert status["phase"] == "Ready" and status["readyNodes"] == status["targetNodes"] == 1
        assert (
            cluster.node_dir(first) / "var/lib/modeldepot" / artifacts.namespace / "shrinking" / "model.bin"
        ).exists()

        # matching again brings the copy back (and the finished cleanup Job does not stand in the way)
        cluster.kubectl("label", "node", second, f"modeldepot-test-pool={pool}")
        wait_until(
            lambda: artifacts.status("shrinking").get("readyNodes") == 2,
            timeout=90,
            what=f"{second} to be stocked again",
        )
        assert (published / "model.bin").exists()
        assert not artifacts.jobs(app="modeldepot-cleanup")
    finally:
        for node in (first, second):
            cluster.kubectl("delete", "node", node, "--ignore-not-found")
