"""A real node (kubelet + containerd + runc + CNI, localdev.realnode) runs a pod as users' clusters do.

Runs when MODELDEPOT_REAL_NODE=1, as `make test` (through `make e2e`) sets it: it needs root, the
binaries `hack/build-k8s.sh --real-node` builds once and `make image`'s archive, and changes host
state that `down` restores. The node joins the
cluster in MODELDEPOT_REAL_NODE_CLUSTER_DIR, else the default local cluster (.cluster/). If this
module brought the node (or the cluster) up, it takes it down again and checks that the host is as
it found it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from support import RESTRICTED, ClusterHandle, fresh_namespace, wait_until

from localdev import realnode
from localdev.cluster import LocalCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("MODELDEPOT_REAL_NODE") != "1",
        reason="the real-node tier runs under `make test`/`make e2e` (MODELDEPOT_REAL_NODE=1; see docs/testing.md)",
    ),
]

KUBECTL = str(Path(sys.executable).parent / "kubectl")
# CNI users other than us may create these meanwhile (buildah, another runtime): compared by our entries
SHARED_PATHS = {"/var/lib/cni", "/etc/cni/net.d", "/run/netns"}


@dataclass
class RealNodeHandle:
    node: realnode.RealNode
    core: client.CoreV1Api
    started_here: bool
    before: dict[str, Any]  # host_snapshot() before `up`

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.node.cluster.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )


def host_snapshot(node: realnode.RealNode) -> dict[str, Any]:
    """The host state the real node touches, as `down` must leave it."""
    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {
        "sysctls": {
            name: realnode.sysctl_path(name).read_text().strip()
            # ip_forward: other programs on a shared machine (buildah) may flip it meanwhile
            for name in (*realnode.SYSCTLS, "net.ipv4.conf.all.route_localnet")
            if name != "net.ipv4.ip_forward"
        },
        "bridge": Path(f"/sys/class/net/{realnode.BRIDGE}").exists(),
        "iptables": [
            line
            for line in iptables.splitlines()
            if "MODELDEPOT-RN" in line or realnode.BRIDGE in line or realnode.POD_SUBNET in line
        ],
        "mounts": [str(p) for p in realnode.mounts_under(node.root)],
        "paths": {p: os.path.lexists(p) for p in realnode.HOST_PATHS if p not in SHARED_PATHS},
        "cni results": [p.name for p in realnode.RealNode.our_cni_results(Path("/var/lib/cni/results"))],
        "cgroups": [str(h / "kubepods") for h in realnode.cgroup_hierarchies() if (h / "kubepods").exists()],
        "shims": node._our_shims(),
    }


@pytest.fixture(scope="module")
def real_node() -> Iterator[RealNodeHandle]:
    cluster_dir = os.environ.get("MODELDEPOT_REAL_NODE_CLUSTER_DIR")
    node = realnode.RealNode(Path(cluster_dir) if cluster_dir else None)
    cluster_was_up = node.cluster.status() == "up"
    node_was_up = node.status().get("state") == "up"
    before = host_snapshot(node)
    node.up()
    api = config.new_client_from_config(config_file=str(node.cluster.kubeconfig))
    core = client.CoreV1Api(api)
    info = core.read_node(realnode.NODE_NAME).status.node_info
    print(
        f"\nreal node {realnode.NODE_NAME}: kubeletVersion={info.kubelet_version} "
        f"containerRuntimeVersion={info.container_runtime_version} "
        f"image under test={realnode.image_ref('probe')}@{node.image_digest('probe')}",
        file=sys.stderr,
    )
    handle = RealNodeHandle(node, core, started_here=not node_was_up, before=before)
    try:
        yield handle
    finally:
        if not node_was_up:
            node.down()
        if not cluster_was_up:
            LocalCluster(node.cluster.root).down()


@pytest.fixture
def restricted_namespace(real_node: RealNodeHandle) -> Iterator[str]:
    """A Pod Security `restricted` namespace of the real node's cluster (support.fresh_namespace)."""
    handle = ClusterHandle(
        real_node.node.cluster.kubeconfig,
        real_node.node.cluster.root,
        real_node.core.api_client,
        realnode.bin_dir(),
    )
    with fresh_namespace(handle) as name:
        yield name


@pytest.fixture(scope="module")
def our_image(real_node: RealNodeHandle) -> None:
    """`make image`'s archive, imported into the node's containerd once for the module."""
    archives = sorted(IMAGE_ARCHIVE.glob("modeldepot-*.oci.tar"))
    assert archives, f"no image archive in {IMAGE_ARCHIVE}: run `make image` first (make e2e does)"
    real_node.node.import_image(archives[-1])


@pytest.fixture(scope="module")
def bridge_hub() -> Iterator[Any]:
    """The Hub emulator on the bridge's address, where pods of the real node reach it."""
    from localdev.hubemu import HubEmulator

    hub = HubEmulator(host=realnode.GATEWAY)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@contextlib.contextmanager
def chart_installed(real_node: RealNodeHandle, release: str, namespace: str, *values: str) -> Iterator[None]:
    """`helm install` of the chart with our image (never pulled), uninstalled afterwards."""
    helm = [str(realnode.bin_dir() / "helm"), "--kubeconfig", str(real_node.node.cluster.kubeconfig)]
    install = subprocess.run(
        [
            *helm, "install", release, str(CHART), "-n", namespace, "--wait=false", "--take-ownership",
            "--set", "image.pullPolicy=Never",
            "--set", "fetcher.imagePullPolicy=Never",
            "--set", "rbac.scope=namespaces",
            "--set", "policy.admission.enabled=false",
            *values,
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    try:
        yield
    finally:
        subprocess.run(
            [*helm, "uninstall", release, "-n", namespace, "--wait"], capture_output=True, timeout=300
        )


ON_THE_REAL_NODE = (
    "--set-string", f"nodeSelector.{realnode.LABEL.replace('.', chr(92) + '.')}=true",
    "--set", f"tolerations[0].key={realnode.LABEL}",
    "--set", "tolerations[0].operator=Exists",
    "--set", "tolerations[0].effect=NoSchedule",
)  # fmt: skip


def finished_artifact(real_node: RealNodeHandle, namespace: str, name: str, *, jobs_namespace: str) -> Any:
    """The artifact's status once Ready or Failed; on a timeout, what the pods and Jobs say."""
    custom = client.CustomObjectsApi(real_node.core.api_client)

    def finished() -> Any:
        body = custom.get_namespaced_custom_object(
            "modeldepot.dev", "v1alpha1", namespace, "modelartifacts", name
        )
        status = body.get("status") or {}
        return status if status.get("phase") in ("Ready", "Failed") else None

    try:
        return wait_until(finished, timeout=240, interval=2, what=f"{name} to finish")
    except AssertionError:
        described = real_node.kubectl("-n", jobs_namespace, "describe", "pods,jobs")
        raise AssertionError(described.stdout[-4000:]) from None


def forward_drops() -> int:
    out = subprocess.run(
        ["iptables", "-w", "-t", "filter", "-L", realnode.CHAIN_FORWARD, "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if line.split())


def probe_pod(name: str, image: str, **overrides: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "probe",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["hello from a real container"],
        "env": [
            {"name": "PROBE_EXPECT_UID", "value": "65532"},
            {"name": "PROBE_APISERVER", "value": "1"},
            # an address off this machine: the FORWARD drop must stop it
            {"name": "PROBE_EGRESS", "value": "192.0.2.123:443"},
        ],
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": {realnode.LABEL: "true"},
        "tolerations": [{**realnode.TAINT, "operator": "Equal"}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    spec.update(overrides)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_node_is_ready_real_and_kept_apart(real_node: RealNodeHandle) -> None:
    node = real_node.core.read_node(realnode.NODE_NAME)
    assert node.status.node_info.kubelet_version.startswith("v1.")
    assert node.status.node_info.container_runtime_version.startswith("containerd://2.")
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert node.metadata.labels[realnode.LABEL] == "true"
    taints = [(t.key, t.value, t.effect) for t in node.spec.taints or []]
    # fast-tier pods (and node-local artifacts without a toleration) stay off the real node
    assert taints == [(realnode.LABEL, "true", "NoSchedule")], taints


def test_pod_runs_restricted_to_completion_and_kubectl_logs_reads_it(
    real_node: RealNodeHandle, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    image = realnode.image_ref("probe")
    # the namespace really enforces "restricted": a root pod is refused at admission
    root_pod = probe_pod("root", image, securityContext={})
    refused = real_node.kubectl("-n", ns, "apply", "--dry-run=server", "-f", "-", input=json.dumps(root_pod))
    assert refused.returncode != 0 and "restricted" in refused.stderr, refused.stderr

    drops_before = forward_drops()
    created = real_node.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(probe_pod("probe", image)))
    assert created.returncode == 0, created.stderr

    def finished() -> Any:
        pod = real_node.core.read_namespaced_pod("probe", ns)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = wait_until(finished, timeout=90, what="the probe pod to finish")
    logs = real_node.kubectl("-n", ns, "logs", "probe")
    assert logs.returncode == 0, (
        f"{logs.stderr.strip()} (an API server started without --kubelet-client-certificate, i.e."
        " before localdev.cluster passed it, cannot talk to kubelets: restart that control plane)"
    )
    print(logs.stdout, file=sys.stderr)
    assert pod.status.phase == "Succeeded", (pod.status, logs.stdout)
    assert pod.spec.node_name == realnode.NODE_NAME
    assert pod.status.pod_ip.startswith(realnode.POD_SUBNET.rsplit(".", 1)[0] + ".")
    status = pod.status.container_statuses[0]
    assert status.state.terminated.exit_code == 0
    assert status.image_id.startswith("sha256:") or "@sha256:" in status.image_id, status.image_id
    lines = logs.stdout.splitlines()
    assert "probe: running as uid=65532 gid=65532" in lines
    assert any(line.startswith("probe: ok: root filesystem is read-only") for line in lines), lines
    assert any(line.startswith("probe: ok: API server through the kubernetes service: v1.") for line in lines)
    assert any(line.startswith("probe: ok: no route off the machine") for line in lines), lines
    assert "hello from a real container" in lines
    assert not any("FAIL" in line for line in lines), lines
    # off the machine: not routed at all while net.ipv4.ip_forward is 0, else dropped in FORWARD
    forwarding = realnode.sysctl_path("net.ipv4.ip_forward").read_text().strip() == "1"
    assert not forwarding or forward_drops() > drops_before, "egress was forwarded, not dropped"


IMAGE_ARCHIVE = Path(os.environ.get("MODELDEPOT_CACHE", Path.home() / ".cache" / "modeldepot")) / "image"
CHART = Path(__file__).resolve().parents[2] / "charts" / "modeldepot"


@pytest.mark.usefixtures("our_image")
def test_the_charts_operator_runs_in_our_image_as_uid_65532_read_only(
    real_node: RealNodeHandle, restricted_namespace: str
) -> None:
    """`make image`'s image under the real kubelet, installed by the chart into a `restricted`
    namespace: the operator starts as uid 65532 with a read-only root and its probes pass."""
    ns = restricted_namespace
    with chart_installed(real_node, "e2e", ns, *ON_THE_REAL_NODE):

        def ready() -> Any:
            pods = real_node.core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/instance=e2e"
            ).items
            for pod in pods:
                conditions = {c.type: c.status for c in pod.status.conditions or []}
                if conditions.get("Ready") == "True":
                    return pod
            return None

        try:
            pod = wait_until(ready, timeout=180, interval=2, what="the operator pod to be Ready (probes)")
        except AssertionError:
            described = real_node.kubectl("-n", ns, "describe", "pods")
            logs = real_node.kubectl("-n", ns, "logs", "-l", "app.kubernetes.io/instance=e2e", "--tail=50")
            raise AssertionError(f"{described.stdout[-3000:]}\n{logs.stdout}{logs.stderr}") from None
        assert pod.spec.node_name == realnode.NODE_NAME
        status = pod.status.container_statuses[0]
        assert status.ready and status.restart_count == 0, status
        container = pod.spec.containers[0]
        assert container.security_context.read_only_root_filesystem is True
        assert (
            pod.spec.security_context.run_as_user == 65532 or container.security_context.run_as_user == 65532
        )
        logs = real_node.kubectl("-n", ns, "logs", pod.metadata.name)
        assert logs.returncode == 0, logs.stderr
        print(logs.stdout[-2000:], file=sys.stderr)
        name = pod.metadata.name
        whoami = real_node.kubectl(
            "-n", ns, "exec", name, "--", "python", "-c", "import os; print(os.getuid())"
        )
        assert whoami.stdout.strip() == "65532", (whoami.stdout, whoami.stderr)
        touch = real_node.kubectl("-n", ns, "exec", name, "--", "touch", "/opt/x")
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch.stderr


def _bound_claim(real_node: RealNodeHandle, ns: str, directory: Path) -> None:
    """A 1Gi claim bound to a hostPath volume on the real node (no provisioner runs there),
    writable by the fetcher's uid (fsGroup does not apply to hostPath)."""
    directory.mkdir(parents=True)
    os.chown(directory, 65532, 65532)
    pv_name = f"rn-{ns}"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(directory), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": "models"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [realnode.NODE_NAME]}
                            ]
                        }
                    ]
                }
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    for manifest in (volume, claim):
        applied = real_node.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        assert applied.returncode == 0, applied.stderr


@pytest.mark.usefixtures("our_image")
def test_a_claim_artifact_downloads_in_our_image_on_the_real_node(
    real_node: RealNodeHandle, restricted_namespace: str, bridge_hub: Any, tmp_path: Path
) -> None:
    """The chart's operator (our image) downloads a repo from the Hub emulator into a claim, with
    the fetch pod in our image under the real kubelet, in a `restricted` namespace; the bytes on
    disk match the digest in status."""
    hub = bridge_hub
    ns = restricted_namespace
    # the fetch pod has no toleration for the real node's taint: keep it off the pod-runner nodes
    # for this test by cordoning them, and lift the taint (both restored at the end)
    others = [
        n.metadata.name for n in real_node.core.list_node().items if n.metadata.name != realnode.NODE_NAME
    ]
    taint = f"{realnode.LABEL}=true:NoSchedule"
    for name in others:
        real_node.kubectl("cordon", name)
    real_node.kubectl("taint", "node", realnode.NODE_NAME, f"{taint}-")
    try:
        hub.add_repo_from_files("org/tiny", {"model.safetensors": (3_000_000, 1), "config.json": b"{}"})
        allow = f"policy.allowedEndpoints={{{hub.url}}}"
        volume_dir = tmp_path / "volume"
        _bound_claim(real_node, ns, volume_dir)
        artifact = {
            "apiVersion": "modeldepot.dev/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": "tiny", "namespace": ns},
            "spec": {
                "source": {"huggingFace": {"repo": "org/tiny", "endpoint": hub.url}},
                "storage": {"persistentVolumeClaim": {"claimName": "models"}},
            },
        }
        with chart_installed(real_node, "dl", ns, "--set", allow):
            assert real_node.kubectl("apply", "-f", "-", input=json.dumps(artifact)).returncode == 0
            status = finished_artifact(real_node, ns, "tiny", jobs_namespace=ns)
            _check_claim_download(real_node, ns, status, volume_dir)
    finally:
        real_node.kubectl("delete", "pv", f"rn-{ns}", "--wait=false")
        real_node.kubectl("taint", "node", realnode.NODE_NAME, taint, "--overwrite")
        for name in others:
            real_node.kubectl("uncordon", name)


def _check_claim_download(real_node: RealNodeHandle, ns: str, status: Any, volume_dir: Path) -> None:
    from support import files_digest

    assert status["phase"] == "Ready", status
    assert status["digest"] == files_digest(volume_dir / "tiny")
    pods = real_node.core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=modeldepot-fetcher")
    (pod,) = pods.items
    assert pod.spec.node_name == realnode.NODE_NAME
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    fetch_logs = real_node.kubectl("-n", ns, "logs", pod.metadata.name)
    assert "published" in fetch_logs.stderr + fetch_logs.stdout, fetch_logs.stdout[-2000:]
    real_node.kubectl("-n", ns, "delete", "ma", "tiny", "--timeout=120s")
    assert not (volume_dir / "tiny").exists()


@pytest.mark.usefixtures("our_image")
def test_a_node_local_artifact_lands_in_the_real_host_path(
    real_node: RealNodeHandle, restricted_namespace: str, bridge_hub: Any, tmp_path: Path
) -> None:
    """Node-local under a real kubelet: the Job runs in the operator's (privileged) namespace, the
    root `prepare` step with only CHOWN/DAC_OVERRIDE creates the directories in the real host path,
    the fetcher (uid 65532) publishes there, and the tenant namespace stays `restricted`."""
    from support import files_digest

    hub, tenant = bridge_hub, restricted_namespace
    home = f"rn-op-{uuid.uuid4().hex[:6]}"
    real_node.core.create_namespace(
        {"metadata": {"name": home, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    )
    root = tmp_path / "node-root"  # a real directory of this machine: the node's disk
    hub.add_repo_from_files("org/local", {"model.safetensors": (2_000_000, 2), "config.json": b"{}"})
    values = (
        "--set", f"rbac.namespaces={{{tenant}}}",
        "--set", f"policy.allowedEndpoints={{{hub.url}}}",
        "--set", f"policy.nodeLocal.roots={{{root}}}",
        "--set", f"policy.nodeLocal.tolerationKeys={{{realnode.LABEL}}}",
        *ON_THE_REAL_NODE,
    )  # fmt: skip
    artifact = {
        "apiVersion": "modeldepot.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "local", "namespace": tenant},
        "spec": {
            "source": {"huggingFace": {"repo": "org/local", "endpoint": hub.url}},
            "storage": {
                "nodeLocal": {
                    "path": str(root),
                    "nodeSelector": {realnode.LABEL: "true"},
                    "tolerations": [{"key": realnode.LABEL, "operator": "Exists", "effect": "NoSchedule"}],
                }
            },
        },
    }
    try:
        with chart_installed(real_node, "nl", home, *values):
            assert real_node.kubectl("apply", "-f", "-", input=json.dumps(artifact)).returncode == 0
            status = finished_artifact(real_node, tenant, "local", jobs_namespace=home)
            assert status["phase"] == "Ready", status
            published = root / tenant / "local"
            assert published.is_symlink()
            assert status["digest"] == files_digest(published)
            assert (root / ".modeldepot").stat().st_uid == 65532  # created by prepare, handed to the fetcher
            assert not real_node.core.list_namespaced_pod(tenant).items, "no pod in the tenant's namespace"
            real_node.kubectl("-n", tenant, "delete", "ma", "local", "--timeout=120s")
            assert not published.exists() and not published.is_symlink()
    finally:
        real_node.core.delete_namespace(home, propagation_policy="Background")


# last: it takes the node down
def test_down_leaves_the_host_as_it_found_it(real_node: RealNodeHandle) -> None:
    if not real_node.started_here:
        pytest.skip("the real node was already up before this module: not ours to take down")
    # a pod still running at `down`: its container, sandbox, netns, mounts and cgroups must go too
    ns = f"rn-{uuid.uuid4().hex[:8]}"
    real_node.core.create_namespace({"metadata": {"name": ns, "labels": RESTRICTED}})
    wait_until(
        lambda: any(
            sa.metadata.name == "default" for sa in real_node.core.list_namespaced_service_account(ns).items
        ),
        timeout=30,
        what="default ServiceAccount",
    )
    sleeper = probe_pod("sleeper", realnode.image_ref("pause"))
    sleeper["spec"]["containers"][0].pop("args")
    sleeper["spec"]["restartPolicy"] = "Always"
    assert real_node.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(sleeper)).returncode == 0
    wait_until(
        lambda: real_node.core.read_namespaced_pod("sleeper", ns).status.phase == "Running",
        timeout=60,
        what="the sleeper pod to run",
    )
    during = host_snapshot(real_node.node)
    assert during["bridge"] and during["mounts"] and during["cgroups"] and during["shims"], during

    problems = real_node.node.down()
    assert problems == []
    after = host_snapshot(real_node.node)
    changed = {
        key: (real_node.before[key], after[key]) for key in after if after[key] != real_node.before[key]
    }
    assert not changed, changed
    names = [n.metadata.name for n in real_node.core.list_node().items]
    assert realnode.NODE_NAME not in names
    rbac = client.RbacAuthorizationV1Api(real_node.core.api_client)
    assert realnode.RBAC_BINDING not in [b.metadata.name for b in rbac.list_cluster_role_binding().items]
    real_node.core.delete_namespace(ns, propagation_policy="Background")
