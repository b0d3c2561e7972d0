"""The CRD is structural, documented, carries its CEL rules, and matches models.py field for field."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Union

import pytest
import yaml
from pydantic import BaseModel

from modeldepot import models
from modeldepot.vocabulary import Phase

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "modelartifacts.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    data = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1
    v = versions[0]
    assert isinstance(v, dict)
    return v


@pytest.fixture(scope="module")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    s = version["schema"]["openAPIV3Schema"]
    assert isinstance(s, dict)
    return s


def _walk(node: dict[str, Any], path: str = "") -> typing.Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_names(crd: dict[str, Any], version: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{models.PLURAL}.{models.GROUP}"
    assert spec["group"] == models.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == models.KIND
    assert spec["names"]["plural"] == models.PLURAL
    assert spec["names"]["singular"] == models.SINGULAR
    assert spec["names"]["shortNames"] == [models.SHORT_NAME]
    assert spec["names"]["categories"] == ["modeldepot"]
    assert version["name"] == models.VERSION
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_structural(schema: dict[str, Any]) -> None:
    """Every node has a type (or is int-or-string), and preserve-unknown-fields is used nowhere."""
    for path, node in _walk(schema):
        if path == ".metadata":
            continue
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), path
        for keyword in ("anyOf", "oneOf", "allOf", "not"):
            assert keyword not in node, f"{path} uses {keyword}"


def test_every_field_documented(schema: dict[str, Any]) -> None:
    missing = [p for p, n in _walk(schema) if p not in ("", ".metadata") and not n.get("description")]
    assert missing == []


def test_defaults_and_bounds(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    hf = spec["source"]["properties"]["huggingFace"]["properties"]
    assert hf["type"]["enum"] == ["model", "dataset"] and hf["type"]["default"] == "model"
    assert hf["revision"]["default"] == "main"
    assert (hf["revision"]["minLength"], hf["revision"]["maxLength"]) == (1, 255)
    assert hf["include"]["maxItems"] == 100 and hf["include"]["items"]["minLength"] == 1
    assert hf["tokenSecretRef"]["required"] == ["name"]
    assert hf["tokenSecretRef"]["properties"]["key"]["default"] == "token"
    dl = spec["downloader"]
    assert dl["default"] == {}
    assert (dl["properties"]["concurrency"]["minimum"], dl["properties"]["concurrency"]["maximum"]) == (1, 64)
    assert dl["properties"]["concurrency"]["default"] == 8
    assert dl["properties"]["backoffLimit"]["default"] == 4
    # what the schema admits, the fetcher accepts (its flags are validated by FetchSettings)
    from modeldepot.settings import FetchSettings

    streams, chunk = dl["properties"]["streams"], dl["properties"]["chunkSize"]
    bounds = FetchSettings.bounds
    assert (streams["minimum"], streams["maximum"]) == (bounds("streams")["ge"], bounds("streams")["le"])
    assert (chunk["minimum"], chunk["maximum"]) == (bounds("chunk_size")["ge"], bounds("chunk_size")["le"])
    assert dl["properties"]["streamsMinSize"]["minimum"] == bounds("streams_min_size")["ge"]
    for edge in (streams["minimum"], streams["maximum"]):
        assert FetchSettings(streams=edge).streams == edge
    for outside in (streams["minimum"] - 1, streams["maximum"] + 1):
        with pytest.raises(ValueError, match="streams"):
            FetchSettings(streams=outside)
    assert dl["properties"]["activeDeadlineSeconds"]["minimum"] == 60
    assert spec["deletionPolicy"]["enum"] == ["Delete", "Retain"]
    assert spec["deletionPolicy"]["default"] == "Delete"
    assert spec["suspend"]["default"] is False
    local = spec["storage"]["properties"]["nodeLocal"]["properties"]
    assert local["path"]["default"] == models.DEFAULT_NODE_ROOT
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(Phase)
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["progress"]["properties"]["percent"]["maximum"] == 100


def test_status_nodes_is_a_list_map_keyed_by_name(schema: dict[str, Any]) -> None:
    """Kubernetes API conventions: named entries, so that server-side apply merges each node's entry."""
    status = schema["properties"]["status"]["properties"]
    nodes = status["nodes"]
    assert nodes["type"] == "array"
    assert nodes["x-kubernetes-list-type"] == "map"
    assert nodes["x-kubernetes-list-map-keys"] == ["name"]
    assert nodes["items"]["required"] == ["name"]  # a list-map key must be required
    target_phases = [p for p in Phase if p is not Phase.DELETING]
    assert nodes["items"]["properties"]["phase"]["enum"] == target_phases
    assert status["progress"]["properties"]["phase"]["enum"] == target_phases


def _rules(schema: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p: [r["rule"] for r in n["x-kubernetes-validations"]]
        for p, n in _walk(schema)
        if "x-kubernetes-validations" in n
    }


def test_cel_rules_present(schema: dict[str, Any]) -> None:
    rules = _rules(schema)
    source = " ".join(rules[".spec.source"])
    assert "has(self.huggingFace)" in source and "== 1" in source
    storage = rules[".spec.storage"]
    assert any(
        "has(self.persistentVolumeClaim)" in r and "has(self.nodeLocal)" in r and "== 1" in r for r in storage
    )
    assert any("oldSelf" in r for r in storage), "storage kind must be immutable"
    assert any("'..'" in r or "[.]{1,2}" in r for r in rules[".spec.storage.persistentVolumeClaim.path"])
    assert any("--" in r for r in rules[".spec.source.huggingFace.repo"])
    assert ".spec.storage.persistentVolumeClaim.create.size" in rules
    for path, rs in rules.items():
        for r in rs:
            # an unbalanced rule is the most common typo; the API server rejects the whole CRD for it
            assert r.count("(") == r.count(")"), (path, r)
            assert r.count("'") % 2 == 0, (path, r)


def test_printer_columns(version: dict[str, Any]) -> None:
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase", "Progress", "Size", "Revision", "Age", "Repo", "Digest", "Path", "Model",
    ]  # fmt: skip
    assert cols["Phase"]["jsonPath"] == ".status.phase"
    assert cols["Progress"]["jsonPath"] == ".status.progress.summary"
    assert cols["Size"]["jsonPath"] == ".status.size"
    assert cols["Revision"]["jsonPath"] == ".status.revision"
    assert cols["Age"]["type"] == "date"
    for name, path in (
        ("Repo", ".spec.source.huggingFace.repo"),
        ("Digest", ".status.digest"),
        ("Path", ".status.path"),
        ("Model", ".status.model.summary"),
    ):
        assert cols[name]["jsonPath"] == path and cols[name]["priority"] == 1
    for name in ("Phase", "Progress", "Size", "Revision", "Age"):
        assert cols[name].get("priority", 0) == 0


# ------------------------------------------------------------------------------ CRD <-> models.py


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside Optional[...], list[...], dict[str, ...], or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _compare(model: type[BaseModel], node: dict[str, Any], path: str, problems: list[str]) -> None:
    props = node.get("properties") or {}
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    only_model = set(fields) - set(props)
    only_crd = set(props) - set(fields)
    if only_model:
        problems.append(f"{path}: in {model.__name__} but not in the CRD: {sorted(only_model)}")
    if only_crd:
        problems.append(f"{path}: in the CRD but not in {model.__name__}: {sorted(only_crd)}")
    for alias, info in fields.items():
        if alias not in props:
            continue
        child = props[alias]
        sub = _model_of(info.annotation)
        if "default" in child and sub is None:
            if info.is_required() or info.get_default(call_default_factory=True) != child["default"]:
                problems.append(f"{path}.{alias}: default differs from the CRD's {child['default']!r}")
        elif sub is None and not info.is_required():
            default = info.get_default(call_default_factory=True)
            if default not in (None, {}, []):
                problems.append(f"{path}.{alias}: model default {default!r} but the CRD has none")
        if path.startswith(".spec") and info.is_required() != (alias in (node.get("required") or [])):
            problems.append(f"{path}.{alias}: required differs")
        if sub is not None:
            target = child
            if target.get("type") == "array":
                target = target["items"]
            elif "additionalProperties" in target:
                target = target["additionalProperties"]
            _compare(sub, target, f"{path}.{alias}", problems)


def test_models_match_crd(schema: dict[str, Any]) -> None:
    problems: list[str] = []
    props = schema["properties"]
    _compare(models.ModelArtifactSpec, props["spec"], ".spec", problems)
    _compare(models.ModelArtifactStatus, props["status"], ".status", problems)
    assert problems == []


def test_crd_defaults_roundtrip(schema: dict[str, Any]) -> None:
    """An object with every CRD default applied parses to the same values as one without them."""
    bare = {
        "metadata": {"name": "m"},
        "spec": {
            "source": {"huggingFace": {"repo": "a/b", "tokenSecretRef": {"name": "s"}}},
            "storage": {"nodeLocal": {}},
        },
    }
    defaulted = {
        "metadata": {"name": "m"},
        "spec": {
            "source": {
                "huggingFace": {
                    "repo": "a/b",
                    "type": "model",
                    "revision": "main",
                    "tokenSecretRef": {"name": "s", "key": "token"},
                }
            },
            "storage": {"nodeLocal": {"path": "/var/lib/modeldepot"}},
            "deletionPolicy": "Delete",
            "suspend": False,
            "downloader": {"concurrency": 8, "backoffLimit": 4, "activeDeadlineSeconds": 21600},
        },
    }
    a = models.ModelArtifact.from_body(bare)
    b = models.ModelArtifact.from_body(defaulted)
    assert a == b
