"""The local control plane behaves like a real cluster where Model Depot depends on it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from support import ClusterHandle, fresh_namespace, wait_until

from localdev.cluster import LocalCluster


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    """These tests exercise the pod runner itself (hostPath, plain pods): no Pod Security level."""
    with fresh_namespace(cluster, labels={}) as name:
        yield name


def job_manifest(name: str, namespace: str, command: str, **pod_spec: object) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command]}],
                    **pod_spec,
                }
            },
        },
    }


def test_job_runs_its_pod_as_a_local_process_and_completes(cluster: ClusterHandle, namespace: str) -> None:
    manifest = job_manifest(
        "hello",
        namespace,
        'echo "pod=$POD node=$NODE ns=$NS" > /dev/termination-log; test -s /var/run/secrets/kubernetes.io/serviceaccount/token',
    )
    container = manifest["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    container["env"] = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/hello", "--timeout=60s")
    pod = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=hello")["items"][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert (
        terminated["message"].strip()
        == f"pod={pod['metadata']['name']} node={pod['spec']['nodeName']} ns={namespace}"
    )


def test_failed_container_reports_its_exit_code(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(job_manifest("fails", namespace, "exit 3")))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Failed", "job/fails", "--timeout=60s")
    pod = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=fails")["items"][0]
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_deleting_the_owner_garbage_collects_the_job(cluster: ClusterHandle, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    manifest = job_manifest("owned", namespace, "sleep 300")
    manifest["metadata"]["ownerReferences"] = [  # type: ignore[index]
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner.metadata.uid,
            "blockOwnerDeletion": True,
        }
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_until(
        lambda: cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=owned")["items"],
        what="the owned Job's pod",
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_until(
        lambda: cluster.kubectl("get", "job", "owned", "-n", namespace, check=False).returncode != 0,
        timeout=60,
        what="garbage collection of the Job",
    )
    wait_until(
        lambda: not cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=owned")["items"],
        timeout=60,
        what="garbage collection of the pod",
    )


CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.modeldepot.dev"},
    "spec": {
        "group": "harness.modeldepot.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                "x-kubernetes-validations": [
                                    {"rule": "has(self.a) != has(self.b)", "message": "exactly one of a or b"}
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_cel_rule_rejects_invalid_objects_at_apply_time(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CEL_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.harness.modeldepot.dev", "--timeout=30s"
    )

    def widget(spec: dict[str, str]) -> str:
        return json.dumps(
            {
                "apiVersion": "harness.modeldepot.dev/v1",
                "kind": "Widget",
                "metadata": {"name": "w", "namespace": namespace},
                "spec": spec,
            }
        )

    rejected = cluster.kubectl("apply", "-f", "-", input=widget({"a": "1", "b": "2"}), check=False)
    assert rejected.returncode != 0
    assert "exactly one of a or b" in rejected.stderr
    cluster.kubectl("apply", "-f", "-", input=widget({"a": "1"}))


def test_node_selector_schedules_only_to_matching_nodes(cluster: ClusterHandle, namespace: str) -> None:
    for index in range(4):
        manifest = job_manifest(
            f"zone-b-{index}", namespace, "true", nodeSelector={"topology.kubernetes.io/zone": "zone-b"}
        )
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    impossible = job_manifest("nowhere", namespace, "true", nodeSelector={"gpu": "absent"})
    cluster.kubectl("apply", "-f", "-", input=json.dumps(impossible))
    for index in range(4):
        cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Complete", f"job/zone-b-{index}", "--timeout=60s"
        )
    pods = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    placed = {p["metadata"]["labels"]["job-name"]: p["spec"].get("nodeName") for p in pods}
    assert all(placed[f"zone-b-{index}"] == "md-node-b" for index in range(4)), placed
    assert placed["nowhere"] is None


def test_deleted_pod_gets_sigterm_then_is_removed(cluster: ClusterHandle, namespace: str) -> None:
    marker = f"/var/lib/harness/{namespace}"
    command = f"trap 'echo got-term > {marker}/term; exit 0' TERM; echo started > {marker}/started; while true; do sleep 0.1; done"
    manifest = job_manifest(
        "sleeper",
        namespace,
        command,
        nodeSelector={"kubernetes.io/hostname": "md-node-a"},
        volumes=[{"name": "d", "hostPath": {"path": marker, "type": "DirectoryOrCreate"}}],
        terminationGracePeriodSeconds=20,
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "d", "mountPath": marker}
    ]  # type: ignore[index]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    host_dir = cluster.node_dir("md-node-a") / marker.lstrip("/")
    wait_until(lambda: (host_dir / "started").exists(), what="the container to start")
    pod_name = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=sleeper")["items"][0][
        "metadata"
    ]["name"]
    started = time.monotonic()
    cluster.kubectl("delete", "job", "sleeper", "-n", namespace, "--cascade=foreground", "--wait=false")
    wait_until(lambda: (host_dir / "term").exists(), timeout=30, what="SIGTERM to reach the container")
    assert (host_dir / "term").read_text().strip() == "got-term"
    wait_until(
        lambda: cluster.kubectl("get", "pod", pod_name, "-n", namespace, check=False).returncode != 0,
        timeout=30,
        what="the pod object to be removed",
    )
    assert time.monotonic() - started < 20, (
        "a container that exits on SIGTERM must not wait out the grace period"
    )


def test_claim_of_local_class_is_bound_to_a_directory(cluster: ClusterHandle, namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "local",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(claim))
    bound = wait_until(
        lambda: cluster.kubectl_json("get", "pvc", "data", "-n", namespace)["status"].get("phase") == "Bound",
        timeout=30,
        what="the claim to bind",
    )
    assert bound
    manifest = job_manifest(
        "writer",
        namespace,
        "echo payload > /mnt/data/file",
        volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "d", "mountPath": "/mnt/data"}
    ]  # type: ignore[index]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/writer", "--timeout=60s")
    volume = cluster.kubectl_json("get", "pvc", "data", "-n", namespace)["spec"]["volumeName"]
    pv = cluster.kubectl_json("get", "pv", volume)
    from pathlib import Path

    assert (Path(pv["spec"]["hostPath"]["path"]) / "file").read_text() == "payload\n"


def test_volumes_mount_at_their_paths_even_over_tmp(cluster: ClusterHandle, namespace: str) -> None:
    """An emptyDir at /tmp must not hide other volumes, the node's directories or the "image"."""
    manifest = job_manifest(
        "mounts",
        namespace,
        "echo scratch > /tmp/scratch && echo data > /data/file && modeldepot --version > /dev/termination-log",
        volumes=[
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "data",
                "hostPath": {"path": f"/var/lib/mounts/{namespace}", "type": "DirectoryOrCreate"},
            },
        ],
        nodeSelector={"kubernetes.io/hostname": "md-node-b"},
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [  # type: ignore[index]
        {"name": "data", "mountPath": "/data"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/mounts", "--timeout=60s")
    pod = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=mounts")["items"][0]
    assert "modeldepot" in pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    host_file = cluster.node_dir("md-node-b") / "var/lib/mounts" / namespace / "file"
    assert host_file.read_text() == "data\n"


def test_pod_status_survives_an_apiserver_outage(tmp_path: Path) -> None:
    """A pod that finishes while the kube-apiserver is down still reports Succeeded (issue 11).

    The pod runner retries the status patch as a kubelet does. The outage is made on a private
    control plane started for this test (its own directory and ports), so no other test or
    engineer sharing the session cluster sees its apiserver go away.
    """
    private = LocalCluster(tmp_path / "cluster")
    private.up()
    try:
        api = config.new_client_from_config(str(private.kubeconfig))
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        core.create_namespace({"metadata": {"name": "outage"}})
        wait_until(
            lambda: core.list_namespaced_service_account("outage").items,
            what="the default ServiceAccount",
        )
        batch.create_namespaced_job("outage", job_manifest("finishes", "outage", "sleep 6"))

        def running() -> str | None:
            pods = core.list_namespaced_pod("outage", label_selector="job-name=finishes").items
            return pods[0].metadata.name if pods and pods[0].status.phase == "Running" else None

        pod_name = wait_until(running, timeout=60, what="the Job's pod Running")
        private.stop_apiserver()
        outage_started = time.monotonic()
        time.sleep(12)  # the container exits ~6 s in, while the apiserver is away
        private.start_apiserver()
        outage = time.monotonic() - outage_started

        def complete() -> bool:
            job = batch.read_namespaced_job("finishes", "outage")
            return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

        wait_until(complete, timeout=90, what="the Job Complete after the outage")
        pod = core.read_namespaced_pod(pod_name, "outage")
        assert pod.status.phase == "Succeeded"
        assert pod.status.container_statuses[0].state.terminated.exit_code == 0
        runner_log = (private.logs / "podrunner.log").read_text()
        assert f"status Succeeded of pod outage/{pod_name}: transient failure" in runner_log, runner_log[
            -3000:
        ]
        assert outage >= 10
    finally:
        private.down(purge=True)
