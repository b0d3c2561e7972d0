"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, controller-manager, scheduler.

`python -m localdev.cluster up|down|status|env` manages it; state lives under `.cluster/`
(override with MODELDEPOT_CLUSTER_DIR). The binaries come from `hack/build-k8s.sh` (built once and
cached under ~/.cache/modeldepot). Processes are started in their own sessions, recorded by pid in
`.cluster/state.json`, and `down` stops exactly those pids. The kubelet stand-in
(`localdev.podrunner`) runs as one more process and registers the fake nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localdev.pki import Pki, ensure_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = os.environ.get("K8S_VERSION", "1.36.3")
SERVICE_CIDR = "10.0.0.0/24"
CORE_PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "podrunner")


def cache_dir() -> Path:
    return Path(os.environ.get("MODELDEPOT_CACHE", Path.home() / ".cache" / "modeldepot"))


def default_cluster_dir() -> Path:
    return Path(os.environ.get("MODELDEPOT_CLUSTER_DIR", REPO_ROOT / ".cluster"))


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_binaries() -> Path:
    """Build (or reuse) the cached binaries; returns their directory."""
    bin_dir = cache_dir() / "k8s" / f"v{K8S_VERSION}" / "bin"
    needed = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "helm")
    if all((bin_dir / name).exists() for name in needed):
        return bin_dir
    subprocess.run(["bash", str(REPO_ROOT / "hack" / "build-k8s.sh")], check=True, stdout=sys.stderr)
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0); check its state
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class ClusterState:
    """What `up` started: ports and pids. Persisted as .cluster/state.json."""

    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


class LocalCluster:
    """One local control plane rooted at a directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cluster_dir()).resolve()
        self.logs = self.root / "logs"
        self.state_file = self.root / "state.json"
        self.kubeconfig = self.root / "kubeconfig"

    # -- public ---------------------------------------------------------------------------------
    def up(self) -> ClusterState:
        """Start whatever is not running; idempotent."""
        started = time.monotonic()
        state = ClusterState.load(self.state_file)
        if state and self._healthy(state):
            log(f"already running: API server https://127.0.0.1:{state.apiserver_port}")
            return state
        if state:
            self._stop(state)
        bin_dir = ensure_binaries()
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = ensure_pki(self.root / "pki")
        state = ClusterState(etcd_port=free_port(), etcd_peer_port=free_port(), apiserver_port=free_port())
        try:
            self._start_etcd(bin_dir, state)
            self._start_apiserver(bin_dir, pki, state)
            self._write_kubeconfigs(pki, state)
            self._start_controller_manager(bin_dir, pki, state)
            self._start_scheduler(bin_dir, state)
            self._start_podrunner(state)
            self._wait_nodes_ready()
        except BaseException:
            state.save(self.state_file)
            self._stop(state)
            raise
        state.save(self.state_file)
        log(f"cluster up in {time.monotonic() - started:.1f}s")
        return state

    def down(self, *, purge: bool = False) -> None:
        state = ClusterState.load(self.state_file)
        if state:
            self._stop(state)
            self.state_file.unlink(missing_ok=True)
        if purge and self.root.exists():
            shutil.rmtree(self.root)
        log("cluster down" + (" (purged)" if purge else ""))

    def status(self) -> str:
        state = ClusterState.load(self.state_file)
        if not state:
            return "down"
        return "up" if self._healthy(state) else "degraded"

    # -- processes ------------------------------------------------------------------------------
    def _spawn(
        self, state: ClusterState, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        log_file = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
            env={**os.environ, **(env or {})},
        )
        log_file.close()
        state.pids[name] = proc.pid
        state.save(self.state_file)

    def _start_etcd(self, bin_dir: Path, state: ClusterState) -> None:
        client = f"http://127.0.0.1:{state.etcd_port}"
        peer = f"http://127.0.0.1:{state.etcd_peer_port}"
        self._spawn(
            state,
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        self._wait_http(f"{client}/health", "etcd", state)

    def _start_apiserver(self, bin_dir: Path, pki: Pki, state: ClusterState) -> None:
        self._spawn(
            state,
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={state.apiserver_port}",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # kubectl logs/exec on a real kubelet (localdev.realnode); the pod runner's nodes
                # serve no kubelet API either way
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                "--kubelet-preferred-address-types=InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP",
                "--v=1",
            ],
        )
        self._wait_https(state.apiserver_port, pki, state)

    def _start_controller_manager(self, bin_dir: Path, pki: Pki, state: ClusterState) -> None:
        kubeconfig = self.root / "controller-manager.kubeconfig"
        self._spawn(
            state,
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.root / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # node lifecycle would mark the fake nodes NotReady (no kubelet heartbeats)
                "--controllers=*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--v=1",
            ],
        )

    def _start_scheduler(self, bin_dir: Path, state: ClusterState) -> None:
        kubeconfig = self.root / "scheduler.kubeconfig"
        self._spawn(
            state,
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _start_podrunner(self, state: ClusterState) -> None:
        (self.root / "podrunner.ready").unlink(missing_ok=True)
        self._spawn(
            state,
            "podrunner",
            [sys.executable, "-m", "localdev.podrunner", "--cluster-dir", str(self.root)],
            env={
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT / "hack"), os.environ.get("PYTHONPATH")])
                )
            },
        )

    def _stop(self, state: ClusterState) -> None:
        # reverse start order: the pod runner first so it can stop pod processes cleanly
        for name in reversed(list(state.pids)):
            self._stop_pid(name, state.pids[name])

    def _stop_pid(self, name: str, pid: int, *, grace: float = 15) -> None:
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + max(grace, 5)
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if pid_alive(pid):
            log(f"{name} (pid {pid}) ignored SIGTERM; killing")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- outages (tests) ------------------------------------------------------------------------
    def stop_apiserver(self) -> None:
        """Kill this cluster's kube-apiserver alone (SIGKILL, like a crash): an outage, for tests."""
        state = ClusterState.load(self.state_file)
        if state is None or "kube-apiserver" not in state.pids:
            raise RuntimeError(f"no cluster state in {self.state_file}")
        self._stop_pid("kube-apiserver", state.pids["kube-apiserver"], grace=0)

    def start_apiserver(self) -> None:
        """Start this cluster's kube-apiserver again, with the same flags, port and certificates."""
        state = ClusterState.load(self.state_file)
        if state is None:
            raise RuntimeError(f"no cluster state in {self.state_file}")
        self._start_apiserver(ensure_binaries(), Pki(self.root / "pki"), state)

    # -- readiness ------------------------------------------------------------------------------
    def _check_alive(self, state: ClusterState, name: str) -> None:
        pid = state.pids.get(name)
        if pid and not pid_alive(pid):
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{tail}")

    def _wait_http(self, url: str, name: str, state: ClusterState, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(state, name)
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not healthy at {url} after {timeout}s")

    def _ssl_context(self, pki: Pki) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
        return context

    def _wait_https(self, port: int, pki: Pki, state: ClusterState, timeout: float = 90) -> None:
        context = self._ssl_context(pki)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(state, "kube-apiserver")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/readyz", timeout=2, context=context
                ) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s")

    def _healthy(self, state: ClusterState) -> bool:
        if not all(name in state.pids and pid_alive(state.pids[name]) for name in CORE_PROCESSES):
            return False
        pki = Pki(self.root / "pki")
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{state.apiserver_port}/readyz", timeout=2, context=self._ssl_context(pki)
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _wait_nodes_ready(self, timeout: float = 60) -> None:
        ready_marker = self.root / "podrunner.ready"
        state = ClusterState.load(self.state_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready_marker.exists():
                return
            if state:
                self._check_alive(state, "podrunner")
            time.sleep(0.2)
        raise TimeoutError("pod runner did not register the nodes in time")

    # -- kubeconfigs ----------------------------------------------------------------------------
    def _kubeconfig(self, pki: Pki, state: ClusterState, user: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modeldepot-local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{state.apiserver_port}",
                        "certificate-authority": str(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate": str(pki.cert(user)), "client-key": str(pki.key(user))},
                }
            ],
            "contexts": [
                {"name": "modeldepot-local", "context": {"cluster": "modeldepot-local", "user": user}}
            ],
            "current-context": "modeldepot-local",
        }

    def _write_kubeconfigs(self, pki: Pki, state: ClusterState) -> None:
        # JSON is valid YAML, and every Kubernetes client reads it
        for user, path in (
            ("admin", self.kubeconfig),
            ("controller-manager", self.root / "controller-manager.kubeconfig"),
            ("scheduler", self.root / "scheduler.kubeconfig"),
            ("podrunner", self.root / "podrunner.kubeconfig"),
        ):
            path.write_text(json.dumps(self._kubeconfig(pki, state, user), indent=2))
            path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env", "build"])
    parser.add_argument("--purge", action="store_true", help="with down: delete .cluster/ entirely")
    parser.add_argument("--cluster-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.cluster_dir)
    if args.command == "build":
        print(ensure_binaries())
    elif args.command == "up":
        cluster.up()
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        log(f"try: kubectl --kubeconfig {cluster.kubeconfig} get nodes")
    elif args.command == "down":
        cluster.down(purge=args.purge)
    elif args.command == "status":
        print(cluster.status())
        return 0 if cluster.status() == "up" else 1
    elif args.command == "env":
        print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
