"""The Helm chart: lint, render, schema, and installs whose RBAC is checked against the real API server.

Rendering needs only the helm binary (hack/build-k8s.sh puts it next to the control plane's
binaries); the install tests use the local control plane. The namespace-scoped install runs its
operator (a local process under the pod runner) watching only a namespace of its own; the
cluster-scoped install pins its operator pod to a node that does not exist, so no second
cluster-wide operator ever touches other tests' ModelArtifacts.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ClusterHandle, fresh_namespace, wait_until

from localdev.cluster import ensure_binaries, free_port
from modeldepot import builders
from modeldepot.models import ModelArtifact
from modeldepot.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldepot"
CRD_NAME = "modelartifacts.modeldepot.dev"
UNSCHEDULABLE = "modeldepot-test/no-such-node"


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    return ensure_binaries() / "helm"


def helm(
    helm_bin: Path, *args: str, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_bin), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(helm_bin: Path, *sets: str, namespace: str = "md-system") -> list[dict[str, Any]]:
    out = helm(helm_bin, "template", "md", str(CHART), "-n", namespace, *sets).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def allowed(
    rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    """RBAC's rule matching (no wildcards are expected in our rules)."""
    for rule in rules:
        names = rule.get("resourceNames")
        if (
            group in rule.get("apiGroups", [])
            and resource in rule.get("resources", [])
            and verb in rule.get("verbs", [])
            and (not names or name in names)
        ):
            return True
    return False


# ------------------------------------------------------------------------------------- rendering


def test_helm_lint_passes_for_both_scopes(helm_bin: Path) -> None:
    helm(helm_bin, "lint", "--strict", str(CHART))
    helm(
        helm_bin,
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "rbac.scope=namespaces",
        "--set",
        "rbac.namespaces={a,b}",
    )
    helm(helm_bin, "lint", "--strict", str(CHART), "--set", "metrics.serviceMonitor.enabled=true")


def test_default_render_has_every_object(helm_bin: Path) -> None:
    docs = render(helm_bin)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            # node-local Jobs, their ServiceAccounts and token copies live in the release namespace
            "Role",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    assert [r["metadata"]["namespace"] for r in find(docs, "Role")] == ["md-system"]
    assert not find(docs, "ServiceMonitor")


def test_deployment_is_one_restricted_replica_probed_on_kopf_healthz(helm_bin: Path) -> None:
    (deployment,) = find(render(helm_bin), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "md-modeldepot"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] + container["args"] == ["modeldepot", "operator"]
    default_image = OperatorSettings.model_fields["fetcher_image"].default
    assert container["image"] == default_image
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPOT_FETCHER_IMAGE"] == default_image
    assert env["MODELDEPOT_HEALTH_PORT"] == "8081" and env["MODELDEPOT_METRICS_PORT"] == "8080"
    assert "MODELDEPOT_NAMESPACES" not in env
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_operator_env_parses_into_operator_settings(helm_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(
        helm_bin,
        "--set",
        "rbac.scope=namespaces",
        "--set",
        "rbac.namespaces={team-a,team-b}",
        "--set",
        "fetcher.image=registry.local/fetcher:1",
        "--set",
        "fetcher.imagePullPolicy=Always",
        "--set-string",
        "fetcher.env.MODELDEPOT_REPORT_INTERVAL=5",
        "--set",
        "operator.resyncSeconds=45",
        "--set",
        "policy.allowedEndpoints={https://hf-mirror.example.com}",
        "--set",
        "policy.nodeLocal.roots={/mnt/models,/var/lib/modeldepot}",
        "--set",
        "policy.nodeLocal.namespaces={team-a}",
        "--set",
        "policy.allowedImages={registry.local/*}",
    )
    (deployment,) = find(docs, "Deployment")
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if var["name"].startswith("MODELDEPOT_"):
            # the operator's namespace comes from the downward API (fieldRef)
            monkeypatch.setenv(var["name"], var.get("value", "md-system"))
    settings = OperatorSettings()
    assert settings.operator_namespace == "md-system"
    assert settings.namespaces == ["team-a", "team-b", "md-system"]
    assert settings.allowed_endpoints == ["https://hf-mirror.example.com"]
    assert settings.node_local_roots == ["/mnt/models", "/var/lib/modeldepot"]
    assert settings.node_local_namespaces == ["team-a"]
    assert settings.allowed_images == ["registry.local/*"]
    assert settings.allowed_toleration_keys == ["nvidia.com/gpu", "amd.com/gpu"]
    assert settings.fetcher_image == "registry.local/fetcher:1"
    assert settings.fetcher_image_pull_policy == "Always"
    assert settings.fetcher_env == {"MODELDEPOT_REPORT_INTERVAL": "5"}
    assert settings.resync_seconds == 45
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)


def test_image_digest_pins_operator_and_fetcher(helm_bin: Path) -> None:
    digest = "sha256:" + "a" * 64
    (deployment,) = find(render(helm_bin, "--set", f"image.digest={digest}"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/modeldepot/modeldepot@{digest}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPOT_FETCHER_IMAGE"] == container["image"]


def test_crd_is_the_canonical_one_kept_on_uninstall(helm_bin: Path) -> None:
    canonical = yaml.safe_load((ROOT / "crds" / "modelartifacts.yaml").read_text())
    (crd,) = find(render(helm_bin), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert canonical["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["name"] == canonical["metadata"]["name"]
    assert {k: v for k, v in crd.items() if k != "metadata"} == {
        k: v for k, v in canonical.items() if k != "metadata"
    }

    (not_kept,) = find(render(helm_bin, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (not_kept["metadata"].get("annotations") or {})
    assert not find(render(helm_bin, "--set", "crds.enabled=false"), "CustomResourceDefinition")


def test_namespace_scope_renders_a_role_per_watched_namespace(helm_bin: Path) -> None:
    docs = render(helm_bin, "--set", "rbac.scope=namespaces", "--set", "rbac.namespaces={team-a,team-b}")
    roles = ["md-system", "team-a", "team-b"]  # the release namespace holds node-local Jobs
    assert sorted(r["metadata"]["namespace"] for r in find(docs, "Role")) == roles
    assert sorted(b["metadata"]["namespace"] for b in find(docs, "RoleBinding")) == roles
    (cluster_role,) = find(docs, "ClusterRole")
    assert not allowed(cluster_role["rules"], "batch", "jobs", "create")
    assert allowed(cluster_role["rules"], "", "nodes", "list")
    (deployment,) = find(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["MODELDEPOT_NAMESPACES"]) == ["team-a", "team-b", "md-system"]
    (binding,) = find(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "team-a",
        "team-b",
    ]

    # no namespaces listed: the release namespace
    docs = render(helm_bin, "--set", "rbac.scope=namespaces", namespace="ml")
    assert [r["metadata"]["namespace"] for r in find(docs, "Role")] == ["ml", "ml"]


def test_rendered_rbac_covers_the_operators_api_calls_and_nothing_sensitive(helm_bin: Path) -> None:
    (cluster_role,) = find(render(helm_bin), "ClusterRole")
    rules = cluster_role["rules"]
    needed = [
        # kube.py
        ("modeldepot.dev", "modelartifacts/status", "patch", None),
        ("modeldepot.dev", "modelartifacts", "get", None),
        ("", "nodes", "list", None),
        ("", "nodes", "get", None),
        ("batch", "jobs", "list", None),
        ("batch", "jobs", "create", None),
        ("batch", "jobs", "delete", None),
        ("", "pods", "list", None),
        ("", "pods", "delete", None),
        ("", "persistentvolumeclaims", "get", None),
        ("", "persistentvolumeclaims", "create", None),
        ("", "serviceaccounts", "create", None),
        ("rbac.authorization.k8s.io", "roles", "create", None),
        ("rbac.authorization.k8s.io", "rolebindings", "create", None),
        ("", "secrets", "get", None),
        # kopf
        ("modeldepot.dev", "modelartifacts", "list", None),
        ("modeldepot.dev", "modelartifacts", "watch", None),
        ("modeldepot.dev", "modelartifacts", "patch", None),
        ("batch", "jobs", "watch", None),
        ("", "events", "create", None),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list", None),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch", None),
        ("", "namespaces", "list", None),
    ]
    missing = [n for n in needed if not allowed(rules, *n)]
    assert not missing
    # the escalation rule: every permission the fetcher Role grants, the operator holds itself
    for rule in builders.fetcher_role(FETCHER_ARTIFACT)["rules"]:
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                assert allowed(rules, rule["apiGroups"][0], resource, verb, "llm"), (resource, verb)
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]  # the one key a tokenSecretRef names; never list/watch
    assert not allowed(rules, "rbac.authorization.k8s.io", "roles", "patch")
    assert not allowed(rules, "", "nodes", "delete")
    # node-local objects only in the release namespace
    (local_role,) = find(render(helm_bin), "Role", "md-system")
    for needed_here in [
        ("batch", "jobs", "create"),
        ("batch", "jobs", "watch"),
        ("", "pods", "list"),
        ("", "serviceaccounts", "delete"),
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
        ("", "secrets", "delete"),
        ("", "configmaps", "get"),
        ("", "configmaps", "create"),
        ("", "configmaps", "patch"),
        ("", "configmaps", "delete"),
    ]:
        assert allowed(local_role["rules"], *needed_here), needed_here
    assert not allowed(rules, "", "configmaps", "patch")  # node records: only the release namespace
    assert not allowed(local_role["rules"], "", "secrets", "get")
    assert not allowed(local_role["rules"], "", "secrets", "list")


def test_service_monitor_selects_the_metrics_service(helm_bin: Path) -> None:
    docs = render(
        helm_bin,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kps",
    )
    (monitor,) = find(docs, "ServiceMonitor")
    (service,) = find(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    (deployment,) = find(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    failed = helm(
        helm_bin,
        "template",
        "md",
        str(CHART),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=false",
        check=False,
    )
    assert failed.returncode != 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "replicaCount=0"], "replicaCount"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "image.unknown=x"], "unknown"),
        (["--set", "rbac.scope=everywhere"], "scope"),
        (["--set", "crds.enabled=maybe"], "enabled"),
        (["--set", "metrics.port=70000"], "port"),
        (["--set-string", "health.port=8081"], "port"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "rbac.namespaces={Not_A_Namespace}"], "namespaces"),
        (["--set", "fetcher.env.HF_TOKEN=x"], "HF_TOKEN"),
    ],
)
def test_schema_rejects_bad_values(helm_bin: Path, args: list[str], complaint: str) -> None:
    result = helm(helm_bin, "template", "md", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ installs


def can_i(
    cluster: ClusterHandle, who: str, verb: str, resource: str, namespace: str | None, *extra: str
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={who}", *extra]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {result.stdout} {result.stderr}"
    return answer == "yes"


def service_account(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


@pytest.fixture
def extra_namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A second namespace (the watched one of a namespace-scoped install)."""
    with fresh_namespace(cluster) as name:
        yield name


def install(helm_bin: Path, cluster: ClusterHandle, release: str, namespace: str, *sets: str) -> None:
    helm(
        helm_bin,
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "--wait=false",
        *sets,
        kubeconfig=cluster.kubeconfig,
    )


def uninstall(helm_bin: Path, cluster: ClusterHandle, release: str, namespace: str) -> None:
    helm(
        helm_bin,
        "uninstall",
        release,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "120s",
        kubeconfig=cluster.kubeconfig,
    )


FETCHER_ARTIFACT = ModelArtifact.from_body(
    {
        "metadata": {"name": "llm", "namespace": "x", "uid": "u"},
        "spec": {
            "source": {"huggingFace": {"repo": "a/b"}},
            "storage": {"persistentVolumeClaim": {"claimName": "c"}},
        },
    }
)


def artifact_in(namespace: str, name: str = "llm") -> ModelArtifact:
    body = FETCHER_ARTIFACT.to_api()
    body["metadata"] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    return ModelArtifact.from_body(body)


def assert_operator_can_manage_fetcher_identity(cluster: ClusterHandle, operator: str, target: str) -> None:
    """As the operator (impersonated), create an artifact's fetcher SA/Role/RoleBinding the way
    kube.py does (the ownerReference is dropped: no such artifact exists here).

    Creating the Role passes RBAC's escalation check only because the operator holds every
    permission the Role grants; a Role granting more (listing Secrets) is refused.
    """
    art = artifact_in(target)
    defaults = builders.JobDefaults(image="x")
    for manifest in (
        builders.fetcher_service_account(art, defaults),
        builders.fetcher_role(art),
        builders.fetcher_role_binding(art, defaults),
    ):
        manifest["metadata"].pop("ownerReferences", None)
        cluster.kubectl("create", f"--as={operator}", "-f", "-", input=json.dumps(manifest))
    escalation = cluster.kubectl(
        "create",
        "role",
        "steal-secrets",
        "--verb=list",  # the operator may get a named Secret, never list them: nor may its Roles
        "--resource=secrets",
        "-n",
        target,
        f"--as={operator}",
        check=False,
    )
    assert escalation.returncode != 0 and "forbidden" in escalation.stderr.lower(), escalation.stderr


def assert_fetcher_identity_is_minimal(cluster: ClusterHandle, namespace: str, elsewhere: str) -> None:
    """The fetcher of artifact `llm` may read and patch the status of `llm` and of nothing else."""
    fetcher = service_account(namespace, builders.fetcher_identity_name(artifact_in(namespace)))
    md = "modelartifacts.modeldepot.dev"
    assert can_i(cluster, fetcher, "patch", f"{md}/llm", namespace, "--subresource=status")
    assert can_i(cluster, fetcher, "get", f"{md}/llm", namespace, "--subresource=status")
    # another artifact of the same namespace is out of reach (issue 7: any fetch pod could patch any)
    assert not can_i(cluster, fetcher, "patch", f"{md}/victim", namespace, "--subresource=status")
    assert not can_i(cluster, fetcher, "patch", md, namespace, "--subresource=status")
    for verb in ("get", "patch", "update", "delete", "list", "watch", "create"):
        assert not can_i(cluster, fetcher, verb, md, namespace), verb
    assert not can_i(cluster, fetcher, "update", f"{md}/llm", namespace, "--subresource=status")
    assert not can_i(cluster, fetcher, "patch", f"{md}/llm", elsewhere, "--subresource=status")
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "configmaps"),
        ("create", "pods"),
        ("list", "pods"),
        ("create", "jobs.batch"),
        ("list", "nodes"),
        ("create", "roles.rbac.authorization.k8s.io"),
    ]:
        assert not can_i(cluster, fetcher, verb, resource, namespace), (verb, resource)


def test_namespace_scoped_install_grants_only_the_watched_namespace(
    helm_bin: Path, cluster: ClusterHandle, namespace: str, extra_namespace: str
) -> None:
    release = f"md-{namespace[-8:]}"
    watched, home = extra_namespace, namespace
    health_port, metrics_port = free_port(), free_port()
    install(
        helm_bin,
        cluster,
        release,
        home,
        "--set",
        "crds.enabled=false",
        "--set",
        "rbac.scope=namespaces",
        "--set",
        f"rbac.namespaces={{{watched}}}",
        "--set",
        f"health.port={health_port}",
        "--set",
        f"metrics.port={metrics_port}",
        "--set",
        "metrics.service.port=8080",
    )
    try:
        operator = service_account(home, f"{release}-modeldepot")
        md = "modelartifacts.modeldepot.dev"
        # what the operator needs, in the watched namespace
        assert can_i(cluster, operator, "create", "jobs.batch", watched)
        assert can_i(cluster, operator, "delete", "jobs.batch", watched)
        assert can_i(cluster, operator, "watch", "jobs.batch", watched)
        assert can_i(cluster, operator, "patch", md, watched, "--subresource=status")
        assert can_i(cluster, operator, "watch", md, watched)
        assert can_i(cluster, operator, "create", "roles.rbac.authorization.k8s.io", watched)
        assert can_i(cluster, operator, "create", "rolebindings.rbac.authorization.k8s.io", watched)
        assert can_i(cluster, operator, "create", "serviceaccounts", watched)
        assert can_i(cluster, operator, "create", "persistentvolumeclaims", watched)
        assert can_i(cluster, operator, "create", "events", watched)
        assert can_i(cluster, operator, "list", "nodes", None)
        # and nothing outside it, nothing sensitive anywhere
        assert not can_i(cluster, operator, "create", "jobs.batch", None)
        assert can_i(cluster, operator, "get", "secrets", watched)  # only what tokenSecretRef names
        assert not can_i(cluster, operator, "list", "secrets", watched)
        assert not can_i(cluster, operator, "get", "secrets", home)
        # node-local Jobs and token copies in the release namespace, nothing else there
        assert can_i(cluster, operator, "create", "jobs.batch", home)
        assert can_i(cluster, operator, "create", "secrets", home)
        assert not can_i(cluster, operator, "patch", md, home, "--subresource=status")
        assert not can_i(cluster, operator, "delete", "nodes", None)
        assert not can_i(cluster, operator, "patch", "nodes", None)
        assert not can_i(cluster, operator, "create", "pods", watched)
        assert not can_i(cluster, operator, "update", "clusterroles.rbac.authorization.k8s.io", None)

        assert_operator_can_manage_fetcher_identity(cluster, operator, watched)
        assert_fetcher_identity_is_minimal(cluster, watched, home)

        # the operator pod runs `modeldepot operator` (a local process under the pod runner) with
        # the chart's ServiceAccount token and serves kopf's liveness endpoint
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(healthy, timeout=90, interval=1, what="the operator's /healthz under the chart's RBAC")
    finally:
        uninstall(helm_bin, cluster, release, home)

    leftovers = cluster.kubectl_json(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}"
    )
    assert leftovers["items"] == []
    assert (
        cluster.kubectl_json(
            "get", "roles,rolebindings", "-n", watched, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        == []
    )
    wait_until(
        lambda: (
            not cluster.kubectl_json(
                "get", "pods", "-n", home, "-l", f"app.kubernetes.io/instance={release}"
            )["items"]
        ),
        timeout=60,
        what="the operator pod to be gone",
    )


def test_cluster_scoped_install_keeps_the_crd_on_uninstall(
    helm_bin: Path, cluster: ClusterHandle, namespace: str
) -> None:
    release = f"mdc-{namespace[-8:]}"
    # the CRD is shared with the other integration tests: adopt it if it exists (identical content)
    install(
        helm_bin,
        cluster,
        release,
        namespace,
        "--take-ownership",
        "--set",
        "rbac.scope=cluster",
        # keep the pod Pending: a second cluster-wide operator would race the tests' own operators
        "--set-string",
        f"nodeSelector.{UNSCHEDULABLE}=true",
    )
    try:
        operator = service_account(namespace, f"{release}-modeldepot")
        md = "modelartifacts.modeldepot.dev"
        for where in (namespace, "default", None):
            assert can_i(cluster, operator, "create", "jobs.batch", where)
            assert can_i(cluster, operator, "patch", md, where, "--subresource=status")
            assert can_i(cluster, operator, "get", md, where, "--subresource=status")
            assert can_i(cluster, operator, "list", "pods", where)
            assert can_i(cluster, operator, "get", "secrets", where)  # only what tokenSecretRef names
            assert not can_i(cluster, operator, "list", "secrets", where)
            assert not can_i(cluster, operator, "watch", "secrets", where)
            assert not can_i(cluster, operator, "create", "pods", where)
            assert not can_i(cluster, operator, "update", "jobs.batch", where)
        assert can_i(cluster, operator, "list", "nodes", None)
        assert can_i(cluster, operator, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert can_i(cluster, operator, "list", "namespaces", None)
        assert not can_i(cluster, operator, "delete", "nodes", None)
        assert not can_i(cluster, operator, "create", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert not can_i(cluster, operator, "delete", "namespaces", None)
        roles = "roles.rbac.authorization.k8s.io"
        assert not can_i(cluster, operator, "patch", f"{roles}/other", namespace)

        assert_operator_can_manage_fetcher_identity(cluster, operator, namespace)
        assert_fetcher_identity_is_minimal(cluster, namespace, "default")

        crd = cluster.kubectl_json("get", "crd", CRD_NAME)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        (pod,) = cluster.kubectl_json(
            "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        assert pod["spec"]["nodeSelector"] == {UNSCHEDULABLE: "true"}
        assert not pod["spec"].get("nodeName")
    finally:
        uninstall(helm_bin, cluster, release, namespace)

    assert cluster.kubectl_json("get", "crd", CRD_NAME)["metadata"]["name"] == CRD_NAME
    leftovers = cluster.kubectl_json(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}"
    )
    assert leftovers["items"] == []


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_examples_pass_server_side_validation(cluster: ClusterHandle, namespace: str, example: str) -> None:
    """The API server (structural schema, CEL rules, core types) accepts every example as written."""
    if cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        cluster.kubectl("apply", "-f", str(ROOT / "crds" / "modelartifacts.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        str(ROOT / "examples" / example),
    )
    assert "(server dry run)" in result.stdout


@pytest.mark.parametrize(("scope", "where"), [("cluster", "<namespace>"), ("namespaces", "ml")])
def test_notes_tell_the_next_step(helm_bin: Path, cluster: ClusterHandle, scope: str, where: str) -> None:
    out = helm(
        helm_bin,
        "install",
        "notes",
        str(CHART),
        "-n",
        "default",
        "--dry-run=server",
        "--set",
        "crds.enabled=false",
        "--set",
        f"rbac.scope={scope}",
        "--set",
        "rbac.namespaces={ml}",
        kubeconfig=cluster.kubeconfig,
    ).stdout
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl apply -n {where} -f examples/pvc-model.yaml" in notes
    assert f"kubectl get ma -n {where} -w" in notes
    assert f"kubectl wait -n {where} --for=condition=Ready modelartifact/minilm" in notes
