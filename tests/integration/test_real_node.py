"""A real node (kubelet + containerd + runc + CNI, localdev.realnode) runs Model Depot as users run it.

Runs when MODELDEPOT_REAL_NODE=1, as `make test` (through `make e2e`) sets it: it needs root, the
binaries `hack/build-k8s.sh --real-node` builds once and `make image`'s archive, and changes host
state that `down` restores. The node joins the cluster in MODELDEPOT_REAL_NODE_CLUSTER_DIR, else
the default local cluster (.cluster/).

In order: the node and a restricted probe pod; the chart's operator in our image with claim
artifacts in a `restricted` namespace (one install for the class: download, delete mid-download,
operator pod killed mid-download, kube-apiserver outage mid-download); a node-local artifact in a
real host path; the README's quick start run verbatim; last, if this module brought the node (or
the cluster) up, it takes it down again and checks that the host is as it found it. One image
import and one Hub emulator on the bridge serve the whole module (docs/testing.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from support import RESTRICTED, Artifacts, ClusterHandle, files_digest, fresh_namespace, wait_until

from localdev import realnode
from localdev.cluster import LocalCluster, pid_alive

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


def announce(config: pytest.Config, line: str) -> None:
    """A line in pytest's own output, captured or not (`make e2e` runs without -s): what was under test."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line, file=sys.stderr)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="module")
def real_node(pytestconfig: pytest.Config) -> Iterator[RealNodeHandle]:
    cluster_dir = os.environ.get("MODELDEPOT_REAL_NODE_CLUSTER_DIR")
    node = realnode.RealNode(Path(cluster_dir) if cluster_dir else None)
    cluster_was_up = node.cluster.status() == "up"
    node_was_up = node.status().get("state") == "up"
    before = host_snapshot(node)
    node.up()
    api = config.new_client_from_config(config_file=str(node.cluster.kubeconfig))
    core = client.CoreV1Api(api)
    info = core.read_node(realnode.NODE_NAME).status.node_info
    announce(
        pytestconfig,
        f"\nreal node {realnode.NODE_NAME}: kubeletVersion={info.kubelet_version} "
        f"containerRuntimeVersion={info.container_runtime_version} "
        f"probe image={realnode.image_ref('probe')}@{node.image_digest('probe')}",
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
    with fresh_namespace(cluster_handle(real_node)) as name:
        yield name


IMAGE_ARCHIVE = Path(os.environ.get("MODELDEPOT_CACHE", Path.home() / ".cache" / "modeldepot")) / "image"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modeldepot"
GROUP, VERSION, PLURAL = "modeldepot.dev", "v1alpha1", "modelartifacts"
FETCHER = "app.kubernetes.io/name=modeldepot-fetcher"


@pytest.fixture(scope="module")
def our_image(real_node: RealNodeHandle, pytestconfig: pytest.Config) -> realnode.ImportedImage:
    """`make image`'s archive, imported into the node's containerd once for the module."""
    archives = sorted(IMAGE_ARCHIVE.glob("modeldepot-*.oci.tar"))
    assert archives, f"no image archive in {IMAGE_ARCHIVE}: run `make image` first (make e2e does)"
    (image,) = real_node.node.import_image(archives[-1])
    announce(pytestconfig, f"\nimage under test: {image}, from {archives[-1]}")
    return image


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


def cluster_handle(real_node: RealNodeHandle) -> ClusterHandle:
    return ClusterHandle(
        real_node.node.cluster.kubeconfig,
        real_node.node.cluster.root,
        real_node.core.api_client,
        realnode.bin_dir(),
    )


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


@contextlib.contextmanager
def real_node_open_to_all(real_node: RealNodeHandle) -> Iterator[None]:
    """Claim fetch pods (and the quick start's operator) carry no toleration for the real node's
    taint: while this holds, the pod runner's nodes are cordoned and the taint is lifted, so the
    real node is the only place they can run. Both are restored afterwards."""
    others = [
        n.metadata.name for n in real_node.core.list_node().items if n.metadata.name != realnode.NODE_NAME
    ]
    taint = f"{realnode.LABEL}=true:NoSchedule"
    for name in others:
        real_node.kubectl("cordon", name)
    real_node.kubectl("taint", "node", realnode.NODE_NAME, f"{taint}-")
    try:
        yield
    finally:
        real_node.kubectl("taint", "node", realnode.NODE_NAME, taint, "--overwrite")
        for name in others:
            real_node.kubectl("uncordon", name)


def static_volume(
    real_node: RealNodeHandle,
    name: str,
    directory: Path,
    *,
    size: str,
    claim: tuple[str, str] | None = None,
    storage_class: str = "",
) -> None:
    """A PersistentVolume on the real node's disk (no provisioner serves that node), optionally
    pre-bound to `claim` (namespace, name); its directory is owned by the fetcher's uid, since
    `fsGroup` does not apply to hostPath volumes. Pods that mount it can only run on the real node."""
    directory.mkdir(parents=True)
    os.chown(directory, 65532, 65532)
    spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": storage_class,
        "hostPath": {"path": str(directory), "type": "Directory"},
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
    }
    if claim is not None:
        spec["claimRef"] = {"namespace": claim[0], "name": claim[1]}
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}
    applied = real_node.kubectl("apply", "-f", "-", input=json.dumps(volume))
    assert applied.returncode == 0, applied.stderr


def operator_pod(real_node: RealNodeHandle, namespace: str, release: str, *, not_uid: str = "") -> Any:
    """The release's operator pod once it is Ready (probes pass); `not_uid`: a pod other than that one."""

    def ready() -> Any:
        pods = real_node.core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={release}"
        ).items
        for pod in pods:
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if conditions.get("Ready") == "True" and pod.metadata.uid != not_uid:
                return pod
        return None

    try:
        return wait_until(ready, timeout=180, interval=1, what="the operator pod to be Ready (probes)")
    except AssertionError:
        described = real_node.kubectl("-n", namespace, "describe", "pods")
        logs = real_node.kubectl(
            "-n", namespace, "logs", "-l", f"app.kubernetes.io/instance={release}", "--tail=50"
        )
        raise AssertionError(f"{described.stdout[-3000:]}\n{logs.stdout}{logs.stderr}") from None


def finished_artifact(
    real_node: RealNodeHandle, namespace: str, name: str, *, jobs_namespace: str, operator_namespace: str = ""
) -> Any:
    """The artifact's status once Ready or Failed; on a timeout, what the status, events, pods, Jobs
    and the operator's log say."""
    custom = client.CustomObjectsApi(real_node.core.api_client)

    def finished() -> Any:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = body.get("status") or {}
        return status if status.get("phase") in ("Ready", "Failed") else None

    try:
        return wait_until(finished, timeout=240, interval=1, what=f"{name} to finish")
    except AssertionError as error:
        status = real_node.kubectl("-n", namespace, "get", "ma", name, "-o", "jsonpath={.status}")
        events = real_node.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp")
        described = real_node.kubectl("-n", jobs_namespace, "describe", "pods,jobs")
        operator = real_node.kubectl(
            "-n",
            operator_namespace or namespace,
            "logs",
            "-l",
            "app.kubernetes.io/name=modeldepot",
            "--tail=80",
        )
        raise AssertionError(
            f"{error}\nstatus: {status.stdout}\nevents:\n{events.stdout[-2000:]}\n"
            f"pods and jobs:\n{described.stdout[-3000:]}\noperator:\n{operator.stdout[-6000:]}{operator.stderr}"
        ) from None


def delete_all_artifacts(real_node: RealNodeHandle, namespace: str) -> None:
    """Teardown: delete the namespace's artifacts while their operator still runs; finalizers that
    did not complete in time are removed so the namespace can go (the test has failed by then)."""
    if real_node.kubectl("-n", namespace, "delete", "ma", "--all", "--timeout=120s").returncode == 0:
        return
    custom = client.CustomObjectsApi(real_node.core.api_client)
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                item["metadata"]["name"],
                {"metadata": {"finalizers": None}},
            )


def hub_digest(hub: Any, repo: str) -> str:
    """The digest the repo's files must have, from what the Hub advertises (independent of the
    fetcher and of the bytes on disk): sha256 over sorted "path<TAB>size<TAB>sha256<LF>" lines."""
    files = hub.repo_files(repo)
    lines = sorted((p.encode(), f"{p}\t{f['size']}\t{f['sha256']}\n") for p, f in files.items())
    return "sha256:" + hashlib.sha256("".join(line for _, line in lines).encode()).hexdigest()


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


# ------------------------------------------------------------------ a tenant under the chart's operator


@dataclass
class Tenant:
    """One `restricted` namespace holding the chart's operator (our image, on the real node), a
    claim `models` on the real node's disk at `volume`, and the artifacts of the tests below."""

    namespace: str
    release: str
    volume: Path
    hub: Any
    artifacts: Artifacts

    def apply(self, name: str, repo: str) -> None:
        """A ModelArtifact of `repo` (on the bridge Hub) at `<claim>/<name>`."""
        spec = {
            "source": {"huggingFace": {"repo": repo, "endpoint": self.hub.url}},
            "storage": {"persistentVolumeClaim": {"claimName": "models"}},
        }
        self.artifacts.apply(name, spec)

    def fetch_jobs(self, name: str) -> list[dict[str, Any]]:
        return [
            j for j in self.artifacts.jobs() if j["metadata"]["labels"]["modeldepot.dev/artifact"] == name
        ]

    def fetch_pods(self, name: str) -> list[dict[str, Any]]:
        return [
            p for p in self.artifacts.pods() if p["metadata"]["labels"]["modeldepot.dev/artifact"] == name
        ]

    def staged_bytes(self, name: str) -> int:
        """Bytes in the artifact's staging directory on the node's disk (what the fetcher wrote)."""
        staging = self.volume / ".modeldepot" / "staging" / name
        return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) if staging.exists() else 0


@pytest.fixture(scope="class")
def tenant(
    real_node: RealNodeHandle,
    our_image: realnode.ImportedImage,
    bridge_hub: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tenant]:
    """One chart install shared by the class's tests (the operator and the claim in one `restricted`
    namespace); everything is deleted at the end of the class, before the node goes down."""
    handle = cluster_handle(real_node)
    volume = tmp_path_factory.mktemp("claim") / "volume"
    allow = f"policy.allowedEndpoints={{{bridge_hub.url}}}"
    with fresh_namespace(handle) as ns, real_node_open_to_all(real_node):
        pv = f"rn-{ns}"
        static_volume(real_node, pv, volume, size="1Gi", claim=(ns, "models"))
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models", "namespace": ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        try:
            handle.kubectl("apply", "-f", "-", input=json.dumps(claim))
            with chart_installed(real_node, "md", ns, "--set", allow, *ON_THE_REAL_NODE):
                try:
                    yield Tenant(ns, "md", volume, bridge_hub, Artifacts(handle, ns))
                finally:  # the artifacts the tests left (their finalizers run in parallel)
                    delete_all_artifacts(real_node, ns)
        finally:
            real_node.kubectl("delete", "pv", pv, "--wait=false")


@pytest.mark.usefixtures("our_image")
class TestClaimArtifactsUnderTheChartsOperator:
    """The chart's operator in our image, in a Pod Security `restricted` namespace on the real node;
    claim artifacts there, their fetch pods in our image under the real kubelet."""

    def test_the_operator_runs_in_our_image_as_uid_65532_read_only(
        self, real_node: RealNodeHandle, tenant: Tenant, our_image: realnode.ImportedImage
    ) -> None:
        ns = tenant.namespace
        pod = operator_pod(real_node, ns, tenant.release)
        assert pod.spec.node_name == realnode.NODE_NAME
        status = pod.status.container_statuses[0]
        assert status.ready and status.restart_count == 0, status
        # the very image `make image` built (its config digest is the image id the kubelet reports)
        assert status.image_id.endswith(our_image.config) or our_image.manifest in status.image_id, (
            status.image_id,
            our_image,
        )
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

    def test_a_claim_artifact_downloads_and_kubectl_logs_shows_the_fetcher(
        self, real_node: RealNodeHandle, tenant: Tenant
    ) -> None:
        """A fetch pod in our image writes the repo into the claim; the bytes on disk match the
        Hub's hashes and the digest in status; `kubectl logs` shows its progress lines; deleting the
        artifact removes the files."""
        tenant.hub.add_repo_from_files(
            "org/tiny", {"model.safetensors": (3_000_000, 1), "config.json": b"{}"}
        )
        tenant.apply("tiny", "org/tiny")
        status = finished_artifact(real_node, tenant.namespace, "tiny", jobs_namespace=tenant.namespace)
        assert status["phase"] == "Ready", status
        assert status["digest"] == files_digest(tenant.volume / "tiny") == hub_digest(tenant.hub, "org/tiny")
        (pod,) = tenant.fetch_pods("tiny")
        assert pod["spec"]["nodeName"] == realnode.NODE_NAME
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        logs = real_node.kubectl("-n", tenant.namespace, "logs", pod["metadata"]["name"])
        assert logs.returncode == 0, logs.stderr
        lines = logs.stdout.splitlines()
        # the fetcher's final progress line (stderr is no TTY in a pod; a download this short ends
        # before the first periodic line, which the apiserver-outage test below checks)
        assert any(line.startswith("ready: 100% of 3.0 MB") and "2/2 files" in line for line in lines), lines
        assert any("published" in line for line in lines), lines
        tenant.artifacts.delete("tiny", timeout="120s")
        assert not (tenant.volume / "tiny").exists()

    def test_deleting_mid_download_leaves_nothing_behind(
        self, real_node: RealNodeHandle, tenant: Tenant
    ) -> None:
        """Deleting an artifact while its fetch pod downloads (a throttled Hub) completes the
        finalizer and leaves nothing: no Job, no pod, no per-artifact ServiceAccount/Role/RoleBinding,
        no file on the claim (published path, staging, store, owner record)."""
        hub, ns = tenant.hub, tenant.namespace
        repo = "org/deleted"
        hub.add_repo_from_files(repo, {"model.safetensors": (24_000_000, 3), "config.json": b"{}"})
        hub.set_throttle(1_000_000, repo_id=repo)
        try:
            tenant.apply("deleted", repo)
            tenant.artifacts.wait_bytes("deleted", 2_000_000, timeout=120)
            (pod,) = tenant.fetch_pods("deleted")
            assert pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"] == realnode.NODE_NAME
            assert tenant.staged_bytes("deleted") > 0
            status = tenant.artifacts.status("deleted")
            assert status["phase"] == "Downloading", status
            assert status["progress"]["bytesDone"] < status["progress"]["bytesTotal"], status
            selector = "modeldepot.dev/artifact=deleted"
            identity_kinds = (
                "serviceaccounts,roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io"
            )
            owned = real_node.kubectl("-n", ns, "get", identity_kinds, "-l", selector, "-o", "name")
            assert len(owned.stdout.split()) == 3, owned.stdout  # what must go with it

            started = time.monotonic()
            deleted = real_node.kubectl("-n", ns, "delete", "ma", "deleted", "--timeout=120s")
            assert deleted.returncode == 0, deleted.stderr
            print(f"\ndeletion mid-download finalized in {time.monotonic() - started:.1f}s", file=sys.stderr)
            assert tenant.artifacts.get("deleted") is None

            def left() -> list[str]:
                found = real_node.kubectl(
                    "-n", ns, "get", f"jobs,pods,{identity_kinds}", "-l", selector, "-o", "name"
                )
                return found.stdout.split()

            # Jobs and pods are deleted by the finalizer, the identity by the garbage collector
            wait_until(lambda: not left(), timeout=60, what="nothing of the artifact left")
            store = tenant.volume / ".modeldepot"
            owner = store / "owners" / f"{hashlib.sha256(b'deleted').hexdigest()}.json"
            leftovers = [
                p
                for p in (
                    tenant.volume / "deleted",
                    store / "staging" / "deleted",
                    store / "store" / "deleted",
                    owner,
                )
                if p.exists() or p.is_symlink()
            ]
            assert not leftovers, leftovers
        finally:
            hub.set_throttle(None, repo_id=repo)

    def test_the_operator_pod_killed_mid_download_is_replaced_and_the_download_completes(
        self, real_node: RealNodeHandle, tenant: Tenant
    ) -> None:
        """The operator pod is force-deleted while a fetch pod downloads: the fetch Job carries on
        (the operator never downloads), the Deployment's new pod adopts it (the Job's name is a
        function of the artifact and its generation, so it finds the same one) and marks the
        artifact Ready with the Hub's digest. One Job, one pod, never restarted."""
        hub, ns = tenant.hub, tenant.namespace
        repo = "org/survivor"
        hub.add_repo_from_files(repo, {"model.safetensors": (20_000_000, 4), "config.json": b"{}"})
        hub.set_throttle(1_000_000, repo_id=repo)
        try:
            old = operator_pod(real_node, ns, tenant.release)
            tenant.apply("survivor", repo)
            tenant.artifacts.wait_bytes("survivor", 1_000_000, timeout=120)
            (job,) = tenant.fetch_jobs("survivor")
            (pod,) = tenant.fetch_pods("survivor")
            killed = real_node.kubectl(
                "-n", ns, "delete", "pod", old.metadata.name, "--grace-period=0", "--force"
            )
            assert killed.returncode == 0, killed.stderr
            killed_at = time.monotonic()
            new = operator_pod(real_node, ns, tenant.release, not_uid=old.metadata.uid)
            replaced = time.monotonic() - killed_at
            # the new operator came up while the download was still running: it has a Job to adopt
            (running,) = tenant.fetch_jobs("survivor")
            assert running["status"].get("active") == 1, running["status"]
            status = finished_artifact(real_node, ns, "survivor", jobs_namespace=ns)
            assert status["phase"] == "Ready", status
            assert status["digest"] == files_digest(tenant.volume / "survivor") == hub_digest(hub, repo)
            ready = tenant.artifacts.condition("survivor", "Ready")
            assert ready["status"] == "True" and ready["observedGeneration"] == 1, ready
            (after,) = tenant.fetch_jobs("survivor")
            assert after["metadata"]["uid"] == job["metadata"]["uid"]
            (pod_after,) = tenant.fetch_pods("survivor")
            assert pod_after["metadata"]["uid"] == pod["metadata"]["uid"]
            container = pod_after["status"]["containerStatuses"][0]
            assert container["restartCount"] == 0 and container["state"]["terminated"]["exitCode"] == 0
            new_status = real_node.core.read_namespaced_pod(new.metadata.name, ns).status.container_statuses[
                0
            ]
            assert new_status.ready and new_status.restart_count == 0, new_status
            print(f"\nthe new operator pod was Ready {replaced:.1f}s after the kill", file=sys.stderr)
        finally:
            hub.set_throttle(None, repo_id=repo)

    def test_an_apiserver_outage_mid_download_is_ridden_through(
        self, real_node: RealNodeHandle, tenant: Tenant
    ) -> None:
        """The control plane's kube-apiserver is killed (SIGKILL) for 15 s while a fetch pod
        downloads, then started again: the fetcher keeps writing through the outage (its status
        patches fail and are dropped), the kubelet reports the pod's end once the API is back, the
        operator pod reconnects without a restart, and the artifact is Ready with the Hub's digest.
        `kubectl logs` of the fetch pod shows its progress lines over the whole download."""
        hub, ns = tenant.hub, tenant.namespace
        repo = "org/outage"
        hub.add_repo_from_files(repo, {"model.safetensors": (30_000_000, 5), "config.json": b"{}"})
        hub.set_throttle(1_000_000, repo_id=repo)
        cluster = LocalCluster(real_node.node.cluster.root)
        try:
            operator = operator_pod(real_node, ns, tenant.release)
            tenant.apply("outage", repo)
            tenant.artifacts.wait_bytes("outage", 2_000_000, timeout=120)
            (pod,) = tenant.fetch_pods("outage")
            kubelet_pid = realnode.NodeState.load(real_node.node.state_file).pids["kubelet"]  # type: ignore[union-attr]

            cluster.stop_apiserver()
            down_at = time.monotonic()
            try:
                written_before = tenant.staged_bytes("outage")
                time.sleep(15)
                written_during = tenant.staged_bytes("outage") - written_before
            finally:
                cluster.start_apiserver()
            print(f"\nkube-apiserver down for {time.monotonic() - down_at:.1f}s", file=sys.stderr)
            # the download ran on while the API was gone, and is not over yet
            assert written_during > 5_000_000, written_during
            assert tenant.staged_bytes("outage") > 0

            status = finished_artifact(real_node, ns, "outage", jobs_namespace=ns)
            assert status["phase"] == "Ready", status
            assert status["digest"] == files_digest(tenant.volume / "outage") == hub_digest(hub, repo)
            (job,) = tenant.fetch_jobs("outage")
            assert job["status"].get("succeeded") == 1, job["status"]
            (pod_after,) = tenant.fetch_pods("outage")
            assert pod_after["metadata"]["uid"] == pod["metadata"]["uid"]
            container = pod_after["status"]["containerStatuses"][0]
            assert container["restartCount"] == 0 and container["state"]["terminated"]["exitCode"] == 0
            op = real_node.core.read_namespaced_pod(operator.metadata.name, ns)
            assert op.status.container_statuses[0].restart_count == 0, op.status.container_statuses[0]
            assert realnode.NodeState.load(real_node.node.state_file).pids["kubelet"] == kubelet_pid  # type: ignore[union-attr]
            assert pid_alive(kubelet_pid)
            node = real_node.core.read_node(realnode.NODE_NAME)
            assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)

            logs = real_node.kubectl("-n", ns, "logs", pod["metadata"]["name"])
            assert logs.returncode == 0, logs.stderr
            print(logs.stdout[-3000:], file=sys.stderr)
            percents = [
                float(line.split()[1].rstrip("%"))
                for line in logs.stdout.splitlines()
                if line.startswith("downloading: ") and line.split()[1].endswith("%")
            ]
            # every LOG_INTERVAL (5 s) over a ~30 s download: several lines, rising
            assert len(percents) >= 4 and percents == sorted(percents) and percents[-1] > 50, percents
            assert "ready: 100% of 30.0 MB, 2/2 files" in logs.stdout
        finally:
            hub.set_throttle(None, repo_id=repo)


@pytest.mark.usefixtures("our_image")
def test_a_node_local_artifact_lands_in_the_real_host_path(
    real_node: RealNodeHandle, restricted_namespace: str, bridge_hub: Any, tmp_path: Path
) -> None:
    """Node-local under a real kubelet: the Job runs in the operator's (privileged) namespace, the
    root `prepare` step with only CHOWN/DAC_OVERRIDE creates the directories in the real host path,
    the fetcher (uid 65532) publishes there, and the tenant namespace stays `restricted`."""
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
            status = finished_artifact(
                real_node, tenant, "local", jobs_namespace=home, operator_namespace=home
            )
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


# ------------------------------------------------------------------ the README's quick start, verbatim

README = REPO_ROOT / "README.md"
PVC_EXAMPLE = REPO_ROOT / "examples" / "pvc-model.yaml"
CONSUMER_EXAMPLE = REPO_ROOT / "examples" / "consumer-deployment.yaml"
QUICK_START = "## Quick start on a real cluster"


def quick_start_blocks() -> tuple[list[str], str]:
    """The first ```sh block under the quick start heading (its command lines) and the ```yaml
    block after it (the manifest the README shows)."""
    section = README.read_text().split(QUICK_START, 1)[1].split("\n## ", 1)[0]
    sh = section.split("```sh\n", 1)[1].split("```", 1)[0]
    shown = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    commands = [line.strip() for line in sh.splitlines() if line.strip() and not line.strip().startswith("#")]
    return commands, shown


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def served_consumer(image: str, deployment: dict[str, Any]) -> dict[str, Any]:
    """examples/consumer-deployment.yaml's `minilm-server` with only its image and args replaced
    (the lab cannot pull text-embeddings-inference): a Python server in our image that reads every
    file of the model at `--model-id` as the example's uid, prints their digest and then answers
    the example's readiness probe. Mounts, volumes, securityContext and probe stay as written."""
    server = textwrap.dedent(
        """
        import hashlib, http.server, pathlib, signal, sys
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM without a handler
        root = pathlib.Path(sys.argv[1])
        lines = sorted(
            (p.relative_to(root).as_posix(), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != ".modeldepot"
        )
        manifest = "".join(f"{path}\\t{size}\\t{sha}\\n" for path, size, sha in lines)
        print("consumer read", len(lines), "files, digest sha256:" + hashlib.sha256(manifest.encode()).hexdigest(), flush=True)

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

        http.server.HTTPServer(("", int(sys.argv[2])), Health).serve_forever()
        """
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    model_dir, port = args[args.index("--model-id") + 1], args[args.index("--port") + 1]
    container["image"] = image
    container["command"] = ["python", "-c", server, model_dir, port]
    container.pop("args")
    return deployment


@pytest.mark.usefixtures("our_image")
def test_the_readme_quick_start_runs_verbatim(
    real_node: RealNodeHandle, bridge_hub: Any, our_image: realnode.ImportedImage, tmp_path: Path
) -> None:
    """Every command line of the README's "Quick start on a real cluster" runs as written, with
    `kubectl` and `helm` on PATH and KUBECONFIG set, on this one-node cluster (its context's namespace
    is a fresh `restricted` one, as a tenant's kubeconfig would be); the manifest the README shows is
    the one `examples/pvc-model.yaml` applies; `kubectl wait` succeeds; the files on the claim match
    the Hub's digest; the example consumer reads them.

    What the lab lacks, and the only deviations:
    - no internet: the `helm install` line gets `--set fetcher.env.HF_ENDPOINT=<the Hub emulator>`
      (the spec names no endpoint, so the fetcher's default is used; that default is always
      allowed), which serves `sentence-transformers/all-MiniLM-L6-v2` from the MiniLM package in
      the cache. The image needs no flag: the chart's default image is the one `make image` built
      and imported, and `IfNotPresent` finds it;
    - no dynamic provisioner for the real node: a static PersistentVolume on its disk, pre-bound to
      the example's claim `models`. The lab's default StorageClass `local` belongs to the pod
      runner's emulated nodes, so it is un-marked as default while this test runs (restored after);
    - one real node among the pod runner's: they are cordoned and the real node's taint lifted
      (restored after), so the operator and the fetch pod run under the real kubelet;
    - `kubectl get ma -w` never ends: it runs until the artifact's Ready row (or a timeout), and
      its output must show the artifact's rows;
    - a cluster that already ran Model Depot (the fast tier's CRD and `modeldepot-system`): the
      namespace is removed first, and an existing CRD gets Helm's ownership metadata for the
      release so `helm install` adopts it, as Helm documents for existing resources;
    - the consumer (examples/consumer-deployment.yaml, `minilm-server`) runs text-embeddings-inference,
      which the lab cannot pull: it is applied with that image and its args swapped for a reader in
      our image; mounts, volume, user and probe are the example's.
    """
    from localdev.hubemu import MINILM_REPO_ID, minilm_dir

    commands, shown = quick_start_blocks()
    # the README shows what the quick start applies: drift fails here, before any cluster work
    assert documents(shown) == documents(PVC_EXAMPLE.read_text()), (
        "README's quick-start manifest differs from examples/pvc-model.yaml, which its commands apply"
    )
    example_claim, artifact = documents(PVC_EXAMPLE.read_text())
    assert example_claim["kind"] == "PersistentVolumeClaim" and artifact["kind"] == "ModelArtifact"
    name = artifact["metadata"]["name"]
    claim_name = artifact["spec"]["storage"]["persistentVolumeClaim"]["claimName"]
    published = artifact["spec"]["storage"]["persistentVolumeClaim"].get("path", name)
    assert example_claim["metadata"]["name"] == claim_name
    assert any(c.startswith("helm install ") for c in commands), commands
    assert any(c.startswith("kubectl wait ") and f"modelartifact/{name}" in c for c in commands), commands

    hub = bridge_hub
    repo = artifact["spec"]["source"]["huggingFace"]["repo"]
    assert repo == MINILM_REPO_ID
    if not hub.store.get("model", repo):
        hub.add_repo_from_dir(repo, minilm_dir())
    handle = cluster_handle(real_node)
    _without_model_depot(real_node, handle)
    volume = tmp_path / "volume"
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(KUBECTL).parent), str(realnode.bin_dir()), os.environ["PATH"]]),
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
    }
    size = example_claim["spec"]["resources"]["requests"]["storage"]
    with (
        fresh_namespace(handle) as tenant,
        real_node_open_to_all(real_node),
        _only_a_static_volume(real_node, volume, size=size, claim=(tenant, claim_name)),
    ):
        shutil.copy(real_node.node.cluster.kubeconfig, env["KUBECONFIG"])
        context = [KUBECTL, "config", "set-context", "--current", f"--namespace={tenant}"]
        subprocess.run(context, env=env, check=True, capture_output=True, timeout=30)
        try:
            outputs = _run_quick_start(commands, env, hub.url, name)
            status = Artifacts(handle, tenant).status(name)
            assert status["phase"] == "Ready", status
            assert status["digest"] == files_digest(volume / published) == hub_digest(hub, repo)
            watched = outputs[next(c for c in outputs if c.startswith("kubectl get ma "))]
            header, *rows = watched.splitlines()
            assert header.split()[:3] == ["NAME", "PHASE", "PROGRESS"], watched
            assert any(row.split()[:2] == [name, "Ready"] for row in rows), watched
            waited = outputs[next(c for c in outputs if c.startswith("kubectl wait "))]
            assert f"modelartifact.modeldepot.dev/{name} condition met" in waited, outputs
            fetchers = real_node.core.list_namespaced_pod(tenant, label_selector=FETCHER).items
            assert fetchers and all(p.spec.node_name == realnode.NODE_NAME for p in fetchers)
            operators = real_node.core.list_namespaced_pod(
                SYSTEM_NAMESPACE, label_selector="app.kubernetes.io/instance=modeldepot"
            )
            assert [p.spec.node_name for p in operators.items] == [realnode.NODE_NAME]

            _consumer_reads_the_model(env, our_image, status["digest"], len(hub.repo_files(repo)))
            handle.kubectl(
                "-n", tenant, "delete", "deployment", "minilm-server", "--cascade=foreground", "--timeout=60s"
            )
            # deletionPolicy Delete: the files go with the artifact
            handle.kubectl("-n", tenant, "delete", "ma", name, "--timeout=120s")
            assert not (volume / published).exists() and not (volume / published).is_symlink()
        finally:
            delete_all_artifacts(real_node, tenant)
            helm = str(realnode.bin_dir() / "helm")
            uninstall = [helm, "uninstall", "modeldepot", "-n", SYSTEM_NAMESPACE, "--wait"]
            subprocess.run(uninstall, env=env, capture_output=True, timeout=300)
            real_node.kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--wait=false")


SYSTEM_NAMESPACE = "modeldepot-system"  # the quick start's


def _without_model_depot(real_node: RealNodeHandle, handle: ClusterHandle) -> None:
    """The cluster as the quick start expects it: no `modeldepot-system` (the fast tier leaves one
    in the default cluster), and a CRD left by earlier installs or the fast tier handed to the
    release `modeldepot` with Helm's ownership metadata, so that `helm install` adopts it."""
    if real_node.core.list_namespace(field_selector=f"metadata.name={SYSTEM_NAMESPACE}").items:
        handle.kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--timeout=120s")
    crd = "crd/modelartifacts.modeldepot.dev"
    if real_node.kubectl("get", crd).returncode == 0:
        release = (
            "meta.helm.sh/release-name=modeldepot",
            f"meta.helm.sh/release-namespace={SYSTEM_NAMESPACE}",
        )
        handle.kubectl("annotate", "--overwrite", crd, *release)
        handle.kubectl("label", "--overwrite", crd, "app.kubernetes.io/managed-by=Helm")


@contextlib.contextmanager
def _only_a_static_volume(
    real_node: RealNodeHandle, directory: Path, *, size: str, claim: tuple[str, str]
) -> Iterator[None]:
    """No default StorageClass (the lab's `local` one provisions directories for the pod runner's
    nodes, root-owned), and a static volume on the real node pre-bound to the claim; both undone
    afterwards (the volume's directory is the test's tmp_path)."""
    storage = client.StorageV1Api(real_node.core.api_client)
    annotation = "storageclass.kubernetes.io/is-default-class"
    defaults = [
        sc.metadata.name
        for sc in storage.list_storage_class().items
        if (sc.metadata.annotations or {}).get(annotation) == "true"
    ]
    name = f"rn-quickstart-{uuid.uuid4().hex[:6]}"
    try:
        for sc in defaults:
            storage.patch_storage_class(sc, {"metadata": {"annotations": {annotation: "false"}}})
        static_volume(real_node, name, directory, size=size, claim=claim)
        yield
    finally:
        for sc in defaults:
            storage.patch_storage_class(sc, {"metadata": {"annotations": {annotation: "true"}}})
        real_node.kubectl("delete", "pv", name, "--wait=false")  # gone with the claim's namespace


def _consumer_reads_the_model(
    env: dict[str, str], image: realnode.ImportedImage, digest: str, file_count: int
) -> None:
    """examples/consumer-deployment.yaml's `minilm-server` (image swapped, `served_consumer`) rolls
    out in the tenant's namespace and reads every file of the model with the digest in status."""
    consumers = documents(CONSUMER_EXAMPLE.read_text())
    server = next(d for d in consumers if d["metadata"]["name"] == "minilm-server")

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args], input=input, env=env, capture_output=True, text=True, timeout=150
        )

    applied = kubectl("apply", "-f", "-", input=json.dumps(served_consumer(image.ref, server)))
    assert applied.returncode == 0, applied.stderr
    rollout = kubectl("rollout", "status", "deployment/minilm-server", "--timeout=120s")
    logs = kubectl("logs", "deployment/minilm-server")
    assert rollout.returncode == 0, (rollout.stderr, logs.stdout, logs.stderr)
    assert f"consumer read {file_count} files, digest {digest}" in logs.stdout, logs.stdout


def _run_quick_start(commands: list[str], env: dict[str, str], hub_url: str, name: str) -> dict[str, str]:
    """Run each command line as written (bash -c, from the repository root); returns each one's
    output keyed by the line as the README has it. The deviations are the docstring's above."""
    outputs: dict[str, str] = {}
    for key in commands:
        command = key
        print(f"\n$ {command}", file=sys.stderr)
        if command.startswith("helm install "):
            command += f" --set fetcher.env.HF_ENDPOINT={hub_url}"
        if command.split()[:3] == ["kubectl", "get", "ma"] and "-w" in command.split():
            outputs[key] = _watch_until_ready(command, env, name)
            print(outputs[key], file=sys.stderr)
            continue
        ran = subprocess.run(
            ["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        print(ran.stdout + ran.stderr, file=sys.stderr)
        assert ran.returncode == 0, f"{command!r} failed ({ran.returncode}): {ran.stderr}"
        outputs[key] = ran.stdout
    return outputs


def _watch_until_ready(command: str, env: dict[str, str], name: str, timeout: float = 300) -> str:
    """`kubectl get ma -w` until the artifact's Ready (or Failed) row appears; its output so far."""
    lines: list[str] = []
    with subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as watch:
        assert watch.stdout is not None
        timer = threading.Timer(timeout, watch.kill)
        timer.start()
        try:
            for line in watch.stdout:
                lines.append(line.rstrip("\n"))
                if line.split()[:1] == [name] and line.split()[1:2] in (["Ready"], ["Failed"]):
                    break
        finally:
            timer.cancel()
            watch.kill()
    return "\n".join(lines)


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
