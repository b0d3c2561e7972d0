"""Admin policy and path ownership decisions: each abuse of issue 7 is refused, legitimate specs pass."""

from __future__ import annotations

from typing import Any

import pytest

from modeldepot.models import ModelArtifact
from modeldepot.policy import (
    PathClaim,
    Policy,
    conflict_message,
    conflicting_claim,
    endpoint_allowed,
    image_allowed,
    path_claim,
    violations,
)
from modeldepot.settings import OperatorSettings

POLICY = Policy()


def artifact(
    name: str = "llm",
    namespace: str = "team-a",
    *,
    storage: dict[str, Any] | None = None,
    created: str = "2026-11-22T06:00:00Z",
    uid: str | None = None,
    **hf: Any,
) -> ModelArtifact:
    return ModelArtifact.from_body(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid or f"uid-{namespace}-{name}",
                "creationTimestamp": created,
            },
            "spec": {
                "source": {"huggingFace": {"repo": "org/model", **hf}},
                "storage": storage or {"persistentVolumeClaim": {"claimName": "models"}},
            },
        }
    )


def node_local(**local: Any) -> dict[str, Any]:
    return {"nodeLocal": local}


def test_defaults_match_the_settings() -> None:
    assert Policy.from_settings(OperatorSettings()) == POLICY


def test_a_plain_claim_artifact_passes() -> None:
    assert violations(artifact(), POLICY) == []
    assert violations(artifact(storage=node_local(nodeSelector={"gpu": "true"})), POLICY) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://attacker.example",
        "https://huggingface.co.evil.example",
        "https://huggingface.co@evil.example",
        "http://huggingface.co",  # the same host in clear text is another endpoint
        "https://huggingface.com",
    ],
)
def test_unlisted_endpoints_are_refused(url: str) -> None:
    found = violations(artifact(endpoint=url), POLICY)
    assert len(found) == 1 and "allowedEndpoints" in found[0]


@pytest.mark.parametrize(
    "url", ["https://huggingface.co", "https://huggingface.co/", "https://huggingface.co/x"]
)
def test_listed_endpoint_and_below(url: str) -> None:
    assert endpoint_allowed(url, POLICY.allowed_endpoints)


def test_star_allows_any_endpoint() -> None:
    assert endpoint_allowed("http://10.0.0.1:8080", ["*"])


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/var/lib/modeldepot", True),
        ("/var/lib/modeldepot/fast", True),
        ("/etc", False),
        ("/var/lib/kubelet", False),
        ("/var/lib/modeldepot-evil", False),
        ("/var/lib", False),
    ],
)
def test_node_local_roots(path: str, ok: bool) -> None:
    found = violations(artifact(storage=node_local(path=path)), POLICY)
    assert (found == []) is ok, found
    if not ok:
        assert "policy.nodeLocal.roots" in found[0]


def test_node_local_can_be_off_or_limited_to_namespaces() -> None:
    spec = node_local()
    assert "disabled" in violations(artifact(storage=spec), Policy(node_local_enabled=False))[0]
    limited = Policy(node_local_namespaces=("ml-platform",))
    assert "namespace team-a" in violations(artifact(storage=spec), limited)[0]
    assert violations(artifact(namespace="ml-platform", storage=spec), limited) == []


def test_tolerations_need_an_allowed_key() -> None:
    everything = node_local(tolerations=[{"operator": "Exists"}])
    control_plane = node_local(
        tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]
    )
    gpu = node_local(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    assert "without a key" in violations(artifact(storage=everything), POLICY)[0]
    assert "control-plane" in violations(artifact(storage=control_plane), POLICY)[0]
    assert violations(artifact(storage=gpu), POLICY) == []
    assert violations(artifact(storage=everything), Policy(allowed_toleration_keys=("*",))) == []


def test_image_override_is_off_by_default() -> None:
    tenant = ModelArtifact.from_body(
        {**artifact().to_api(), "spec": {**artifact().spec.to_api(), "downloader": {"image": "attacker/x"}}}
    )
    assert "overriding the image is off" in violations(tenant, POLICY)[0]
    assert violations(tenant, Policy(allowed_images=("attacker/x",))) == []
    assert image_allowed("registry.example/modeldepot:1.2", ["registry.example/modeldepot*"])
    assert not image_allowed("registry.example/other:1", ["registry.example/modeldepot*"])


def test_all_node_root_abuses_at_once_are_each_named() -> None:
    spec = ModelArtifact.from_body(
        {
            **artifact().to_api(),
            "spec": {
                "source": {"huggingFace": {"repo": "a/b", "endpoint": "http://attacker"}},
                "storage": node_local(path="/etc", tolerations=[{"operator": "Exists"}]),
                "downloader": {"image": "attacker/x"},
            },
        }
    )
    found = violations(spec, POLICY)
    assert len(found) == 4, found


# ------------------------------------------------------------------------------------ path claims


def claim_on(path: str | None, name: str, created: str, namespace: str = "team-a") -> PathClaim:
    storage: dict[str, Any] = {"persistentVolumeClaim": {"claimName": "models"}}
    if path is not None:
        storage["persistentVolumeClaim"]["path"] = path
    return path_claim(artifact(name, namespace, storage=storage, created=created))


@pytest.mark.parametrize(
    ("first", "second"),
    [("shared", "shared"), ("n", "n/0123abcd"), ("n/0123abcd", "n"), ("a/b", "a/b/c/d")],
)
def test_equal_or_nested_paths_on_one_claim_conflict(first: str, second: str) -> None:
    older = claim_on(first, "first", "2026-11-22T06:00:00Z")
    newer = claim_on(second, "second", "2026-11-22T06:00:05Z")
    assert conflicting_claim(newer, [older, newer]) == older
    # the older one keeps its path whatever order they are seen in
    assert conflicting_claim(older, [newer, older]) is None
    assert "team-a/first" in conflict_message(newer, older)


def test_same_timestamp_is_broken_by_uid() -> None:
    a = claim_on("x", "a", "2026-11-22T06:00:00Z")
    b = claim_on("x", "b", "2026-11-22T06:00:00Z")
    assert (conflicting_claim(a, [b]) is None) != (conflicting_claim(b, [a]) is None)


def test_siblings_and_other_claims_do_not_conflict() -> None:
    a = claim_on("n", "a", "2026-11-22T06:00:00Z")
    assert conflicting_claim(claim_on("n2", "b", "2026-11-22T06:00:01Z"), [a]) is None
    assert conflicting_claim(claim_on("m/n", "c", "2026-11-22T06:00:01Z"), [a]) is None
    other_ns = claim_on("n", "a", "2026-11-22T06:00:01Z", namespace="team-b")
    assert other_ns.storage != a.storage and conflicting_claim(other_ns, [a]) is None


def test_default_path_is_the_name() -> None:
    assert claim_on(None, "x", "t").paths == ("/x",)
    assert conflicting_claim(claim_on("x", "y", "t2"), [claim_on(None, "x", "t1")]) is not None


def test_node_local_roots_share_metadata_but_never_nest_into_an_artifact() -> None:
    root = "/var/lib/modeldepot"
    a = path_claim(artifact("llm", "team-a", storage=node_local(path=root), created="t1"))
    b = path_claim(artifact("llm", "team-b", storage=node_local(path=root), created="t2"))
    assert conflicting_claim(b, [a]) is None  # one root, different namespaces
    # a root beneath another artifact's directory would write into it
    inside = path_claim(artifact("x", "team-c", storage=node_local(path=f"{root}/team-a/llm"), created="t3"))
    assert conflicting_claim(inside, [a, b]) == a
    # a root beneath the shared metadata directory would write into every artifact's store
    meta = path_claim(artifact("x", "team-d", storage=node_local(path=f"{root}/.modeldepot"), created="t3"))
    assert conflicting_claim(meta, [a]) == a
    # a root beside them is fine
    other = path_claim(artifact("x", "team-e", storage=node_local(path=f"{root}/fast"), created="t3"))
    assert conflicting_claim(other, [a, b]) is None


def test_the_same_artifact_never_conflicts_with_itself() -> None:
    a = claim_on("x", "a", "t1")
    assert conflicting_claim(a, [a]) is None
