"""Tenant isolation on the real control plane (issue 7): each attack a ModelArtifact author could try
is refused with a clear reason, and nothing of another artifact changes.

Tenant namespaces here are Pod Security `restricted` (support.fresh_namespace): the apiserver's own
admission proves that claim downloads need nothing more, and node-local downloads run in the
operator's namespace.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import (
    KUBECTL,
    OPERATOR_NAMESPACE,
    Artifacts,
    ClusterHandle,
    claim_dir,
    files_digest,
    unique_repo,
    wait_until,
)

from localdev.cluster import ensure_binaries
from modeldepot import builders
from modeldepot.models import ModelArtifact, NodeStatus, node_apply, node_field_manager

CHART = Path(__file__).resolve().parents[2] / "charts" / "modeldepot"


def claim_spec(hub: Any, repo: str, path: str | None = None, **source: Any) -> dict[str, Any]:
    claim: dict[str, Any] = {"claimName": "models", "create": {"size": "1Gi"}}
    if path is not None:
        claim["path"] = path
    return {
        "source": {"huggingFace": {"repo": repo, "endpoint": hub.url, **source}},
        "storage": {"persistentVolumeClaim": claim},
    }


def small_repo(hub: Any, seed: int) -> str:
    repo = unique_repo()
    hub.add_repo_from_files(
        repo, {"model.safetensors": (300_000, seed), "config.json": b'{"seed": %d}' % seed}
    )
    return repo


def assert_refused(artifacts: Artifacts, name: str, reason: str, *words: str) -> dict[str, Any]:
    artifacts.wait_phase(name, "Failed", timeout=60)
    ready = artifacts.condition(name, "Ready")
    assert ready["reason"] == reason, ready
    for word in words:
        assert word in ready["message"], (word, ready["message"])
    assert artifacts.condition(name, "Stalled")["status"] == "True"
    return ready


def no_jobs_for(artifacts: Artifacts, name: str) -> bool:
    return not [
        j for j in artifacts.jobs() if j["metadata"]["annotations"].get("modeldepot.dev/artifact") == name
    ]


# ------------------------------------------------------------------------------------ node root


def test_node_root_attack_is_refused_before_any_job(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """nodeLocal /etc, tolerate everything, run my image: no Job is ever created (issue 7, 1)."""
    repo = small_repo(hub, 1)
    artifacts.apply(
        "root",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"nodeLocal": {"path": "/etc", "tolerations": [{"operator": "Exists"}]}},
            "downloader": {"image": "attacker/x:1"},
        },
    )
    ready = assert_refused(
        artifacts,
        "root",
        "PolicyViolation",
        "policy.nodeLocal.roots",
        "tolerationKeys",
        "policy.allowedImages",
    )
    assert "/etc" in ready["message"]
    # give the operator a few more passes: still nothing, in the tenant's or the operator's namespace
    wait_until(lambda: artifacts.status("root").get("observedGeneration") == 1, timeout=10)
    assert no_jobs_for(artifacts, "root") and not artifacts.pods()
    for node in ("md-node-a", "md-node-b", "md-node-c"):
        assert not (cluster.node_dir(node) / "etc" / artifacts.namespace).exists()
    assert any(e["reason"] == "PolicyViolation" and e["type"] == "Warning" for e in artifacts.events())
    # deleting it runs no cleanup Job either (it would mount /etc)
    artifacts.delete("root")
    assert not artifacts.jobs("modeldepot-cleanup")


def test_an_allowed_node_local_artifact_runs_in_the_operators_namespace(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """The tenant namespace is `restricted`; the hostPath pods run in the operator's namespace."""
    repo = small_repo(hub, 2)
    artifacts.apply(
        "local",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"nodeLocal": {"nodeSelector": {"topology.kubernetes.io/zone": "zone-b"}}},
        },
    )
    artifacts.wait_phase("local", "Ready", timeout=90)
    core_pods = cluster.kubectl_json("get", "pods", "-n", artifacts.namespace)["items"]
    assert not core_pods, "no pod at all in the tenant's namespace"
    (job,) = artifacts.jobs()
    assert job["metadata"]["namespace"] == OPERATOR_NAMESPACE
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["initContainers"][0]["image"] == pod_spec["containers"][0]["image"]
    published = cluster.node_dir("md-node-b") / "var/lib/modeldepot" / artifacts.namespace / "local"
    assert published.is_symlink() and (published / "model.safetensors").is_file()
    artifacts.delete("local")
    assert not published.exists()
    # the per-artifact ServiceAccount in the operator's namespace goes with it
    name = builders.fetcher_identity_name(artifact_model(artifacts.namespace, "local"))
    leftover = cluster.kubectl("get", "serviceaccount", name, "-n", OPERATOR_NAMESPACE, check=False)
    assert leftover.returncode != 0


def artifact_model(namespace: str, name: str) -> ModelArtifact:
    return ModelArtifact.from_body(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"source": {"huggingFace": {"repo": "a/b"}}, "storage": {"nodeLocal": {}}},
        }
    )


# ------------------------------------------------------------------------------ token exfiltration


def test_a_token_never_goes_to_an_endpoint_the_admin_did_not_allow(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """tokenSecretRef of any Secret key + endpoint http://attacker: refused, nothing sent (issue 7, 3)."""
    password = "db-" + os.urandom(8).hex()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db-credentials", "namespace": artifacts.namespace},
        "data": {"password": base64.b64encode(password.encode()).decode()},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    hub.clear_requests()
    spec = claim_spec(hub, unique_repo(), tokenSecretRef={"name": "db-credentials", "key": "password"})
    spec["source"]["huggingFace"]["endpoint"] = "http://127.0.0.2:9"  # not in policy.allowedEndpoints
    artifacts.apply("exfil", spec)
    assert_refused(artifacts, "exfil", "PolicyViolation", "policy.allowedEndpoints")
    assert no_jobs_for(artifacts, "exfil")
    assert password not in json.dumps(artifacts.get("exfil"))
    assert all(password not in json.dumps(event) for event in artifacts.events())
    assert not [r for r in hub.requests if r.get("auth")]


# ------------------------------------------------------------------------- artifacts vs each other


def test_equal_and_nested_paths_on_one_claim_are_refused_and_the_first_is_untouched(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """Paths `shared`/`shared` and `n`/`n/0123abcd` (issue 7, 4): the later artifact gets
    PathConflict before any byte is written; deleting it removes nothing of the first."""
    first_repo, second_repo = small_repo(hub, 3), small_repo(hub, 4)
    artifacts.apply("first", claim_spec(hub, first_repo, "shared"))
    artifacts.wait_phase("first", "Ready", timeout=90)
    artifacts.apply("nest-outer", claim_spec(hub, first_repo, "n"))
    artifacts.wait_phase("nest-outer", "Ready", timeout=90)
    volume = claim_dir(cluster, artifacts.namespace, "models")
    before = {p: files_digest(volume / p) for p in ("shared", "n")}
    status_before = artifacts.status("first")["digest"]

    artifacts.apply("second", claim_spec(hub, second_repo, "shared"))
    assert_refused(artifacts, "second", "PathConflict", "shared", f"{artifacts.namespace}/first")
    artifacts.apply("nest-inner", claim_spec(hub, second_repo, "n/0123abcd"))
    assert_refused(artifacts, "nest-inner", "PathConflict", f"{artifacts.namespace}/nest-outer")
    assert no_jobs_for(artifacts, "second") and no_jobs_for(artifacts, "nest-inner")

    artifacts.delete("second")
    artifacts.delete("nest-inner")
    assert {p: files_digest(volume / p) for p in ("shared", "n")} == before
    assert artifacts.status("first")["digest"] == status_before == before["shared"]
    assert artifacts.status("first")["phase"] == "Ready"


# ------------------------------------------------------------------------------ fetcher identity


def test_each_fetch_pod_may_patch_only_its_own_artifact(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """A fetch pod's identity reaches its own artifact's status and nothing else (issue 7, 7)."""
    artifacts.apply("mine", claim_spec(hub, small_repo(hub, 5), "mine"))
    artifacts.apply("victim", claim_spec(hub, small_repo(hub, 6), "victim"))
    artifacts.wait_phase("mine", "Ready", timeout=90)
    (job,) = [
        j for j in artifacts.jobs() if j["metadata"]["annotations"]["modeldepot.dev/artifact"] == "mine"
    ]
    sa = job["spec"]["template"]["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{artifacts.namespace}:{sa}"

    def can(verb: str, resource: str, *extra: str) -> bool:
        result = cluster.kubectl(
            "auth", "can-i", verb, resource, "-n", artifacts.namespace, f"--as={user}", *extra, check=False
        )
        return result.stdout.strip() == "yes"

    md = "modelartifacts.modeldepot.dev"
    assert can("patch", f"{md}/mine", "--subresource=status")
    assert not can("patch", f"{md}/victim", "--subresource=status")
    assert not can("get", "secrets") and not can("create", "pods") and not can("patch", f"{md}/mine")
    # and for real: a patch of the victim's status with that identity's token is forbidden
    token = cluster.kubectl("create", "token", sa, "-n", artifacts.namespace, "--duration=10m").stdout.strip()
    server = cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    attempt = subprocess.run(
        [
            KUBECTL,
            "--server",
            server,
            "--insecure-skip-tls-verify",
            "--token",
            token,
            "patch",
            "ma",
            "victim",
            "-n",
            artifacts.namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"digest": "sha256:" + "0" * 64}}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert attempt.returncode != 0 and "forbidden" in attempt.stderr.lower(), attempt.stderr
    assert artifacts.status("victim").get("digest") != "sha256:" + "0" * 64

    # a node entry is written by server-side apply (the patch verb): allowed on its own artifact
    # only, the entry added and removed again like the fetcher and the operator do it
    config = client.Configuration(host=server, api_key={"authorization": f"Bearer {token}"})
    config.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    api = client.CustomObjectsApi(client.ApiClient(config))

    def apply(name: str, entry: NodeStatus | None) -> None:
        api.patch_namespaced_custom_object_status(
            "modeldepot.dev", "v1alpha1", artifacts.namespace, "modelartifacts", name,
            node_apply(artifacts.namespace, name, entry), field_manager=node_field_manager("probe"),
            force=True, _content_type="application/apply-patch+yaml",
        )  # fmt: skip

    with pytest.raises(ApiException) as refused:
        apply("victim", NodeStatus(name="probe", phase="Pending"))
    assert refused.value.status == 403
    apply("mine", NodeStatus(name="probe", phase="Pending"))
    assert [e["name"] for e in artifacts.status("mine")["nodes"]] == ["probe"]
    apply("mine", None)
    assert not artifacts.status("mine").get("nodes")


# ------------------------------------------------------------------------------ apply-time policy


def render_admission_policy(namespace: str, endpoint: str) -> list[dict[str, Any]]:
    helm = ensure_binaries() / "helm"
    out = subprocess.run(
        [
            str(helm),
            "template",
            "adm",
            str(CHART),
            "-n",
            OPERATOR_NAMESPACE,
            "--show-only",
            "templates/admission-policy.yaml",
            "--set",
            f"policy.allowedEndpoints={{{endpoint}}}",
            "--set-string",
            f"policy.admission.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        doc["metadata"]["name"] = f"{namespace}.{doc['metadata']['name']}"
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] = f"{namespace}.{doc['spec']['policyName']}"
    return docs


def test_the_charts_admission_policy_rejects_abuse_at_apply_time(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    docs = render_admission_policy(artifacts.namespace, hub.url)
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    cluster.kubectl("apply", "-f", "-", input=manifest)
    try:
        cases = {
            "endpoint": ({"endpoint": "http://attacker.example"}, {}, "policy.allowedEndpoints"),
            "root": ({}, {"nodeLocal": {"path": "/var/lib/kubelet"}}, "policy.nodeLocal.roots"),
            "tolerate-all": ({}, {"nodeLocal": {"tolerations": [{"operator": "Exists"}]}}, "tolerationKeys"),
            "control-plane": (
                {},
                {
                    "nodeLocal": {
                        "tolerations": [
                            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
                        ]
                    }
                },
                "tolerationKeys",
            ),
        }

        def spec(source: dict[str, Any], storage: dict[str, Any]) -> dict[str, Any]:
            return {
                "source": {"huggingFace": {"repo": "a/b", "endpoint": hub.url, **source}},
                "storage": storage or {"persistentVolumeClaim": {"claimName": "models"}},
            }

        # the apiserver loads a new policy asynchronously: wait until it bites (a new name each try:
        # re-applying an unchanged object sends no request)
        probes = iter(range(1000))
        wait_until(
            lambda: (
                artifacts.apply_result(f"probe-{next(probes)}", spec(*cases["endpoint"][:2])).returncode != 0
            ),
            timeout=30,
            what="the admission policy to be active",
        )
        for name, (source, storage, knob) in cases.items():
            result = artifacts.apply_result(name, spec(source, storage))
            assert result.returncode != 0, name
            assert "ValidatingAdmissionPolicy" in result.stderr and knob in result.stderr, result.stderr
        image = {
            **spec({}, {}),
            "downloader": {"image": "attacker/x:1"},
        }
        result = artifacts.apply_result("image", image)
        assert result.returncode != 0 and "policy.allowedImages" in result.stderr
        # what the admin allows still applies
        assert (
            artifacts.apply_result(
                "fine", spec({}, {"nodeLocal": {"path": "/var/lib/modeldepot/fast"}})
            ).returncode
            == 0
        )
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest)


# -------------------------------------------------------------------------------- planted symlinks


@pytest.mark.parametrize("planted", ["evil", ".modeldepot/staging/evil", ".modeldepot/store/evil"])
def test_a_symlink_planted_on_the_claim_is_never_followed(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle, tmp_path: Path, planted: str
) -> None:
    """Another tenant's pod planted a symlink where the fetcher will write (issue 7, 5): the download
    fails with PathConflict and nothing outside the claim is created, changed or removed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    artifacts.create_claim("models")
    volume = wait_until(
        lambda: (
            claim_dir(cluster, artifacts.namespace, "models")
            if cluster.kubectl_json("get", "pvc", "models", "-n", artifacts.namespace)["spec"].get(
                "volumeName"
            )
            else None
        ),
        timeout=30,
        what="the claim to be bound",
    )
    link = volume / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    spec = claim_spec(hub, small_repo(hub, 7), "evil")
    del spec["storage"]["persistentVolumeClaim"]["create"]
    artifacts.apply("evil", spec)
    assert_refused(artifacts, "evil", "PathConflict", "symlink")
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "precious"
    assert link.is_symlink(), "the planted link is left for the admin to see, not followed"
