"""examples/*.yaml are valid ModelArtifacts, and the consumer Deployments point at their files."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldepot.models import API_VERSION, KIND, ModelArtifact

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NAMESPACE = "ml"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


def artifacts(name: str) -> list[ModelArtifact]:
    found = []
    for doc in load(name):
        if doc.get("apiVersion") == API_VERSION and doc.get("kind") == KIND:
            body = {
                **doc,
                "metadata": {**doc["metadata"], "namespace": NAMESPACE, "uid": "u", "generation": 1},
            }
            found.append(ModelArtifact.from_body(body))
    return found


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


CRD_SCHEMA: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "modelartifacts.yaml").read_text())["spec"][
    "versions"
][0]["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would silently prune (not in the structural schema)."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return found
        for key, sub in value.items():
            if key in schema["properties"]:
                found += unknown_fields(sub, schema["properties"][key], f"{path}.{key}")
            elif "additionalProperties" not in schema:
                found.append(f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, sub in value.items():
            found += unknown_fields(sub, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_parses_and_its_artifacts_have_only_schema_fields(name: str) -> None:
    docs = load(name)
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert "namespace" not in doc["metadata"], "examples are applied with -n"
        if doc["kind"] == KIND:
            assert unknown_fields(doc, CRD_SCHEMA) == []
            assert unknown_fields({**doc, "spec": {**doc["spec"], "bogus": 1}}, CRD_SCHEMA) == [".spec.bogus"]


def test_the_unknown_field_check_sees_nested_typos() -> None:
    doc = load("pvc-model.yaml")[1]
    typo = {**doc, "spec": {**doc["spec"], "source": {"huggingFace": {"repo": "a/b", "revison": "v1"}}}}
    assert unknown_fields(typo, CRD_SCHEMA) == [".spec.source.huggingFace.revison"]


def test_pvc_model_puts_minilm_on_the_claim_of_the_same_file() -> None:
    docs = load("pvc-model.yaml")
    (artifact,) = artifacts("pvc-model.yaml")
    assert artifact.hugging_face.repo == "sentence-transformers/all-MiniLM-L6-v2"
    pvc = artifact.spec.storage.persistent_volume_claim
    assert pvc is not None and pvc.create is None
    one(docs, "PersistentVolumeClaim", pvc.claim_name)
    assert artifact.name == "minilm"  # the name NOTES.txt and the README wait for


def test_node_local_model_targets_gpu_nodes() -> None:
    (artifact,) = artifacts("node-local-model.yaml")
    local = artifact.spec.storage.node_local
    assert local is not None
    assert local.node_selector == {"gpu": "true"}
    assert artifact.published_path == f"{NAMESPACE}/{artifact.name}"


def test_gated_model_takes_its_token_from_the_secret_in_the_same_file() -> None:
    docs = load("gated-model-with-token.yaml")
    (artifact,) = artifacts("gated-model-with-token.yaml")
    ref = artifact.hugging_face.token_secret_ref
    assert ref is not None
    secret = one(docs, "Secret", ref.name)
    assert ref.key in secret["stringData"]
    assert artifact.spec.storage.persistent_volume_claim is not None
    assert artifact.spec.storage.persistent_volume_claim.create is not None


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _model_mount(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    model_id = container["args"][container["args"].index("--model-id") + 1]
    return mount, volume, model_id


def test_consumer_mounts_the_claim_read_only_at_the_artifact_path() -> None:
    (artifact,) = artifacts("pvc-model.yaml")
    pvc = artifact.spec.storage.persistent_volume_claim
    assert pvc is not None
    deployment = one(load("consumer-deployment.yaml"), "Deployment", "minilm-server")
    mount, volume, model_id = _model_mount(_pod(deployment))
    assert volume["persistentVolumeClaim"] == {"claimName": pvc.claim_name, "readOnly": True}
    assert mount["readOnly"] is True
    assert model_id == posixpath.join(mount["mountPath"], artifact.published_path)


def test_node_local_consumer_runs_on_the_artifact_nodes_and_reads_its_host_path() -> None:
    (artifact,) = artifacts("node-local-model.yaml")
    local = artifact.spec.storage.node_local
    assert local is not None
    deployment = one(load("consumer-deployment.yaml"), "Deployment", "minilm-local-server")
    pod = _pod(deployment)
    assert pod["nodeSelector"] == local.node_selector
    assert pod["tolerations"] == [t.to_api() for t in local.tolerations or ()]
    mount, volume, model_id = _model_mount(pod)
    assert volume["hostPath"]["path"] == local.path
    assert mount["readOnly"] is True
    # the namespace comes from the downward API: $(NAMESPACE)/<name> is the published path
    assert model_id == posixpath.join(mount["mountPath"], "$(NAMESPACE)", artifact.name)
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_consumers_run_unprivileged() -> None:
    for deployment in load("consumer-deployment.yaml"):
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
