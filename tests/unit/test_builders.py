"""Manifests built for fetch and cleanup Jobs, the fetcher's RBAC, and created claims."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from modeldepot import builders
from modeldepot.models import ModelArtifact

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SECRET_TOKEN = "hf_SeCrEtToKeNvAlUe"
IMAGE = "ghcr.io/example/modeldepot:0.1.0"


def artifact(name: str = "minilm", *, node_local: bool = False, **spec: Any) -> ModelArtifact:
    storage: dict[str, Any] = (
        {"nodeLocal": {"path": "/mnt/models", "tolerations": [{"key": "gpu", "operator": "Exists"}]}}
        if node_local
        else {"persistentVolumeClaim": {"claimName": "models"}}
    )
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-123", "generation": 7},
        "spec": {
            "source": {
                "huggingFace": {
                    "repo": "sentence-transformers/all-MiniLM-L6-v2",
                    "revision": "v1.0",
                    "include": ["*.json", "onnx/*"],
                    "exclude": ["*.bin"],
                    "tokenSecretRef": {"name": "hf-token", "key": "tok"},
                    "endpoint": "https://mirror.example.com",
                }
            },
            "storage": storage,
        },
    }
    body["spec"].update(spec)
    return ModelArtifact.from_body(body)


def container(job: dict[str, Any], name: str = "fetch") -> dict[str, Any]:
    pod = job["spec"]["template"]["spec"]
    found = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name]
    assert len(found) == 1
    result: dict[str, Any] = found[0]
    return result


def test_fetch_job_pvc() -> None:
    a = artifact()
    job = builders.fetch_job(a, node=None, image=IMAGE)
    meta = job["metadata"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert meta["namespace"] == "ml"
    assert meta["name"] == builders.fetch_job_name("minilm", 7, None)
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "modeldepot",
        "app.kubernetes.io/name": "modeldepot-fetcher",
        "modeldepot.dev/artifact": "minilm",
        "modeldepot.dev/generation": "7",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modeldepot.dev/v1alpha1",
            "kind": "ModelArtifact",
            "name": "minilm",
            "uid": "uid-123",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = job["spec"]
    assert spec["backoffLimit"] == 4 and spec["activeDeadlineSeconds"] == 21600
    assert "ttlSecondsAfterFinished" not in spec
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "fetch", "operator": "In", "values": [2]},
    }
    assert spec["podReplacementPolicy"] == "Failed"
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == meta["labels"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "modeldepot-fetcher"
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "affinity" not in pod and "initContainers" not in pod and "nodeName" not in pod
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    c = container(job)
    assert c["image"] == IMAGE and c["command"] == ["modeldepot"]
    assert c["args"] == [
        "fetch", "sentence-transformers/all-MiniLM-L6-v2", "--to", "/data/minilm", "--revision", "v1.0",
        "--repo-type", "model", "--include", "*.json", "--include", "onnx/*", "--exclude", "*.bin",
        "--endpoint", "https://mirror.example.com", "--concurrency", "8", "--report", "ml/minilm",
        "--generation", "7",
    ]  # fmt: skip
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_HUB_DISABLE_TELEMETRY"]["value"] == "1"
    assert env["HF_ENDPOINT"]["value"] == "https://mirror.example.com"
    assert env["MODELDEPOT_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "tok", "optional": False}},
    }


def test_token_is_never_a_literal() -> None:
    a = artifact()
    job = builders.fetch_job(
        a, node=None, image=IMAGE, extra_env={"HF_TOKEN": SECRET_TOKEN, "MODELDEPOT_X": "1"}
    )
    text = json.dumps(job)
    assert SECRET_TOKEN not in text
    env = container(job)["env"]
    tokens = [e for e in env if e["name"] == "HF_TOKEN"]
    assert len(tokens) == 1 and "value" not in tokens[0]
    assert {"name": "MODELDEPOT_X", "value": "1"} in env


def test_no_token_no_endpoint() -> None:
    a = artifact(source={"huggingFace": {"repo": "a/b"}})
    job = builders.fetch_job(a, node=None, image=IMAGE)
    names = {e["name"] for e in container(job)["env"]}
    assert "HF_TOKEN" not in names and "HF_ENDPOINT" not in names
    assert "--endpoint" not in container(job)["args"] and "--include" not in container(job)["args"]


def test_fetch_job_node_local() -> None:
    a = artifact(node_local=True)
    job = builders.fetch_job(a, node="worker-2", image=IMAGE)
    assert job["metadata"]["labels"]["modeldepot.dev/node"] == "worker-2"
    assert job["metadata"]["annotations"]["modeldepot.dev/node"] == "worker-2"
    pod = job["spec"]["template"]["spec"]
    assert "nodeName" not in pod
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker-2"]}]}]
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert {"name": "data", "hostPath": {"path": "/mnt/models", "type": "DirectoryOrCreate"}} in pod[
        "volumes"
    ]
    args = container(job)["args"]
    assert args[args.index("--to") + 1] == "/data/ml/minilm"
    assert args[-2:] == ["--node", "worker-2"]
    init = container(job, "prepare")
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    script = init["command"][-1]
    for d in ("/data/ml", "/data/.modeldepot/store/ml", "/data/.modeldepot/staging/ml"):
        assert f" {d}" in script
    assert "chown 65532:65532" in script and "-R" not in script


def test_node_and_claim_mismatch_rejected() -> None:
    with pytest.raises(ValueError):
        builders.fetch_job(artifact(node_local=True), node=None, image=IMAGE)
    with pytest.raises(ValueError):
        builders.fetch_job(artifact(), node="n1", image=IMAGE)


def test_downloader_overrides() -> None:
    a = artifact(
        downloader={
            "image": "custom:1",
            "imagePullPolicy": "Always",
            "concurrency": 3,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi", "cpu": 2}},
        }
    )
    job = builders.fetch_job(a, node=None, image=IMAGE)
    c = container(job)
    assert c["image"] == "custom:1" and c["imagePullPolicy"] == "Always"
    assert c["resources"] == {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi", "cpu": "2"}}
    assert c["args"][c["args"].index("--concurrency") + 1] == "3"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 600)


@pytest.mark.parametrize(
    "name",
    ["a", "minilm", "x" * 253, "my.model.v2", "a" * 60 + ".b", "-".join(["seg"] * 60)[:253]],
)
@pytest.mark.parametrize("node", [None, "n", "ip-10-0-0-1.ec2.internal", "n" * 253])
def test_names_are_valid(name: str, node: str | None) -> None:
    for gen in (1, 10**12):
        fname = builders.fetch_job_name(name, gen, node)
        cname = builders.cleanup_job_name(name, node)
        for n in (fname, cname):
            assert len(n) <= 63 and DNS_LABEL.match(n), n
    assert builders.fetch_job_name(name, 1, node) != builders.fetch_job_name(name, 2, node)
    assert builders.fetch_job_name(name, 1, node) != builders.fetch_job_name(name, 1, (node or "") + "x")
    if node is not None:
        v = builders.label_value(node)
        assert len(v) <= 63 and LABEL_VALUE.match(v)


def test_long_names_keep_valid_labels() -> None:
    long = "m" * 100
    a = artifact(long, node_local=True)
    node = "node-" + "z" * 100
    job = builders.fetch_job(a, node=node, image=IMAGE)
    for value in job["metadata"]["labels"].values():
        assert len(value) <= 63 and LABEL_VALUE.match(value)
    assert job["metadata"]["annotations"] == {"modeldepot.dev/artifact": long, "modeldepot.dev/node": node}
    assert builders.label_value("short") == "short"
    assert builders.label_value(long) != builders.label_value(long + "n")


def test_cleanup_job() -> None:
    a = artifact(node_local=True)
    job = builders.cleanup_job(a, node="worker-2", image=IMAGE)
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "modeldepot-cleanup"
    assert job["metadata"]["name"] == builders.cleanup_job_name("minilm", "worker-2")
    assert job["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is False
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchFields"][0]["values"] == ["worker-2"]
    c = container(job, "cleanup")
    assert c["args"] == ["cleanup", "--to", "/data/ml/minilm"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "env" not in c
    pvc_job = builders.cleanup_job(artifact(), node=None, image=IMAGE)
    assert container(pvc_job, "cleanup")["args"] == ["cleanup", "--to", "/data/minilm"]
    assert "affinity" not in pvc_job["spec"]["template"]["spec"]


def test_fetcher_rbac() -> None:
    sa = builders.fetcher_service_account("ml")
    role = builders.fetcher_role("ml")
    binding = builders.fetcher_role_binding("ml")
    for obj in (sa, role, binding):
        assert obj["metadata"]["name"] == "modeldepot-fetcher" and obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldepot"
    assert role["rules"] == [
        {"apiGroups": ["modeldepot.dev"], "resources": ["modelartifacts/status"], "verbs": ["get", "patch"]},
        {"apiGroups": ["modeldepot.dev"], "resources": ["modelartifacts"], "verbs": ["get"]},
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "modeldepot-fetcher",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "modeldepot-fetcher", "namespace": "ml"}
    ]


def test_claim() -> None:
    a = artifact(storage={"persistentVolumeClaim": {"claimName": "models", "create": {"size": "20Gi"}}})
    pvc = builders.claim(a)
    assert pvc["metadata"]["name"] == "models" and pvc["metadata"]["namespace"] == "ml"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "20Gi"}},
    }
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    retained = artifact(
        deletionPolicy="Retain",
        storage={
            "persistentVolumeClaim": {
                "claimName": "models",
                "create": {
                    "size": 5_000_000_000,
                    "storageClassName": "fast",
                    "accessModes": ["ReadWriteMany"],
                },
            }
        },
    )
    pvc = builders.claim(retained)
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5000000000"
    with pytest.raises(ValueError):
        builders.claim(artifact())
