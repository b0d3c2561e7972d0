"""A kubelet stand-in for the local control plane: fake Nodes, local-process pods, directory volumes.

There is no container runtime in this tier. For every pod the scheduler binds to one of the fake
nodes, this process runs the containers' command/args as local processes, each in a private mount
namespace (`unshare --mount`) where the pod's volumes are bind-mounted at the container's own mount
paths:

- hostPath      -> `<cluster>/nodes/<node>/<hostPath>` (one directory tree per fake node)
- PVC           -> the bound PersistentVolume's directory (`<cluster>/volumes/<pv>`)
- emptyDir      -> `<cluster>/pods/<uid>/volumes/<name>`
- projected / secret / configMap -> files written from the API (service-account tokens via the
  TokenRequest API, so in-pod clients authenticate as the pod's ServiceAccount)

Env is resolved as the kubelet does for literal values, secretKeyRef, configMapKeyRef, and the
downward-API fieldRefs (pod name, namespace, uid, node name, service account, pod IP), plus
KUBERNETES_SERVICE_HOST/PORT pointing at the real API server. The pod goes Running, then Succeeded
or Failed with each container's exit code and termination message; logs are kept under
`<cluster>/logs/pods/`. On graceful deletion the process group gets SIGTERM, then SIGKILL after the
grace period, and the pod object is removed, as a kubelet does.

Not emulated (see docs/testing.md): images (the container's command runs on this host; an image's
entrypoint is taken from IMAGE_ENTRYPOINTS), securityContext (users, capabilities, read-only root),
resource limits and cgroups, probes, restartPolicy Always/OnFailure restarts, networking (pods use
the host network), `kubectl logs/exec` (no kubelet API), node heartbeats (node lifecycle is off).

It also provisions PersistentVolumes for claims of the `local` StorageClass (directory-backed) and
deletes them when released.

Why this file is over 400 lines: it is the kubelet stand-in's I/O in one class (node registration,
the volume provisioner, pod lifecycle, processes, status, watches), which share the API client and
the table of running pods. What it decides is elsewhere and unit-tested without a cluster:
`podspec.py` (env, volumes, projected files, the container command line, status entries) and
`apiretry.py` (retrying status through an apiserver outage).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from localdev import apiretry, podspec
from localdev.podspec import ContainerConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
STASH_ROOT = Path("/run/modeldepot-podrunner")
STORAGE_CLASS = "local"
PROVISIONER = "modeldepot.dev/local-dir"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVED_LABEL = "localdev.modeldepot.dev/podrunner"


@dataclass(frozen=True)
class FakeNode:
    name: str
    labels: dict[str, str]


DEFAULT_NODES = (
    FakeNode("md-node-a", {"topology.kubernetes.io/zone": "zone-a", "gpu": "true"}),
    FakeNode("md-node-b", {"topology.kubernetes.io/zone": "zone-b"}),
    FakeNode("md-node-c", {"topology.kubernetes.io/zone": "zone-a", "gpu": "true"}),
)


def _entrypoints() -> dict[str, list[str]]:
    """Image name fragment -> entrypoint, for containers that give args but no command."""
    bin_dir = Path(sys.executable).parent
    mapping = {"modeldepot": [str(bin_dir / "modeldepot")]}
    extra = os.environ.get("MODELDEPOT_IMAGE_ENTRYPOINTS")
    if extra:
        mapping.update({k: shlex.split(v) for k, v in json.loads(extra).items()})
    return mapping


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(message: str) -> None:
    print(f"[podrunner {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class RunningPod:
    uid: str
    namespace: str
    name: str
    node: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class PodRunner:
    def __init__(self, cluster_dir: Path, nodes: tuple[FakeNode, ...] = DEFAULT_NODES) -> None:
        self.cluster_dir = cluster_dir
        self.nodes = {node.name: node for node in nodes}
        # every Node labelled SERVED_LABEL is ours: the defaults and any a test adds later
        self.served: set[str] = set()
        config.load_kube_config(str(cluster_dir / "podrunner.kubeconfig"))
        self.api_client = client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.storage = client.StorageV1Api(self.api_client)
        self.host = self.api_client.configuration.host.split("://", 1)[1]
        self.pods: dict[str, RunningPod] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.entrypoints = _entrypoints()

    # -- nodes and storage ----------------------------------------------------------------------
    def register_nodes(self) -> None:
        for node in self.nodes.values():
            labels = {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                SERVED_LABEL: "true",
                **node.labels,
            }
            body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name, "labels": labels}}
            try:
                self.core.create_node(body)
            except ApiException as error:
                if error.status != 409:
                    raise
            self.serve_node(node.name)
        self.ensure_storage_class()

    def serve_node(self, name: str) -> None:
        """Report a node Ready, as its kubelet would, and start running its pods."""
        self.served.add(name)
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "PodRunnerReady",
            "message": "modeldepot pod runner (kubelet stand-in) is serving this node",
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [condition],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "v0.0.0-modeldepot-podrunner",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "local-process://",
                    "kernelVersion": os.uname().release,
                    "osImage": "modeldepot local",
                    "bootID": "",
                    "machineID": "",
                    "systemUUID": "",
                },
            }
        }
        self.core.patch_node_status(name, status)
        # TaintNodesByCondition admission adds not-ready taints at creation; with the node
        # lifecycle controller off, the "kubelet" clears them once it reports Ready
        self.core.patch_node(name, {"spec": {"taints": None}})
        (self.cluster_dir / "nodes" / name).mkdir(parents=True, exist_ok=True)

    def ensure_storage_class(self) -> None:
        try:
            self.storage.create_storage_class(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": STORAGE_CLASS,
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": PROVISIONER,
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                }
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def provision_claim(self, claim: Any) -> None:
        if claim.spec.volume_name or claim.status.phase != "Pending":
            return
        class_name = claim.spec.storage_class_name
        if class_name != STORAGE_CLASS:
            return
        pv_name = f"pvc-{claim.metadata.uid}"
        directory = self.cluster_dir / "volumes" / pv_name
        directory.mkdir(parents=True, exist_ok=True)
        size = (claim.spec.resources.requests or {}).get("storage", "1Gi")
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": claim.metadata.namespace,
                    "name": claim.metadata.name,
                    "uid": claim.metadata.uid,
                },
            },
        }
        try:
            self.core.create_persistent_volume(body)
            log(f"provisioned {pv_name} for {claim.metadata.namespace}/{claim.metadata.name}")
        except ApiException as error:
            if error.status != 409:
                raise

    def reclaim_volume(self, volume: Any) -> None:
        if volume.status.phase != "Released" or volume.spec.persistent_volume_reclaim_policy != "Delete":
            return
        if (volume.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        with contextlib.suppress(ApiException):
            self.core.delete_persistent_volume(volume.metadata.name)
        shutil.rmtree(self.cluster_dir / "volumes" / volume.metadata.name, ignore_errors=True)
        log(f"deleted released volume {volume.metadata.name}")

    def on_node(self, event_type: str, node: Any) -> None:
        name = node.metadata.name
        if event_type == "DELETED":
            self.served.discard(name)
            return
        ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
        if name not in self.served or not ready:
            self.serve_node(name)

    # -- pods -----------------------------------------------------------------------------------
    def on_pod(self, event_type: str, pod: Any) -> None:
        node = pod.spec.node_name
        if node not in self.served:
            return
        uid = pod.metadata.uid
        with self.lock:
            running = self.pods.get(uid)
        if event_type == "DELETED":
            if running:
                self._terminate(running, grace=0)
            return
        if pod.metadata.deletion_timestamp:
            if running is None or running.finished.is_set():
                # nothing (left) to stop: remove the object, as a kubelet does once containers are gone
                self._force_delete(pod.metadata.namespace, pod.metadata.name, uid)
            elif not running.stopping.is_set():
                grace = pod.metadata.deletion_grace_period_seconds
                threading.Thread(target=self._stop_and_delete, args=(running, grace), daemon=True).start()
            return
        if running is None and pod.status.phase == "Pending":
            running = RunningPod(uid=uid, namespace=pod.metadata.namespace, name=pod.metadata.name, node=node)
            with self.lock:
                self.pods[uid] = running
            running.thread = threading.Thread(target=self._run_pod, args=(running, pod), daemon=True)
            running.thread.start()

    def _force_delete(self, namespace: str, name: str, uid: str) -> None:
        with contextlib.suppress(ApiException):
            # grace goes in the body: with a body present the API server ignores the query parameter
            self.core.delete_namespaced_pod(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )

    def _stop_and_delete(self, running: RunningPod, grace: int | None) -> None:
        self._terminate(running, grace=30 if grace is None else grace)
        self._force_delete(running.namespace, running.name, running.uid)
        with self.lock:
            self.pods.pop(running.uid, None)
        shutil.rmtree(self.cluster_dir / "pods" / running.uid, ignore_errors=True)

    def _terminate(self, running: RunningPod, grace: int) -> None:
        running.stopping.set()
        for proc in list(running.processes.values()):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in list(running.processes.values()):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if running.thread and running.thread is not threading.current_thread():
            running.thread.join(timeout=10)

    def _read_secret(self, name: str, namespace: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _read_config_map(self, name: str, namespace: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(name, namespace).data or {})

    def _resolve_env(self, pod: Any, container: Any) -> dict[str, str]:
        base = {
            # the image stand-in: this interpreter's bin dir (modeldepot, hf) comes first
            "PATH": os.pathsep.join(
                [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
            ),
            "HOME": "/tmp",
            "HOSTNAME": pod.metadata.name,
            "KUBERNETES_SERVICE_HOST": self.host.rsplit(":", 1)[0],
            "KUBERNETES_SERVICE_PORT": self.host.rsplit(":", 1)[1],
        }
        for key in ("PYTHONPATH", "MODELDEPOT_CACHE"):
            if key in os.environ:
                base[key] = os.environ[key]
        namespace = pod.metadata.namespace
        refs = podspec.env_refs(container)
        secrets: dict[str, dict[str, str] | None] = {}
        config_maps: dict[str, dict[str, str] | None] = {}
        for names, from_names, read, fetched in (
            (refs.secrets, refs.from_secrets, self._read_secret, secrets),
            (refs.config_maps, refs.from_config_maps, self._read_config_map, config_maps),
        ):
            for name in sorted(names):
                if name in from_names:  # an envFrom object that cannot be read fails the pod
                    fetched[name] = read(name, namespace)
                    continue
                try:
                    fetched[name] = read(name, namespace)
                except ApiException:
                    fetched[name] = None  # a missing key: CreateContainerConfigError, retried
        return podspec.resolve_env(pod, container, secrets=secrets, config_maps=config_maps, base=base)

    def _wait_for_env(self, running: RunningPod, pod: Any, container: Any) -> dict[str, str]:
        """Resolve env; while a referenced key is missing, report CreateContainerConfigError and retry."""
        while True:
            try:
                return self._resolve_env(pod, container)
            except ContainerConfigError as error:
                statuses = [
                    podspec.container_status(
                        c, {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
                    )
                    for c in pod.spec.containers
                ]
                self._patch_status(running, {"phase": "Pending", "containerStatuses": statuses})
                if running.stopping.wait(2):
                    raise

    def _volume_sources(self, pod: Any, pod_dir: Path) -> dict[str, Path]:
        """Materialize every pod volume as a host directory; returns volume name -> directory."""
        namespace = pod.metadata.namespace
        claims: dict[str, Path] = {}
        for name in podspec.claim_names(pod):
            claim = self.core.read_namespaced_persistent_volume_claim(name, namespace)
            if not claim.spec.volume_name:
                raise RuntimeError(f"claim {claim.metadata.name} is not bound")
            claims[name] = podspec.pv_host_path(self.core.read_persistent_volume(claim.spec.volume_name))
        volumes = {v.name: v for v in pod.spec.volumes or []}
        sources: dict[str, Path] = {}
        for target in podspec.volume_paths(pod, cluster_dir=self.cluster_dir, pod_dir=pod_dir, claims=claims):
            if target.create:
                target.path.mkdir(parents=True, exist_ok=True)
            if target.projected:
                self._write_projected(pod, volumes[target.name], target.path)
            sources[target.name] = target.path
        return sources

    def _write_projected(self, pod: Any, volume: Any, path: Path) -> None:
        namespace = pod.metadata.namespace
        refs = podspec.projected_refs(volume)
        tokens: dict[str, str] = {}
        for spec in refs.tokens:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(
                    audiences=[spec.audience] if spec.audience else [],
                    expiration_seconds=spec.expiration_seconds,
                    bound_object_ref=client.V1BoundObjectReference(
                        kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
                    ),
                )
            )
            token = self.core.create_namespaced_service_account_token(
                pod.spec.service_account_name or "default", namespace, request
            )
            tokens[spec.path] = token.status.token
        config_maps = {
            name: {k: v.encode() for k, v in self._read_config_map(name, namespace).items()}
            for name in refs.config_maps
        }
        secrets = {
            name: {
                k: base64.b64decode(v)
                for k, v in (self.core.read_namespaced_secret(name, namespace).data or {}).items()
            }
            for name in refs.secrets
        }
        files = podspec.projected_files(pod, volume, secrets=secrets, config_maps=config_maps, tokens=tokens)
        for relative, content in files.items():
            (path / relative).write_bytes(content)

    def _run_container(
        self, running: RunningPod, pod: Any, container: Any, sources: dict[str, Path], pod_dir: Path
    ) -> dict[str, Any]:
        mounts: list[tuple[Path, str]] = []
        for mount in container.volume_mounts or []:
            source = sources.get(mount.name)
            if source is None:
                continue
            if mount.sub_path:
                source = source / mount.sub_path
                source.mkdir(parents=True, exist_ok=True)
            mounts.append((source, mount.mount_path))
        termination_file = pod_dir / f"{container.name}.termination-log"
        termination_file.write_bytes(b"")
        log_dir = self.cluster_dir / "logs" / "pods"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{pod.metadata.namespace}_{pod.metadata.name}_{container.name}.log"
        started_at = now()
        env = self._wait_for_env(running, pod, container)
        stash = STASH_ROOT / uuid.uuid4().hex
        keep = {str(REPO_ROOT), sys.prefix, sys.base_prefix}
        argv = podspec.container_argv(container, mounts, termination_file, stash, self.entrypoints, keep)
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        running.processes[container.name] = proc
        if running.stopping.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        exit_code = proc.wait()
        with contextlib.suppress(OSError):
            stash.rmdir()  # only the empty mount point is left on the host
        if exit_code < 0:
            exit_code = 128 - exit_code
        message = termination_file.read_text(errors="replace")[-4096:]
        if not message and exit_code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            lines = log_path.read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        return terminated

    def _patch_status(self, running: RunningPod, status: dict[str, Any]) -> bool:
        """Report the pod's status; through an apiserver outage keep trying, as a kubelet does.

        Runs on the pod's own thread, so a retry never holds up another pod. False: the pod is
        gone (or the runner stops, or the apiserver stayed away for `apiretry.GIVE_UP_AFTER`).
        """

        def patch() -> None:
            self.core.patch_namespaced_pod_status(
                running.name, running.namespace, {"status": status}, _request_timeout=(5, 30)
            )

        return apiretry.retry_transient(
            patch,
            what=f"status {status.get('phase')} of pod {running.namespace}/{running.name}",
            log=log,
            stop=self.stopped.wait,
        )

    def _run_pod(self, running: RunningPod, pod: Any) -> None:
        pod_dir = self.cluster_dir / "pods" / running.uid
        pod_dir.mkdir(parents=True, exist_ok=True)
        base = {
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": now(),
        }
        try:
            sources = self._volume_sources(pod, pod_dir)
            init_statuses: list[dict[str, Any]] = []
            for container in pod.spec.init_containers or []:
                self._patch_status(
                    running,
                    {
                        **base,
                        "phase": "Pending",
                        "initContainerStatuses": [
                            *init_statuses,
                            podspec.container_status(container, {"running": {"startedAt": now()}}),
                        ],
                    },
                )
                terminated = self._run_container(running, pod, container, sources, pod_dir)
                init_statuses.append(podspec.container_status(container, {"terminated": terminated}))
                if terminated["exitCode"] != 0 or running.stopping.is_set():
                    self._finish(running, pod, base, init_statuses, [], failed=True)
                    return
            containers = pod.spec.containers
            self._patch_status(
                running,
                {
                    **base,
                    "phase": "Running",
                    "initContainerStatuses": init_statuses,
                    "conditions": podspec.conditions(now(), ready=True),
                    "containerStatuses": [
                        podspec.container_status(c, {"running": {"startedAt": now()}}, ready=True)
                        for c in containers
                    ],
                },
            )
            results: dict[str, dict[str, Any]] = {}

            def run(container: Any) -> None:
                results[container.name] = self._run_container(running, pod, container, sources, pod_dir)

            threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in containers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            statuses = [
                podspec.container_status(
                    c, {"terminated": results.get(c.name, {"exitCode": 137, "reason": "Error"})}
                )
                for c in containers
            ]
            failed = any(s["state"]["terminated"]["exitCode"] != 0 for s in statuses)
            self._finish(running, pod, base, init_statuses, statuses, failed=failed)
        except Exception as error:  # a pod that cannot start fails, as the kubelet would report it
            log(f"pod {running.namespace}/{running.name} failed to start: {error}")
            self._patch_status(
                running, {**base, "phase": "Failed", "reason": "PodRunnerError", "message": str(error)}
            )
        finally:
            running.finished.set()

    def _finish(
        self,
        running: RunningPod,
        pod: Any,
        base: dict[str, Any],
        init: list[dict[str, Any]],
        statuses: list[dict[str, Any]],
        *,
        failed: bool,
    ) -> None:
        if not statuses:
            statuses = [
                podspec.container_status(c, {"waiting": {"reason": "PodInitializing"}})
                for c in pod.spec.containers
            ]
        self._patch_status(
            running,
            {
                **base,
                "phase": "Failed" if failed else "Succeeded",
                "conditions": podspec.conditions(now(), ready=False),
                "initContainerStatuses": init,
                "containerStatuses": statuses,
            },
        )
        log(
            f"pod {running.namespace}/{running.name} on {running.node}: {'Failed' if failed else 'Succeeded'}"
        )

    # -- loops ----------------------------------------------------------------------------------
    def _watch_forever(self, list_fn: Any, handler: Any, **kwargs: Any) -> None:
        while not self.stopped.is_set():
            try:
                resource_version = None
                listing = list_fn(**kwargs)
                resource_version = listing.metadata.resource_version
                for item in listing.items:
                    handler("ADDED", item)
                stream = watch.Watch().stream(
                    list_fn, resource_version=resource_version, timeout_seconds=60, **kwargs
                )
                for event in stream:
                    if self.stopped.is_set():
                        return
                    handler(event["type"], event["object"])
            except Exception as error:
                if self.stopped.is_set():
                    return
                log(f"watch error ({getattr(list_fn, '__name__', list_fn)}): {error}; retrying")
                time.sleep(1)

    def run(self, ready_file: Path | None) -> None:
        self.register_nodes()
        loops = [
            (self.core.list_pod_for_all_namespaces, self.on_pod, {"field_selector": "spec.nodeName!="}),
            (
                self.core.list_persistent_volume_claim_for_all_namespaces,
                lambda _t, claim: self.provision_claim(claim),
                {},
            ),
            (self.core.list_persistent_volume, lambda _t, volume: self.reclaim_volume(volume), {}),
            (self.core.list_node, self.on_node, {"label_selector": f"{SERVED_LABEL}=true"}),
        ]
        for list_fn, handler, kwargs in loops:
            threading.Thread(
                target=self._watch_forever, args=(list_fn, handler), kwargs=kwargs, daemon=True
            ).start()
        if ready_file:
            ready_file.write_text(now())
        log(f"serving nodes {', '.join(sorted(self.served))}")
        self.stopped.wait()

    def shutdown(self) -> None:
        with self.lock:
            pods = list(self.pods.values())
        for running in pods:
            self._terminate(running, grace=5)
        self.stopped.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.podrunner", description=__doc__)
    parser.add_argument("--cluster-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    runner = PodRunner(args.cluster_dir)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=runner.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run(args.cluster_dir / "podrunner.ready")
    time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
