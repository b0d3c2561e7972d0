"""Deletion always completes: a vanished node or claim ends in a Warning Event, not a stuck finalizer."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from support import Artifacts, ClusterHandle, unique_repo, wait_until

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
        assert set(status["nodes"]) == {first, second}
        published = cluster.node_dir(second) / "var/lib/modeldepot" / artifacts.namespace / "shrinking"
        assert (published / "model.bin").exists()

        cluster.kubectl("label", "node", second, "modeldepot-test-pool-")
        wait_until(
            lambda: set(artifacts.status("shrinking").get("nodes", {})) == {first},
            timeout=90,
            what=f"{second} to be retired from status.nodes",
        )
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
