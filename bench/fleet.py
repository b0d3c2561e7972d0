"""`make bench-scale`, the fleet cases: one node-local artifact fanned out to many nodes.

(a) `fanout`: one artifact of a tiny repo on `FLEET_N` (default 100) labelled fake nodes; the pod
    runner runs every fetch pod as a host process (real `modeldepot fetch`, real Hub emulator).
    Records wall time from apply to Ready, the Hub's requests and bytes, the operator's peak RSS
    and CPU seconds, status writes (merge patches and applies of `modelartifacts/status`, from
    the kube-apiserver's `/metrics`), and the artifact's size while it progressed.
(b) `simulated`: `FLEET_SIM_N` (default 1,000) fake nodes that no process serves: this script
    binds nothing itself, it plays every node's kubelet and fetcher: once the scheduler binds a
    fetch pod, it marks the pod Running, applies the node's `status.nodes` entry as the fetcher
    does (server-side apply as `modeldepot-node/<node>`, every `FLEET_SIM_REPORT` (2) s: 0%, 50%,
    then Ready) when the Job's fetcher has `--report`, and then ends the pod with the fetcher's
    termination message; cleanup pods end at once, and pods being deleted are removed (no kubelet
    confirms it). At most `FLEET_SIM_CONCURRENCY` (default 25) nodes "download" at once; an
    operator not Ready within `FLEET_SIM_DEADLINE_AFTER` (900 s) or `FLEET_SIM_DEADLINE_BEFORE` (300 s)
    is recorded as such, with its figures.
    1,000 real fetch processes would not fit this machine; what the operator sees (Jobs, pods,
    node entries, termination messages) is the same. Run twice: `before`, the operator of the
    commit `FLEET_BEFORE` (default fa32fee, one entry per node) from a `git worktree`, and
    `after`, this checkout's. Records the artifact's size (bytes of `kubectl get -o json`, and
    with `managedFields`, what etcd stores), status writes and the bytes they move per second
    (writes/s x the stored size at each sample), wall time, operator RSS/CPU.

Called by `make bench-scale` after bench/scale.py, on its own control plane
(`$MODELDEPOT_FLEET_CLUSTER_DIR`, default a temp directory). Writes
bench/results/fleet-latest.json and prints a table (docs/benchmark.md, "Fleets").

    PYTHONPATH=hack .venv/bin/python bench/fleet.py
    FLEET_N=20 FLEET_SIM_N=200 PYTHONPATH=hack .venv/bin/python bench/fleet.py   # a quick look
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.cluster import free_port
from localdev.podrunner import SERVED_LABEL
from localdev.podspec import conditions
from modeldepot.models import NodeStatus, node_apply, node_field_manager
from scale import (
    GROUP,
    OPERATOR_NAMESPACE,
    PLURAL,
    RESULTS,
    ROOT,
    VERSION,
    Bench,
    Reporter,
    apiserver_requests,
    process_usage,
    wait_for,
)

POOL = "modeldepot.dev/bench-pool"
NAMESPACE = "fleet"
APPLY_PATCH = "application/apply-patch+yaml"
COMMIT = "f" * 40
DIGEST = "sha256:" + "e" * 64
SIM_BYTES, SIM_FILES = 3_000_000, 3
_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}


@dataclass
class FleetRun:
    """One artifact fanned out to a fleet, under one operator."""

    case: str
    operator: str
    nodes: int
    seconds_to_ready: float = 0.0
    seconds_to_gone: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    status_writes: int = 0
    hub_requests: int = 0
    hub_bytes: int = 0
    object_bytes_max: int = 0  # `kubectl get -o json`
    object_bytes_final: int = 0
    stored_bytes_max: int = 0  # with managedFields: what etcd holds
    stored_bytes_final: int = 0
    status_nodes_max: int = 0  # entries in status.nodes at the largest
    written_bytes_per_second: float = 0.0
    records_bytes: int = 0  # the operator's node records ConfigMap at the end (after only)
    requests: dict[str, int] = field(default_factory=dict)
    fleet: dict[str, Any] = field(default_factory=dict)
    ready: bool = True  # False: not Ready within the deadline (the figures are up to it)
    write_errors: int = 0  # simulated fetchers' status writes the API server failed (504s)


# --------------------------------------------------------------------------------- the fleet


def add_nodes(bench: Bench, names: list[str], pool: str, *, served: bool) -> None:
    """Register fake nodes in a pool. `served`: the pod runner serves them (runs their pods);
    otherwise they are made schedulable here and nobody runs their pods but `Simulator`."""
    for name in names:
        labels = {POOL: pool, "kubernetes.io/hostname": name}
        if served:
            labels[SERVED_LABEL] = "true"
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        try:
            bench.core.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
        if not served:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            ready = {"type": "Ready", "status": "True", "reason": "BenchFleet", "lastHeartbeatTime": now,
                     "lastTransitionTime": now}  # fmt: skip
            status = {"capacity": _CAPACITY, "allocatable": _CAPACITY, "conditions": [ready]}
            bench.core.patch_node_status(name, {"status": status})
            bench.core.patch_node(name, {"spec": {"taints": None}})

    def schedulable() -> bool:
        nodes = bench.core.list_node(label_selector=f"{POOL}={pool}").items
        return len(nodes) == len(names) and not any(n.spec.taints for n in nodes)

    wait_for(schedulable, timeout=300, what=f"{len(names)} nodes of {pool} schedulable")


def remove_nodes(bench: Bench, pool: str) -> None:
    bench.kubectl("delete", "nodes", "-l", f"{POOL}={pool}", "--wait=false")


def artifact_body(bench: Bench, name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelArtifact",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "source": {"huggingFace": {"repo": "scale/tiny-0", "endpoint": bench.hub.url}},
            "storage": {"nodeLocal": {"nodeSelector": {POOL: pool}}},
        },
    }


def start_operator(bench: Bench, source: Path | None, log_path: Path) -> subprocess.Popen[bytes]:
    """`modeldepot operator`, of this checkout or (``source``) of another commit's package."""
    env = {
        **os.environ,
        "KUBECONFIG": str(bench.cluster.kubeconfig),
        "MODELDEPOT_METRICS_PORT": str(free_port()),
        "MODELDEPOT_HEALTH_PORT": str(free_port()),
        "MODELDEPOT_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
        "MODELDEPOT_ALLOWED_ENDPOINTS": json.dumps([bench.hub.url]),
    }
    argv = [str(Path(sys.executable).parent / "modeldepot"), "operator"]
    if source is not None:
        env["PYTHONPATH"] = f"{source / 'operator'}:{env.get('PYTHONPATH', '')}"
        argv = [
            sys.executable,
            "-c",
            "import sys; from modeldepot.cli import main; sys.exit(main())",
            "operator",
        ]
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextmanager
def operator_process(bench: Bench, source: Path | None, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_operator(bench, source, log_path)
    try:
        time.sleep(3)  # let it list and watch before the artifact arrives
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sizes:
    """Samples the artifact's size every second while the fleet progresses."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench, self.name = bench, name
        self.samples: list[tuple[float, int, int, int]] = []  # (t, json, stored, entries)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int, int]:
        body = self.bench.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, self.name)
        stored = len(json.dumps(body, separators=(",", ":")))
        body["metadata"].pop("managedFields", None)
        shown = len(json.dumps(body, indent=4))  # as kubectl prints it
        return shown, stored, len((body.get("status") or {}).get("nodes") or [])

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with suppress(ApiException):
                self.samples.append((time.monotonic(), *self.sample()))

    def __enter__(self) -> Sizes:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def phase(bench: Bench, name: str) -> dict[str, Any]:
    """The artifact's status ({} while the API server times out under the writers' load)."""
    try:
        body = bench.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    except ApiException as error:
        if error.status in (429, 500, 503, 504):
            return {}
        raise
    return body.get("status") or {}


def measure(
    bench: Bench,
    run: FleetRun,
    name: str,
    pool: str,
    proc: subprocess.Popen[bytes],
    timeout: float,
    deadline: float | None = None,
) -> None:
    """Apply the artifact, wait for Ready while sampling, delete it and wait until it is gone.
    ``deadline``: give up waiting for Ready after that long and record what was reached."""
    before = apiserver_requests(bench.kubectl)
    bench.hub.clear_requests()
    started = time.monotonic()
    bench.custom.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, artifact_body(bench, name, pool)
    )
    with (
        Sizes(bench, name) as sizes,
        Reporter(
            lambda: f"{run.case}/{run.operator}: {phase(bench, name).get('progress', {}).get('summary')}"
        ),
    ):
        limit = deadline or timeout
        while phase(bench, name).get("phase") != "Ready":
            if time.monotonic() - started > limit:
                if deadline is None:
                    raise SystemExit(f"bench-fleet: {run.case}/{run.operator} not Ready after {limit:.0f}s")
                run.ready = False
                print(
                    f"  {run.case}/{run.operator}: not Ready after {limit:.0f}s; recording what was reached"
                )
                break
            time.sleep(0.5)
        run.seconds_to_ready = time.monotonic() - started
        time.sleep(3)  # the last writes (records, forgotten entries) land
    after = apiserver_requests(bench.kubectl)
    run.requests = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
    run.status_writes = run.requests.get("PATCH modelartifacts/status", 0) + run.requests.get(
        "APPLY modelartifacts/status", 0
    )
    hub_log = bench.hub.requests
    run.hub_requests, run.hub_bytes = len(hub_log), sum(int(e.get("bytes") or 0) for e in hub_log)
    try:
        final = sizes.sample()
    except ApiException:  # the API server still times out under the writers' load
        final = sizes.samples[-1][1:] if sizes.samples else (0, 0, 0)
    run.object_bytes_final, run.stored_bytes_final = final[0], final[1]
    samples = sizes.samples or [(time.monotonic(), *final)]
    run.object_bytes_max = max(s[1] for s in samples)
    run.stored_bytes_max = max(s[2] for s in samples)
    run.status_nodes_max = max(s[3] for s in samples)
    mean_stored = sum(s[2] for s in samples) / len(samples)
    run.written_bytes_per_second = run.status_writes / max(run.seconds_to_ready, 1e-9) * mean_stored
    status = phase(bench, name)
    run.fleet = status.get("fleet") or {}
    records = run.fleet.get("records")
    if records and run.ready:
        ns, _, cm = records.partition("/")
        data = bench.core.read_namespaced_config_map(cm, ns).data or {}
        run.records_bytes = sum(len(v) for v in data.values())
    if proc.poll() is not None:
        raise SystemExit(f"bench-fleet: the {run.operator} operator exited")
    run.peak_rss_mb, run.cpu_seconds = process_usage(proc.pid)
    if not run.ready:
        return  # `teardown` removes it: a deletion timed under this load would say nothing more
    deleting = time.monotonic()
    bench.kubectl("delete", PLURAL, name, "-n", NAMESPACE, "--wait=false")

    def gone() -> bool:
        try:
            bench.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(gone, timeout=timeout, what=f"{run.case}: deleted")
    run.seconds_to_gone = time.monotonic() - deleting


# ------------------------------------------------------------------------------ (a) real fan-out


def fanout(bench: Bench, n: int, workdir: Path) -> FleetRun:
    pool = "fanout"
    add_nodes(bench, [f"fan-{i:04d}" for i in range(n)], pool, served=True)
    run = FleetRun("fanout", "after", n)
    with operator_process(bench, None, workdir / "fanout.log") as proc:
        measure(bench, run, "fanout", pool, proc, timeout=300 + n * 3)
    remove_nodes(bench, pool)
    return run


# ----------------------------------------------------------------------------- (b) simulated


class Simulator:
    """Plays the kubelet and the fetcher of every node of a pool nobody serves: see the module
    docstring. One thread polls the bound fetch pods; each started one gets a thread."""

    def __init__(self, bench: Bench, concurrency: int, interval: float) -> None:
        self.bench, self.interval = bench, interval
        self.slots = threading.Semaphore(concurrency)
        self.started: set[str] = set()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.poller = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Simulator:
        self.poller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.poller.join()
        until = time.monotonic() + 30  # the running ones finish their step; the waiting ones quit
        for thread in self.threads:
            thread.join(timeout=max(0.0, until - time.monotonic()))
        if self.errors:
            print(f"  simulator: {len(self.errors)} errors, first: {self.errors[0]}", flush=True)

    def _poll(self) -> None:
        selector = "app.kubernetes.io/managed-by=modeldepot"
        while not self.stop.wait(1.0):
            try:
                pods = self.bench.core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=selector).items
            except ApiException:
                continue
            for pod in pods:
                if not (pod.spec.node_name or "").startswith("sim-"):
                    continue
                if pod.metadata.deletion_timestamp:  # no kubelet confirms a graceful delete here
                    self._force_delete(pod)
                    continue
                if pod.metadata.uid in self.started or pod.status.phase != "Pending":
                    continue
                self.started.add(pod.metadata.uid)
                app = (pod.metadata.labels or {}).get("app.kubernetes.io/name")
                target = self._fetch if app == "modeldepot-fetcher" else self._clean
                thread = threading.Thread(target=target, args=(pod,), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _force_delete(self, pod: Any) -> None:
        with suppress(ApiException):
            self.bench.core.delete_namespaced_pod(
                pod.metadata.name, OPERATOR_NAMESPACE, body=client.V1DeleteOptions(grace_period_seconds=0)
            )

    def _clean(self, pod: Any) -> None:
        """A cleanup pod: done at once (nothing is on the simulated disks)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
        state = {"name": pod.spec.containers[0].name, "ready": False, "restartCount": 0,
                 "image": pod.spec.containers[0].image, "imageID": "", "state": {"terminated": terminated}}  # fmt: skip
        try:
            self._pod_status(pod, {"phase": "Succeeded", "startTime": now,
                                   "conditions": conditions(now, ready=False), "containerStatuses": [state]})  # fmt: skip
        except ApiException as error:
            self.errors.append(f"{pod.metadata.name}: pod status {error.status}")

    def _fetch(self, pod: Any) -> None:
        while not self.slots.acquire(timeout=1):
            if self.stop.is_set():
                return
        with contextlib.ExitStack() as slot:
            slot.callback(self.slots.release)
            try:
                self._play(pod)
            except Exception as error:
                self.errors.append(f"{pod.metadata.name}: {error}")

    def _pod_status(self, pod: Any, status: dict[str, Any]) -> None:
        """Write the pod's status as a kubelet does: again until it lands."""
        for attempt in range(30):
            try:
                self.bench.core.patch_namespaced_pod_status(
                    pod.metadata.name, OPERATOR_NAMESPACE, {"status": status}
                )
                return
            except ApiException as error:
                if error.status == 404 or attempt == 29:
                    raise
                time.sleep(1)

    def _play(self, pod: Any) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        container = next(c for c in pod.spec.containers if c.name == "fetch")
        args = list(container.args or [])
        report = args[args.index("--report") + 1] if "--report" in args else None
        node = args[args.index("--node") + 1]
        generation = int(args[args.index("--generation") + 1])
        running = {"name": "fetch", "ready": True, "restartCount": 0, "image": container.image,
                   "imageID": "", "state": {"running": {"startedAt": now}}}  # fmt: skip
        self._pod_status(pod, {"phase": "Running", "startTime": now, "conditions": conditions(now, ready=True),
                               "containerStatuses": [running]})  # fmt: skip
        steps = 2
        for step in range(steps + 1):
            if report:
                done = SIM_BYTES * step // steps
                entry = NodeStatus(
                    name=node,
                    phase="Ready" if step == steps else "Downloading",
                    percent=100.0 if step == steps else round(100 * step / steps, 1),
                    bytes_done=done,
                    bytes_total=SIM_BYTES,
                    files_done=SIM_FILES * step // steps,
                    files_total=SIM_FILES,
                    bytes_per_second=None if step == steps else SIM_BYTES / steps / self.interval,
                    summary=f"{round(100 * step / steps)}% of 3.0 MB",
                    resolved_revision=COMMIT,
                    observed_generation=generation,
                    updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    digest=DIGEST if step == steps else None,
                )
                namespace, _, name = report.partition("/")
                try:  # as the fetcher's reporter: a failed report is logged, the download goes on
                    self.bench.custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, namespace, PLURAL, name, node_apply(namespace, name, entry),
                        field_manager=node_field_manager(node), force=True, _content_type=APPLY_PATCH,
                    )  # fmt: skip
                except ApiException as error:
                    self.errors.append(f"{pod.metadata.name}: status write {error.status}")
            if step < steps:
                time.sleep(self.interval)
        result = {"phase": "Ready", "commit": COMMIT, "digest": DIGEST, "totalBytes": SIM_BYTES,
                  "fileCount": SIM_FILES, "path": "/data/x"}  # fmt: skip
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(result),
                      "startedAt": now, "finishedAt": end}  # fmt: skip
        done_status = {"name": "fetch", "ready": False, "restartCount": 0, "image": container.image,
                       "imageID": "", "state": {"terminated": terminated}}  # fmt: skip
        self._pod_status(pod, {"phase": "Succeeded", "conditions": conditions(end, ready=False),
                               "containerStatuses": [done_status]})  # fmt: skip


def simulated(bench: Bench, n: int, which: str, source: Path | None, workdir: Path) -> FleetRun:
    concurrency = int(os.environ.get("FLEET_SIM_CONCURRENCY", "25"))
    interval = float(os.environ.get("FLEET_SIM_REPORT", "2"))
    run = FleetRun("simulated", which, n)
    # the operator before the records is not expected to get there: bounded tighter
    default = "300" if which == "before" else "900"
    deadline = float(os.environ.get(f"FLEET_SIM_DEADLINE_{which.upper()}", default))
    with (
        operator_process(bench, source, workdir / f"simulated-{which}.log") as proc,
        Simulator(bench, concurrency, interval) as simulator,
    ):
        measure(bench, run, f"sim-{which}", "sim", proc, timeout=300 + n, deadline=deadline)
        if not run.ready:
            proc.terminate()
            teardown(bench, f"sim-{which}")
    run.write_errors = len(simulator.errors)
    return run


def teardown(bench: Bench, name: str) -> None:
    """Remove an artifact its operator did not bring to Ready (operator stopped): its finalizer,
    the object, its Jobs and their pods (the simulator removes pods being deleted)."""
    bench.kubectl(
        "patch", PLURAL, name, "-n", NAMESPACE, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    bench.kubectl("delete", PLURAL, name, "-n", NAMESPACE, "--wait=false", "--ignore-not-found")
    bench.kubectl("delete", "jobs", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/managed-by=modeldepot",
                  "--wait=false")  # fmt: skip

    def no_pods() -> bool:
        pods = bench.core.list_namespaced_pod(
            OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/managed-by=modeldepot"
        )
        return not pods.items

    wait_for(no_pods, timeout=600, what="the unfinished run's pods gone", interval=2)


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """The operator package of another commit, checked out beside this one (git worktree)."""
    path = Path(tempfile.mkdtemp(prefix="modeldepot-fleet-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False,
                       capture_output=True)  # fmt: skip


# ------------------------------------------------------------------------------------ report


def report(runs: list[FleetRun]) -> str:
    lines = ["bench-fleet:"]
    head = f"{'':34}" + "".join(f"{r.case + '/' + r.operator:>20}" for r in runs)
    lines.append(head)
    rows: list[tuple[str, Any]] = [
        ("nodes", lambda r: f"{r.nodes}"),
        ("wall to Ready (s)", lambda r: f"{r.seconds_to_ready:.0f}"),
        ("wall to deleted (s)", lambda r: f"{r.seconds_to_gone:.0f}"),
        ("operator peak RSS (MB)", lambda r: f"{r.peak_rss_mb:.0f}"),
        ("operator CPU (s)", lambda r: f"{r.cpu_seconds:.1f}"),
        ("status writes", lambda r: f"{r.status_writes}"),
        ("status writes / s", lambda r: f"{r.status_writes / max(r.seconds_to_ready, 1e-9):.1f}"),
        ("object, kubectl -o json max (kB)", lambda r: f"{r.object_bytes_max / 1000:.1f}"),
        ("object, kubectl -o json Ready (kB)", lambda r: f"{r.object_bytes_final / 1000:.1f}"),
        ("object, stored max (kB)", lambda r: f"{r.stored_bytes_max / 1000:.1f}"),
        ("status.nodes entries max", lambda r: f"{r.status_nodes_max}"),
        ("bytes written to it / s (MB)", lambda r: f"{r.written_bytes_per_second / 1e6:.2f}"),
        ("node records ConfigMap (kB)", lambda r: f"{r.records_bytes / 1000:.1f}"),
        ("Ready (within the deadline)", lambda r: "yes" if r.ready else "NO"),
        ("simulated writes that failed", lambda r: f"{r.write_errors}"),
        ("Hub requests", lambda r: f"{r.hub_requests}"),
        ("Hub bytes (MB)", lambda r: f"{r.hub_bytes / 1e6:.1f}"),
    ]
    for label, cell in rows:
        lines.append(f"{label:34}" + "".join(f"{cell(r):>20}" for r in runs))
    return "\n".join(lines)


def main() -> int:
    n = int(os.environ.get("FLEET_N", "100"))
    sim_n = int(os.environ.get("FLEET_SIM_N", "1000"))
    before = os.environ.get("FLEET_BEFORE", "fa32fee")
    runs: list[FleetRun] = []
    with tempfile.TemporaryDirectory(prefix="modeldepot-fleet-") as tmp:
        workdir = Path(tmp)
        cluster_dir = Path(os.environ.get("MODELDEPOT_FLEET_CLUSTER_DIR") or workdir / "cluster")
        bench = Bench(cluster_dir, 0, 1)
        with bench.up():
            bench.kubectl("create", "namespace", NAMESPACE)
            print(f"bench-fleet: fan-out to {n} nodes, then {sim_n} simulated nodes ({before} vs this checkout)",
                  flush=True)  # fmt: skip
            if n:
                runs.append(fanout(bench, n, workdir))
                save(before, runs)
            if sim_n:
                add_nodes(bench, [f"sim-{i:04d}" for i in range(sim_n)], "sim", served=False)
                runs.append(simulated(bench, sim_n, "after", None, workdir))
                save(before, runs)
                with worktree(before) as source:
                    runs.append(simulated(bench, sim_n, "before", source, workdir))
                save(before, runs)
    print(report(runs))
    return 0


def save(before: str, runs: list[FleetRun]) -> None:
    """bench/results/fleet-latest.json, after each run (a long run stopped midway keeps the rest)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"before": before, "runs": [asdict(r) for r in runs]}
    (RESULTS / "fleet-latest.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report(runs), flush=True)


if __name__ == "__main__":
    sys.exit(main())
