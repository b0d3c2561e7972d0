"""A real node for the local control plane: kubelet + containerd 2.x + runc + CNI, opt-in.

`python -m localdev.realnode up|down|status` (PYTHONPATH=hack). `up` starts the control plane if it
is not running (`localdev.cluster up` reuses a running one), then a containerd and a kubelet of its
own, and registers the Node `md-real-0` next to the pod runner's fake nodes. The binaries and the
two tiny images (pause, probe) come from `hack/build-k8s.sh --real-node`, built once and cached.

Everything private lives under `<cluster dir>/realnode/`: containerd's root, state, sockets and
config; the kubelet's root, certs, config and pod logs; the CNI config and IP leases. What cannot be
private is host state, and `up` records each change before making it, in `realnode/state.json`:

- the pids of containerd and kubelet (and the shims containerd starts, found by their private
  socket address), stopped by pid;
- the bridge `mdreal0` (10.236.0.1/24, pods get 10.236.0.0/24), deleted;
- iptables chains MODELDEPOT-RN-* in nat PREROUTING (the DNAT of the `kubernetes` Service IP to the
  API server on 127.0.0.1), filter INPUT (only DNATed traffic from pods may reach 127.0.0.0/8) and
  filter FORWARD (pod traffic never leaves the machine), deleted with their jump rules;
- sysctls the kubelet changes (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...),
  restored to the recorded values unless another program changed them again since (ip_forward is
  recorded too, but nothing here switches it on: pods only talk on the bridge and to this host);
- host paths the kubelet or containerd create whatever their config says (/var/log/containers,
  /var/lib/cni, ...): removed if `up` found them absent and only our entries are left in them;
- the `kubepods` cgroups the kubelet creates in every v1 hierarchy, removed bottom-up;
- mounts under `realnode/` (container root filesystems, netns, volumes), unmounted;
- the Node object and the ClusterRoleBinding that lets the kubelet act as `system:node`.

`down` undoes exactly that, in reverse, and nothing else. The node is labelled
`modeldepot.dev/real-node=true` and tainted `modeldepot.dev/real-node=true:NoSchedule`, so only
pods that tolerate the taint (and the operator's node-local targets only when their tolerations
say so) land on it; the pod runner's nodes are not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from localdev.cluster import (
    K8S_VERSION,
    REPO_ROOT,
    ClusterState,
    LocalCluster,
    cache_dir,
    free_port,
    pid_alive,
)
from localdev.pki import Pki, ensure_pki, issue

NODE_NAME = "md-real-0"
LABEL = "modeldepot.dev/real-node"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
BRIDGE = "mdreal0"
POD_SUBNET = "10.236.0.0/24"
GATEWAY = "10.236.0.1"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the first address of cluster.SERVICE_CIDR
CNI_NETWORK = "modeldepot-realnode"
CHAIN_DNAT = "MODELDEPOT-RN-DNAT"
CHAIN_INPUT = "MODELDEPOT-RN-INPUT"
CHAIN_FORWARD = "MODELDEPOT-RN-FORWARD"
RBAC_BINDING = "modeldepot:realnode:kubelet"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# sysctls the kubelet sets (protectKernelDefaults: false); ip_forward in case a CNI plugin does
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
# host paths the kubelet, containerd or libcni may create regardless of our private config
# (the kubelet's device plugin socket is always /var/lib/kubelet/device-plugins/kubelet.sock)
# only a kubelet uses these: if absent before `up` (and no other kubelet runs), all of it is ours
KUBELET_ONLY_PATHS = ("/var/lib/kubelet", "/var/log/pods")
HOST_PATHS = (
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/run/nri",
    "/opt/containerd",
    "/etc/cni/net.d",
)


def log(message: str) -> None:
    print(f"[realnode {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bin_dir() -> Path:
    return cache_dir() / "k8s" / f"v{K8S_VERSION}" / "bin"


def images_dir() -> Path:
    return cache_dir() / "k8s" / f"v{K8S_VERSION}" / "images"


def image_ref(name: str) -> str:
    """The reference `hack/build-k8s.sh --real-node` gave image `name` (its tag is a source hash)."""
    tag = (images_dir() / f"{name}.oci.tar.src").read_text().strip()
    return f"localhost/modeldepot/{name}:{tag}"


def ensure_built() -> None:
    needed = [bin_dir() / b for b in ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr")]
    needed += [images_dir() / f"{i}.oci.tar{s}" for i in ("pause", "probe") for s in ("", ".src")]
    if all(p.exists() for p in needed) and shutil.which("runc") and shutil.which("iptables"):
        return
    subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-k8s.sh"), "--real-node"], check=True, stdout=sys.stderr
    )


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the unified v2 one)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return sorted(set(found))


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below root, deepest first."""
    points = []
    prefix = str(root).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(prefix):
            points.append(Path(point))
    return sorted(set(points), key=lambda p: len(p.parts), reverse=True)


@dataclass(frozen=True)
class ImportedImage:
    """One image of an OCI archive: its name, manifest digest and config digest (the image id
    the kubelet reports in a container's `imageID`)."""

    ref: str
    manifest: str
    config: str

    @classmethod
    def read(cls, archive: Path) -> list[ImportedImage]:
        with tarfile.open(archive) as tar:

            def blob(digest: str) -> Any:
                member = tar.extractfile("blobs/" + digest.replace(":", "/"))
                assert member is not None, f"{archive}: no blob {digest}"
                return json.load(member)

            index = tar.extractfile("index.json")
            assert index is not None, f"{archive}: no index.json"
            return [
                cls(
                    ref=entry["annotations"]["org.opencontainers.image.ref.name"],
                    manifest=entry["digest"],
                    config=blob(entry["digest"])["config"]["digest"],
                )
                for entry in json.load(index)["manifests"]
            ]

    def __str__(self) -> str:
        return f"{self.ref} (manifest {self.manifest}, image id {self.config})"


@dataclass
class NodeState:
    """What `up` did to this host, recorded before each change so `down` can undo a partial `up`."""

    cluster_dir: str = ""
    apiserver_port: int = 0
    kubelet_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)  # before `up`
    sysctls_applied: dict[str, str] = field(default_factory=dict)  # once the node was Ready
    absent_paths: list[str] = field(default_factory=list)
    absent_cgroups: list[str] = field(default_factory=list)
    bridge_created: bool = False
    iptables: list[list[str]] = field(default_factory=list)  # jump rules added: [table, *rule]
    chains: list[list[str]] = field(default_factory=list)  # [table, chain]
    api_objects: list[list[str]] = field(default_factory=list)  # [kind, name]

    @classmethod
    def load(cls, path: Path) -> NodeState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))


class RealNode:
    """The real node of one local cluster directory."""

    def __init__(self, cluster_dir: Path | None = None) -> None:
        self.cluster = LocalCluster(cluster_dir)
        self.root = self.cluster.root / "realnode"
        self.state_file = self.root / "state.json"
        self.logs = self.root / "logs"
        self.containerd_dir = self.root / "containerd"
        self.socket = self.root / "containerd.sock"
        self.shim_sockets = self.root / "s"  # short: unix socket paths are limited to 107 bytes
        self.kubelet_dir = self.root / "kubelet"
        self.cni_dir = self.root / "cni"
        self.kubeconfig = self.root / "kubelet.kubeconfig"

    # -- public ---------------------------------------------------------------------------------
    def up(self) -> NodeState:
        started = time.monotonic()
        if os.geteuid() != 0:
            raise RuntimeError("a real node needs root (cgroups, mounts, network namespaces)")
        ensure_built()
        cluster_state = self.cluster.up()
        state = NodeState.load(self.state_file)
        if (
            state
            and len(state.pids) == 2
            and all(pid_alive(p) for p in state.pids.values())
            # a restarted control plane listens on a new port: the kubeconfig and DNAT are stale
            and state.apiserver_port == cluster_state.apiserver_port
        ):
            self._wait_ready(state)
            log(f"already running: node {NODE_NAME}")
            return state
        if state:
            log("a previous real node left state behind; cleaning it up first")
            self.down()
        state = NodeState(cluster_dir=str(self.cluster.root), apiserver_port=cluster_state.apiserver_port)
        self._check_host()
        self.logs.mkdir(parents=True, exist_ok=True)
        self._record_host(state)
        state.save(self.state_file)
        try:
            pki = ensure_pki(self.cluster.root / "pki")
            self._warn_apiserver_flags(cluster_state)
            self._credentials(pki, cluster_state, state)
            self._network(cluster_state, state)
            self._start_containerd(state)
            self._import_images()
            self._start_kubelet(pki, state)
            self._wait_ready(state)
            state.sysctls_applied = {name: sysctl_path(name).read_text().strip() for name in SYSCTLS}
        except BaseException:
            log("start-up failed; undoing what was done (see realnode/logs/)")
            state.save(self.state_file)
            with contextlib.suppress(Exception):
                self.down()
            raise
        state.save(self.state_file)
        log(f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s")
        return state

    def down(self) -> list[str]:
        """Undo what `up` recorded; returns what could not be undone (empty when clean)."""
        state = NodeState.load(self.state_file)
        if state is None:
            log("no real node state; nothing to do")
            return []
        problems: list[str] = []
        api = self._api_or_none()
        kubelet = state.pids.get("kubelet")
        if api is not None and kubelet and pid_alive(kubelet):
            self._drain(api)
        self._stop_pid(state, "kubelet")
        self._kill_remaining_tasks(state)
        self._stop_pid(state, "containerd")
        self._kill_shims()
        # containers whose shim died with a crashed containerd: every process in our kubepods cgroups
        self._kill_cgroup_processes(state)
        if api is not None:
            self._force_delete_pods(api)
            self._delete_api_objects(api, state, problems)
        elif state.api_objects:
            problems.append(f"API server not reachable: left {state.api_objects} in the cluster")
        problems += self._unmount()
        problems += self._remove_cgroups(state)
        self._remove_network(state, problems)
        self._restore_sysctls(state, problems)
        problems += self._remove_host_paths(state)
        for sub in ("containerd", "kubelet", "cni", "runc", "s"):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.root / sub)
        self.state_file.unlink(missing_ok=True)
        for problem in problems:
            log(f"NOT undone: {problem}")
        log("real node down" + ("" if not problems else f" with {len(problems)} problem(s)"))
        return problems

    def status(self) -> dict[str, Any]:
        state = NodeState.load(self.state_file)
        if state is None:
            return {"state": "down"}
        out: dict[str, Any] = {
            "state": "up" if all(pid_alive(p) for p in state.pids.values()) else "degraded",
            "pids": {name: (pid, pid_alive(pid)) for name, pid in state.pids.items()},
            "bridge": Path(f"/sys/class/net/{BRIDGE}").exists(),
        }
        api = self._api_or_none()
        if api is not None:
            with contextlib.suppress(Exception):
                node = api.read_node(NODE_NAME)
                conditions = {c.type: c.status for c in node.status.conditions or []}
                out["node"] = {
                    "ready": conditions.get("Ready"),
                    "kubeletVersion": node.status.node_info.kubelet_version,
                    "containerRuntimeVersion": node.status.node_info.container_runtime_version,
                    "taints": [t.to_dict() for t in node.spec.taints or []],
                }
        return out

    # -- host checks and records ----------------------------------------------------------------
    def _check_host(self) -> None:
        for tool in ("runc", "iptables", "ip", "umount"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} not found; run: bash hack/build-k8s.sh --real-node")
        if not self._cni_bin_dir():
            raise RuntimeError(f"CNI plugins not found in {CNI_BIN_DIRS}")
        for hierarchy in cgroup_hierarchies():
            if (hierarchy / "kubepods").exists():
                raise RuntimeError(
                    f"{hierarchy / 'kubepods'} exists: another kubelet runs (or ran) on this host"
                )
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise RuntimeError(f"network interface {BRIDGE} exists and is not recorded as ours")
        shim_socket = self.shim_sockets / ("x" * 64)
        if len(str(shim_socket)) >= 108:
            raise RuntimeError(f"cluster dir too long for unix sockets ({shim_socket})")

    def _cni_bin_dir(self) -> str | None:
        return next((d for d in CNI_BIN_DIRS if Path(d, "bridge").exists()), None)

    def _record_host(self, state: NodeState) -> None:
        state.sysctls = {name: sysctl_path(name).read_text().strip() for name in SYSCTLS}
        state.absent_paths = [p for p in HOST_PATHS if not os.path.lexists(p)]
        state.absent_cgroups = [str(h / "kubepods") for h in cgroup_hierarchies()]

    def _warn_apiserver_flags(self, cluster_state: ClusterState) -> None:
        pid = cluster_state.pids.get("kube-apiserver")
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(a.startswith(b"--kubelet-client-certificate=") for a in argv):
                log(
                    "the running kube-apiserver predates --kubelet-client-certificate: `kubectl logs/exec`"
                    " on the real node fail until the cluster is restarted (by whoever started it)"
                )

    # -- credentials ----------------------------------------------------------------------------
    def _credentials(self, pki: Pki, cluster_state: ClusterState, state: NodeState) -> None:
        issue(
            pki,
            f"node-{NODE_NAME}",
            common_name=f"system:node:{NODE_NAME}",
            organizations=("system:nodes",),
        )
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{cluster_state.apiserver_port}",
                        "certificate-authority": str(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": NODE_NAME,
                    "user": {
                        "client-certificate": str(pki.cert(f"node-{NODE_NAME}")),
                        "client-key": str(pki.key(f"node-{NODE_NAME}")),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": NODE_NAME}}],
            "current-context": "local",
        }
        self.kubeconfig.write_text(json.dumps(kubeconfig, indent=2))
        self.kubeconfig.chmod(0o600)
        # the cluster authorizes with RBAC only (no Node authorizer): bind the kubelet role to this node
        api = self._api()
        rbac = client.RbacAuthorizationV1Api(api.api_client)
        state.api_objects.append(["ClusterRoleBinding", RBAC_BINDING])
        state.save(self.state_file)
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": RBAC_BINDING, "labels": {LABEL: "true"}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:node",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"system:node:{NODE_NAME}"}
            ],
        }
        try:
            rbac.create_cluster_role_binding(body)
        except ApiException as error:
            if error.status != 409:
                raise

    # -- network --------------------------------------------------------------------------------
    def _iptables_add(
        self, state: NodeState, table: str, parent: str, chain: str, rules: list[list[str]]
    ) -> None:
        state.chains.append([table, chain])
        state.save(self.state_file)
        run("iptables", "-w", "-t", table, "-N", chain)
        for rule in rules:
            run("iptables", "-w", "-t", table, "-A", chain, *rule)
        jump = ["-i", BRIDGE, "-j", chain] if parent != "FORWARD" else ["-j", chain]
        state.iptables.append([table, parent, *jump])
        state.save(self.state_file)
        run("iptables", "-w", "-t", table, "-I", parent, "1", *jump)

    def _network(self, cluster_state: ClusterState, state: NodeState) -> None:
        state.bridge_created = True
        state.save(self.state_file)
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # pods reach the API server on 127.0.0.1 through a DNAT; only on our bridge (gone with it)
        sysctl_path(f"net.ipv4.conf.{BRIDGE}.route_localnet").write_text("1")
        port = str(cluster_state.apiserver_port)
        self._iptables_add(
            state,
            "nat",
            "PREROUTING",
            CHAIN_DNAT,
            [
                [
                    "-d",
                    f"{KUBERNETES_SERVICE_IP}/32",
                    "-p",
                    "tcp",
                    "--dport",
                    "443",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    f"127.0.0.1:{port}",
                ],
            ],
        )
        # with route_localnet, a pod could otherwise send to any 127.0.0.1 service (CVE-2020-8558)
        self._iptables_add(
            state,
            "filter",
            "INPUT",
            CHAIN_INPUT,
            [["-d", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP"]],
        )
        self._iptables_add(
            state,
            "filter",
            "FORWARD",
            CHAIN_FORWARD,
            [
                ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"],
                ["-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP"],
            ],
        )
        conf_dir = self.cni_dir / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    # the bridge holds the gateway address already (above); isGateway would also
                    # switch on net.ipv4.ip_forward, which nothing here needs
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.cni_dir / "ipam"),
                    },
                }
            ],
        }
        (conf_dir / "10-modeldepot-realnode.conflist").write_text(json.dumps(conflist, indent=2))

    # -- containerd -----------------------------------------------------------------------------
    def _containerd_config(self) -> str:
        d = self.containerd_dir
        runc = shutil.which("runc")
        cni_bin = self._cni_bin_dir()
        return f"""version = 3
root = '{d / "root"}'
state = '{d / "state"}'
temp = '{d / "tmp"}'
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = '{self.socket}'
[ttrpc]
  address = '{self.socket}.ttrpc'
[debug]
  address = ''

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{image_ref("pause")}'
  [plugins.'io.containerd.cri.v1.runtime']
    # runc cannot set oom_score_adj -998 without CAP_SYS_RESOURCE
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{self.root / "runc"}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin}']
      conf_dir = '{self.cni_dir / "net.d"}'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.internal.v1.opt']
    path = '{d / "opt"}'
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '{d / "image-verifier"}'
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '{self.shim_sockets}'
"""

    def _spawn(self, state: NodeState, name: str, argv: list[str]) -> None:
        log_file = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
        )
        log_file.close()
        state.pids[name] = proc.pid
        state.save(self.state_file)

    def _check_alive(self, state: NodeState, name: str) -> None:
        pid = state.pids.get(name)
        if pid and not pid_alive(pid):
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{tail}")

    def _start_containerd(self, state: NodeState) -> None:
        self.containerd_dir.mkdir(parents=True, exist_ok=True)
        config = self.containerd_dir / "config.toml"
        config.write_text(self._containerd_config())
        self._spawn(state, "containerd", [str(bin_dir() / "containerd"), "--config", str(config)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_alive(state, "containerd")
            if self.socket.exists() and self._ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("containerd did not answer on its socket in 30s")

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(str(bin_dir() / "ctr"), "--address", str(self.socket), *args, check=check)

    def image_digest(self, name: str) -> str:
        """The manifest digest of an imported image (what `ctr images ls` shows)."""
        listing = self._ctr("-n", "k8s.io", "images", "ls", f"name=={image_ref(name)}").stdout.splitlines()
        return listing[1].split()[2] if len(listing) > 1 else "(not imported)"

    def import_image(self, archive: Path) -> list[ImportedImage]:
        """Import an OCI archive (e.g. `make image`'s) into the node's containerd (no registry here:
        pods use `imagePullPolicy: Never` or a tag that is already present); returns what it named."""
        self._ctr("-n", "k8s.io", "images", "import", str(archive))
        imported = ImportedImage.read(archive)
        for image in imported:
            log(f"imported {archive.name}: {image}")
        return imported

    def _import_images(self) -> None:
        for name in ("pause", "probe"):
            self._ctr("-n", "k8s.io", "images", "import", str(images_dir() / f"{name}.oci.tar"))
            log(f"imported {image_ref(name)}")

    # -- kubelet --------------------------------------------------------------------------------
    def _kubelet_config(self, pki: Pki, state: NodeState) -> dict[str, Any]:
        off = "0%"
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this host has cgroup v1 (hybrid)
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "imageServiceEndpoint": f"unix://{self.socket}",
            "address": GATEWAY,
            "port": state.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "failSwapOn": False,
            "podLogsDir": str(self.kubelet_dir / "pod-logs"),
            "evictionHard": {
                "memory.available": off,
                "nodefs.available": off,
                "nodefs.inodesFree": off,
                "imagefs.available": off,
                "imagefs.inodesFree": off,
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "registerWithTaints": [TAINT],
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s",
        }

    def _start_kubelet(self, pki: Pki, state: NodeState) -> None:
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        state.kubelet_port = free_port()
        config = self.kubelet_dir / "config.json"
        config.write_text(json.dumps(self._kubelet_config(pki, state), indent=2))
        self._spawn(
            state,
            "kubelet",
            [
                str(bin_dir() / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.kubelet_dir / 'root'}",
                f"--cert-dir={self.kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                f"--node-labels={LABEL}=true",
                "--v=1",
            ],
        )

    def _wait_ready(self, state: NodeState, timeout: float = 120) -> None:
        api = self._api()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in state.pids:
                self._check_alive(state, name)
            try:
                node = api.read_node(NODE_NAME)
            except ApiException as error:
                if error.status != 404:
                    raise
                time.sleep(0.5)
                continue
            if ["Node", NODE_NAME] not in state.api_objects:
                state.api_objects.append(["Node", NODE_NAME])
                state.save(self.state_file)
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            taints = [t.to_dict() for t in node.spec.taints or []]
            if ready:
                # no node lifecycle controller runs here: clear the not-ready taint as it would
                kept = [
                    {k: v for k, v in t.items() if v is not None}
                    for t in taints
                    if not t["key"].startswith("node.kubernetes.io/not-ready")
                ]
                if len(kept) != len(taints):
                    api.patch_node(NODE_NAME, {"spec": {"taints": kept}})
                    log("removed the node.kubernetes.io/not-ready taint")
                return
            time.sleep(0.5)
        raise TimeoutError(f"node {NODE_NAME} not Ready after {timeout}s; see {self.logs / 'kubelet.log'}")

    # -- API ------------------------------------------------------------------------------------
    def _api(self) -> Any:
        api_client = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        return client.CoreV1Api(api_client)

    def _api_or_none(self) -> Any:
        if self.cluster.status() != "up":
            return None
        try:
            return self._api()
        except Exception:
            return None

    def _drain(self, api: Any) -> None:
        """Delete the node's pods while the kubelet still runs, so it stops them and their sandboxes
        (CNI DEL releases their addresses) as it would on any node."""
        pods = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items
        for pod in pods:
            with contextlib.suppress(Exception):
                api.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items
            tasks = (
                self._ctr("-n", "k8s.io", "tasks", "ls", "-q", check=False) if self.socket.exists() else None
            )
            if not left and (tasks is None or tasks.returncode != 0 or not tasks.stdout.strip()):
                return
            time.sleep(0.5)
        log("pods or containers still running on the node after 60s; killing what is left")

    def _force_delete_pods(self, api: Any) -> None:
        """Pods still bound to the node once its kubelet is gone (it crashed, or a controller
        recreated them): nothing runs them any more, remove the objects."""
        for pod in api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items:
            with contextlib.suppress(ApiException):
                api.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)

    def _delete_api_objects(self, api: Any, state: NodeState, problems: list[str]) -> None:
        rbac = client.RbacAuthorizationV1Api(api.api_client)
        # the Node, even if `up` failed before recording it (the kubelet may have registered it)
        objects = {("Node", NODE_NAME), *((k, n) for k, n in state.api_objects)}
        for kind, name in sorted(objects):
            try:
                if kind == "Node":
                    api.delete_node(name)
                else:
                    rbac.delete_cluster_role_binding(name)
            except ApiException as error:
                if error.status != 404:
                    problems.append(f"delete {kind} {name}: {error.reason}")

    # -- teardown -------------------------------------------------------------------------------
    def _stop_pid(self, state: NodeState, name: str, timeout: float = 20) -> None:
        pid = state.pids.get(name)
        if not pid or not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if pid_alive(pid):
            log(f"{name} (pid {pid}) ignored SIGTERM; killing")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _kill_remaining_tasks(self, state: NodeState) -> None:
        if not (state.pids.get("containerd") and pid_alive(state.pids["containerd"])):
            return
        tasks = self._ctr("-n", "k8s.io", "tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self._ctr("-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            for _ in range(50):
                if self._ctr("-n", "k8s.io", "tasks", "delete", task, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        containers = self._ctr("-n", "k8s.io", "containers", "ls", "-q", check=False).stdout.split()
        for container in containers:
            self._ctr("-n", "k8s.io", "containers", "rm", container, check=False)

    def _our_shims(self) -> list[int]:
        """Shim processes of our containerd: their command line names our private socket."""
        ours = []
        wanted = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and wanted in argv:
                    ours.append(int(entry.name))
        return ours

    def _kill_shims(self) -> None:
        shims = self._our_shims()
        for pid in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in shims) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _kill_cgroup_processes(self, state: NodeState) -> None:
        pids: set[int] = set()
        for top in map(Path, state.absent_cgroups):
            for procs in top.rglob("cgroup.procs") if top.exists() else ():
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pids:
            log(f"killed {len(pids)} container process(es) left in the kubepods cgroups")

    def _unmount(self) -> list[str]:
        problems = []
        for point in mounts_under(self.root):
            if run("umount", str(point), check=False).returncode != 0:
                result = run("umount", "-l", str(point), check=False)
                if result.returncode != 0:
                    problems.append(f"umount {point}: {result.stderr.strip()}")
        return problems

    def _remove_cgroups(self, state: NodeState) -> list[str]:
        problems = []
        for top in map(Path, state.absent_cgroups):
            if not top.exists():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for cgroup in [*dirs, top]:
                for attempt in range(50):
                    try:
                        cgroup.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as error:
                        if attempt == 49:
                            problems.append(f"rmdir {cgroup}: {error}")
                        time.sleep(0.1)
        return problems

    def _remove_network(self, state: NodeState, problems: list[str]) -> None:
        for table, *rule in reversed(state.iptables):
            parent, *jump = rule
            while run("iptables", "-w", "-t", table, "-C", parent, *jump, check=False).returncode == 0:
                result = run("iptables", "-w", "-t", table, "-D", parent, *jump, check=False)
                if result.returncode != 0:
                    problems.append(f"iptables -t {table} -D {parent} {' '.join(jump)}: {result.stderr}")
                    break
        for table, chain in reversed(state.chains):
            if run("iptables", "-w", "-t", table, "-S", chain, check=False).returncode != 0:
                continue
            run("iptables", "-w", "-t", table, "-F", chain, check=False)
            result = run("iptables", "-w", "-t", table, "-X", chain, check=False)
            if result.returncode != 0:
                problems.append(f"iptables -t {table} -X {chain}: {result.stderr.strip()}")
        if state.bridge_created and Path(f"/sys/class/net/{BRIDGE}").exists():
            result = run("ip", "link", "del", BRIDGE, check=False)
            if result.returncode != 0:
                problems.append(f"ip link del {BRIDGE}: {result.stderr.strip()}")

    def _restore_sysctls(self, state: NodeState, problems: list[str]) -> None:
        for name, value in state.sysctls.items():
            path = sysctl_path(name)
            try:
                current = path.read_text().strip()
                applied = state.sysctls_applied.get(name)
                if current == value:
                    continue
                if applied is not None and current != applied:
                    # changed again after our start-up, by someone else: theirs now, not ours to undo
                    log(f"{name} = {current} was set by another program since up; left as is")
                    continue
                path.write_text(value)
                log(f"restored {name} = {value}")
            except OSError as error:
                problems.append(f"sysctl {name}={value}: {error}")

    @staticmethod
    def our_cni_results(directory: Path) -> list[Path]:
        """libcni's cached results of our sandboxes: `<our network>-<sandbox id>-eth0` and the
        `cni-loopback-<sandbox id>-lo` beside it (any other CNI user's files stay)."""
        if not directory.is_dir():
            return []
        ours = [p for p in directory.iterdir() if p.name.startswith(CNI_NETWORK + "-")]
        sandboxes = {p.name.removeprefix(CNI_NETWORK + "-").split("-")[0] for p in ours}
        ours += [directory / f"cni-loopback-{s}-lo" for s in sandboxes]
        return sorted(p for p in set(ours) if p.exists())

    def _remove_host_paths(self, state: NodeState) -> list[str]:
        """Remove host paths that were absent before `up`, but only our entries in them: another
        program may have started using the same path since."""
        problems = []
        pod_logs = str(self.kubelet_dir / "pod-logs")
        for raw in state.absent_paths:
            top = Path(raw)
            if not top.exists():
                continue
            if raw in KUBELET_ONLY_PATHS:
                shutil.rmtree(top, ignore_errors=True)
                if top.exists():
                    problems.append(f"could not remove {top}")
                continue
            for result in self.our_cni_results(top / "results"):
                result.unlink()  # libcni's cache: /var/lib/cni/results/<network>-<id>-<if>
            for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_symlink() and os.readlink(path).startswith(pod_logs):
                    path.unlink()  # /var/log/containers/<pod>_<ns>_<container>-<id>.log
                elif path.is_dir() and not path.is_symlink():
                    with contextlib.suppress(OSError):
                        path.rmdir()  # only if empty
            try:
                top.rmdir()
            except OSError:
                left = sorted(str(p) for p in top.rglob("*") if not p.is_dir())
                if any(os.path.islink(p) and os.readlink(p).startswith(pod_logs) for p in left):
                    problems.append(f"could not remove our entries in {top}: {left[:5]}")
                else:  # another program started using the path meanwhile: leave it to that program
                    log(f"{top} appeared during up and now holds others' files; left in place: {left[:5]}")
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.realnode", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--cluster-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    node = RealNode(args.cluster_dir)
    if args.command == "up":
        node.up()
        log(f"try: kubectl --kubeconfig {node.cluster.kubeconfig} get node {NODE_NAME} -o wide")
    elif args.command == "down":
        return 1 if node.down() else 0
    else:
        status = node.status()
        print(json.dumps(status, indent=2))
        return 0 if status.get("state") == "up" else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
