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
DEFAULTS = builders.JobDefaults(image=IMAGE, operator_namespace="md-system")


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
    job = builders.fetch_job(a, node=None, defaults=DEFAULTS)
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
    assert pod["serviceAccountName"] == builders.fetcher_identity_name(a)
    assert pod["serviceAccountName"].startswith("mdf-minilm-")
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["enableServiceLinks"] is False
    assert "affinity" not in pod and "initContainers" not in pod and "nodeName" not in pod
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    c = container(job)
    assert c["image"] == IMAGE and c["command"] == ["modeldepot"]
    assert c["args"] == [
        "fetch", "sentence-transformers/all-MiniLM-L6-v2", "--to", "/data/minilm", "--revision", "v1.0",
        "--repo-type", "model", "--include", "*.json", "--include", "onnx/*", "--exclude", "*.bin",
        "--endpoint", "https://mirror.example.com", "--concurrency", "8", "--report", "ml/minilm",
        "--generation", "7", "--owner", "ml/minilm/uid-123",
    ]  # fmt: skip
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
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
    # the token is a mounted file of the tenant's own Secret, never an env var
    assert "HF_TOKEN" not in env
    assert env["HF_TOKEN_PATH"]["value"] == "/var/run/secrets/modeldepot/hf-token/token"
    token_volume = next(v for v in pod["volumes"] if v["name"] == "hf-token")
    assert token_volume["secret"] == {
        "secretName": "hf-token",
        "items": [{"key": "tok", "path": "token"}],
        "defaultMode": 0o440,
        "optional": False,
    }
    assert {"name": "hf-token", "mountPath": "/var/run/secrets/modeldepot/hf-token", "readOnly": True} in c[
        "volumeMounts"
    ]


def test_token_is_never_a_literal() -> None:
    a = artifact()
    extra = {"HF_TOKEN": SECRET_TOKEN, "HF_TOKEN_PATH": "/etc/shadow", "MODELDEPOT_X": "1"}
    job = builders.fetch_job(a, node=None, defaults=builders.JobDefaults(image=IMAGE, extra_env=extra))
    text = json.dumps(job)
    assert SECRET_TOKEN not in text and "/etc/shadow" not in text
    env = container(job)["env"]
    assert not [e for e in env if e["name"] == "HF_TOKEN"]
    assert [e["value"] for e in env if e["name"] == "HF_TOKEN_PATH"] == [
        "/var/run/secrets/modeldepot/hf-token/token"
    ]
    assert {"name": "MODELDEPOT_X", "value": "1"} in env


def test_no_token_no_endpoint() -> None:
    a = artifact(source={"huggingFace": {"repo": "a/b"}})
    job = builders.fetch_job(a, node=None, defaults=DEFAULTS)
    names = {e["name"] for e in container(job)["env"]}
    assert not names & {"HF_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT"}
    assert not [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "hf-token"]
    assert "--endpoint" not in container(job)["args"] and "--include" not in container(job)["args"]


def test_fetch_job_node_local() -> None:
    a = artifact(node_local=True)
    job = builders.fetch_job(a, node="worker-2", defaults=DEFAULTS)
    # hostPath work runs in the operator's namespace, never the tenant's (no cross-namespace owner)
    assert job["metadata"]["namespace"] == "md-system"
    assert "ownerReferences" not in job["metadata"]
    assert job["metadata"]["labels"]["modeldepot.dev/artifact-namespace"] == "ml"
    assert job["metadata"]["annotations"]["modeldepot.dev/artifact-namespace"] == "ml"
    assert job["metadata"]["name"] != builders.fetch_job_name("minilm", 7, "worker-2")  # namespace hashed in
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
    assert init["command"] == ["modeldepot"]
    assert init["args"] == ["prepare", "--to", "/data/ml/minilm", "--uid", "65532", "--gid", "65532"]
    # the token of a node-local Job is the operator's copy in its own namespace
    token_volume = next(v for v in pod["volumes"] if v["name"] == "hf-token")
    assert token_volume["secret"]["secretName"] == builders.fetcher_identity_name(a)
    assert token_volume["secret"]["items"] == [{"key": "token", "path": "token"}]


def test_tenant_image_never_prepares_or_cleans() -> None:
    a = artifact(node_local=True, downloader={"image": "tenant/x:1"})
    job = builders.fetch_job(a, node="worker-2", defaults=DEFAULTS)
    assert container(job)["image"] == "tenant/x:1"  # only when policy.allowedImages lists it
    assert container(job, "prepare")["image"] == IMAGE
    cleanup = builders.cleanup_job(a, node="worker-2", defaults=DEFAULTS)
    assert container(cleanup, "cleanup")["image"] == IMAGE


def test_node_and_claim_mismatch_rejected() -> None:
    with pytest.raises(ValueError):
        builders.fetch_job(artifact(node_local=True), node=None, defaults=DEFAULTS)
    with pytest.raises(ValueError):
        builders.fetch_job(artifact(), node="n1", defaults=DEFAULTS)


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
    job = builders.fetch_job(a, node=None, defaults=DEFAULTS)
    c = container(job)
    assert c["image"] == "custom:1" and c["imagePullPolicy"] == "Always"
    assert c["resources"] == {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi", "cpu": "2"}}
    assert c["args"][c["args"].index("--concurrency") + 1] == "3"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 600)


def test_stream_settings_reach_the_fetcher_only_when_set() -> None:
    """spec.downloader's stream knobs become `modeldepot fetch` flags, which the fetcher's own
    settings validate; unset leaves the fetcher's measured defaults alone."""
    from modeldepot.cli import _build_parser
    from modeldepot.settings import FetchSettings

    plain = container(builders.fetch_job(artifact(), node=None, defaults=DEFAULTS))["args"]
    assert not {"--streams", "--streams-min-size", "--chunk-size"} & set(plain)
    tuned = artifact(downloader={"streams": 1, "streamsMinSize": 0, "chunkSize": 4 << 20})
    args = container(builders.fetch_job(tuned, node=None, defaults=DEFAULTS))["args"]
    parsed = _build_parser().parse_args(args)
    assert (parsed.streams, parsed.streams_min_size, parsed.chunk_size) == (1, 0, 4 << 20)
    settings = FetchSettings(streams=parsed.streams, streams_min_size=0, chunk_size=parsed.chunk_size)
    assert (settings.streams, settings.chunk_size) == (1, 4 << 20)


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
    job = builders.fetch_job(a, node=node, defaults=DEFAULTS)
    for value in job["metadata"]["labels"].values():
        assert len(value) <= 63 and LABEL_VALUE.match(value)
    assert job["metadata"]["annotations"] == {
        "modeldepot.dev/artifact": long,
        "modeldepot.dev/artifact-namespace": "ml",
        "modeldepot.dev/node": node,
    }
    assert builders.label_value("short") == "short"
    assert builders.label_value(long) != builders.label_value(long + "n")


def test_cleanup_job() -> None:
    a = artifact(node_local=True)
    job = builders.cleanup_job(a, node="worker-2", defaults=DEFAULTS)
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "modeldepot-cleanup"
    assert job["metadata"]["name"] == builders.cleanup_job_name("minilm", "worker-2", "ml")
    assert job["metadata"]["namespace"] == "md-system" and "ownerReferences" not in job["metadata"]
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchFields"][0]["values"] == ["worker-2"]
    c = container(job, "cleanup")
    assert c["args"] == ["cleanup", "--to", "/data/ml/minilm", "--owner", "ml/minilm/uid-123"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "env" not in c
    pvc_job = builders.cleanup_job(artifact(), node=None, defaults=DEFAULTS)
    assert container(pvc_job, "cleanup")["args"] == [
        "cleanup", "--to", "/data/minilm", "--owner", "ml/minilm/uid-123"
    ]  # fmt: skip
    assert pvc_job["metadata"]["namespace"] == "ml"
    assert pvc_job["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is False
    assert "affinity" not in pvc_job["spec"]["template"]["spec"]


@pytest.mark.parametrize("node_local", [False, True])
def test_fetcher_identity_patches_only_its_own_artifact(node_local: bool) -> None:
    a = artifact(node_local=node_local)
    sa = builders.fetcher_service_account(a, DEFAULTS)
    role = builders.fetcher_role(a)
    binding = builders.fetcher_role_binding(a, DEFAULTS)
    name = builders.fetcher_identity_name(a)
    jobs_namespace = "md-system" if node_local else "ml"
    assert sa["metadata"]["namespace"] == jobs_namespace
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ml"
    for obj in (sa, role, binding):
        assert obj["metadata"]["name"] == name
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldepot"
    assert role["rules"] == [
        {
            "apiGroups": ["modeldepot.dev"],
            "resources": ["modelartifacts/status"],
            "resourceNames": ["minilm"],
            "verbs": ["get", "patch"],
        }
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": jobs_namespace}]
    # ownerReferences only where they can point at the artifact (same namespace)
    assert ("ownerReferences" in sa["metadata"]) is (not node_local)
    assert "ownerReferences" in role["metadata"] and "ownerReferences" in binding["metadata"]


def test_identity_names_differ_across_namespaces() -> None:
    a = artifact()
    b = ModelArtifact.from_body({**a.to_api(), "metadata": {**a.metadata.to_api(), "namespace": "other"}})
    assert builders.fetcher_identity_name(a) != builders.fetcher_identity_name(b)
    assert builders.fetch_job_name("m", 1, "n", "ns1") != builders.fetch_job_name("m", 1, "n", "ns2")


def test_token_copy_carries_one_key() -> None:
    copy = builders.token_secret_copy(artifact(node_local=True), b"hf_x", DEFAULTS)
    assert copy["metadata"]["namespace"] == "md-system"
    assert copy["data"] == {"token": "aGZfeA=="}


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
