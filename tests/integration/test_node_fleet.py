"""Big node-local fleets on the real control plane: the aggregate in `status.fleet`, Ready nodes
recorded in the operator's ConfigMap and dropped from `status.nodes`, Ready across an operator
restart without a second download, and nobody but the operator able to write the records."""

from __future__ import annotations

import json
import uuid
from typing import Any

from kubernetes import client
from support import (
    OPERATOR_NAMESPACE,
    Artifacts,
    ClusterHandle,
    OperatorHandle,
    files_digest,
    node_entries,
    unique_repo,
    wait_until,
)
from test_operator_resilience import add_node

from modeldepot.decisions import LISTED_NODES

FLEET = 5


def fleet_spec(hub: Any, repo: str, pool: str) -> dict[str, Any]:
    return {
        "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
        "storage": {"nodeLocal": {"nodeSelector": {"modeldepot-test-pool": pool}}},
    }


def test_a_fleet_shows_the_aggregate_lists_no_ready_node_and_stays_ready_across_a_restart(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle, operator: OperatorHandle
) -> None:
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    nodes = [f"md-node-{pool}-{i}" for i in range(FLEET)]
    late = f"md-node-{pool}-late"
    for node in nodes:
        add_node(cluster, node, {"modeldepot-test-pool": pool})
    try:
        repo = unique_repo()
        hub.add_repo_from_files(repo, {"model.safetensors": (3_000_000, 4), "config.json": b"{}"})
        hub.set_throttle(6_000_000, repo_id=repo)  # ~1 s a node: the fleet is seen on its way
        artifacts.apply("fleet", fleet_spec(hub, repo, pool))
        seen: list[dict[str, Any]] = []

        def sample() -> bool:
            status = artifacts.status("fleet")
            seen.append(status)
            return status.get("phase") == "Ready"

        wait_until(sample, timeout=180, interval=0.2, what="the fleet Ready")
        hub.set_throttle(None, repo_id=repo)
        fleets = [s["fleet"] for s in seen if s.get("fleet")]
        assert fleets, f"no status.fleet while the fleet progressed: {json.dumps(seen[-3:])[:2000]}"
        assert all(f["matched"] == FLEET for f in fleets)
        assert any(f["ready"] < FLEET for f in fleets)  # seen before the end, not only at it
        assert all(len(node_entries(s)) <= LISTED_NODES for s in seen)

        status = artifacts.status("fleet")
        assert node_entries(status) == {}
        assert status["fleet"] == {
            "matched": FLEET, "ready": FLEET, "downloading": 0, "pending": 0, "queued": 0, "failed": 0,
            "suspended": 0, "listed": 0, "unlisted": 0, "records": status["fleet"]["records"],
        }  # fmt: skip
        assert status["fleet"]["records"].startswith(f"{OPERATOR_NAMESPACE}/mdf-fleet-")
        assert "5/5 nodes" in status["progress"]["summary"]
        records = artifacts.node_records("fleet")
        assert set(records) == set(nodes)
        published = f"var/lib/modeldepot/{artifacts.namespace}/fleet"
        for node in nodes:
            assert records[node]["digest"] == files_digest(cluster.node_dir(node) / published)
            assert records[node]["digest"] == status["digest"]
        jobs_before = {job["metadata"]["name"] for job in artifacts.jobs()}
        assert len(jobs_before) == FLEET
        hub.clear_requests()

        # the operator restarts, and meanwhile every fetch Job is gone (their TTL, or by hand)
        operator.stop()
        for name in jobs_before:
            cluster.kubectl(
                "delete", "job", name, "-n", OPERATOR_NAMESPACE, "--cascade=background", "--wait=true"
            )
        operator.start()
        # a node joins: the pass that gives it a Job must give none to the recorded nodes
        add_node(cluster, late, {"modeldepot-test-pool": pool})
        wait_until(
            lambda: artifacts.jobs() and artifacts.status("fleet").get("phase") == "Ready"
            and artifacts.status("fleet")["fleet"]["ready"] == FLEET + 1,
            timeout=120,
            what="the late node Ready",
        )  # fmt: skip
        job_nodes = [job["metadata"]["annotations"]["modeldepot.dev/node"] for job in artifacts.jobs()]
        assert job_nodes == [late], f"recorded nodes downloaded again: {job_nodes}"
        assert node_entries(artifacts.status("fleet")) == {}
        assert set(artifacts.node_records("fleet")) == {*nodes, late}
        # the Hub saw one more download of the model file, the late node's, and no other
        served = [
            r for r in hub.requests
            if r.get("repo") == repo and r.get("file") == "model.safetensors" and r["method"] == "GET"
        ]  # fmt: skip
        assert sum(int(r.get("bytes") or 0) for r in served) == 3_000_000
    finally:
        hub.set_throttle(None, repo_id=repo)
        for node in (*nodes, late):
            cluster.kubectl("delete", "node", node, "--ignore-not-found")


def test_only_the_operator_may_write_the_node_records(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """Neither the artifact's fetch identity nor a tenant can read or write the records (a planted
    Ready record would skip a node's download); deleting the artifact deletes them."""
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    node = f"md-node-{pool}-1"
    add_node(cluster, node, {"modeldepot-test-pool": pool})
    try:
        repo = unique_repo()
        hub.add_repo_from_files(repo, {"model.bin": (200_000, 3)})
        artifacts.apply("guarded", fleet_spec(hub, repo, pool))
        status = artifacts.wait_phase("guarded", "Ready", timeout=120)
        namespace, _, records = status["fleet"]["records"].partition("/")
        assert namespace == OPERATOR_NAMESPACE and set(artifacts.node_records("guarded")) == {node}
        (job,) = artifacts.jobs()
        sa = job["spec"]["template"]["spec"]["serviceAccountName"]
        fetcher = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{sa}"
        tenant = f"system:serviceaccount:{artifacts.namespace}:default"

        def can(user: str, verb: str) -> bool:
            result = cluster.kubectl(
                "auth", "can-i", verb, f"configmaps/{records}", "-n", OPERATOR_NAMESPACE, f"--as={user}",
                check=False,
            )  # fmt: skip
            return result.stdout.strip() == "yes"

        for user in (fetcher, tenant):
            for verb in ("get", "create", "patch", "update", "delete"):
                assert not can(user, verb), (user, verb)
        artifacts.delete("guarded", timeout="90s")
        core = client.CoreV1Api(cluster.api)
        names = [cm.metadata.name for cm in core.list_namespaced_config_map(OPERATOR_NAMESPACE).items]
        assert records not in names, "the finalizer left the node records behind"
    finally:
        cluster.kubectl("delete", "node", node, "--ignore-not-found")
