"""`make bench-scale`: the operator at scale on the local control plane, beside a floor.

N ModelArtifacts (default 1,000; `SCALE_N`) of K tiny repos (`SCALE_REPOS`, default 10) on one
claim in one namespace go through apply -> Ready -> delete, twice, one operator at a time:

- `floor`: a minimal kopf operator (bench/floor_operator.py) that patches each status once;
- `ours`: `modeldepot operator` with its defaults, the pod runner running the fetch pods.

For each, from the operator process (`/proc`): peak RSS (VmHWM) and CPU seconds (user + sys); wall
time to all Ready and to all gone; API requests by verb and resource from the kube-apiserver's own
`/metrics` (`apiserver_request_total`, every client: operator, fetchers, pod runner, this script);
status patches per artifact and per artifact-second; and for ours the Hub's requests and bytes and
any object left behind after delete (Jobs, pods, ServiceAccounts, Roles, RoleBindings, Secrets),
waiting up to 5 minutes for the garbage collector.

It starts its own control plane in `$MODELDEPOT_SCALE_CLUSTER_DIR` (default a temp directory) and
stops it afterwards. Writes bench/results/scale-latest.json and prints a table with issue 10's
targets: RSS < 150 MB at 1,000, CPU <= 3x the floor, <= 1 status patch per artifact per 2 s,
nothing left behind.

    PYTHONPATH=hack .venv/bin/python bench/scale.py              # N=1000 (~15 min on 2 cores)
    SCALE_N=100 PYTHONPATH=hack .venv/bin/python bench/scale.py  # a quick look
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from localdev.cluster import LocalCluster, ensure_binaries, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CRD = ROOT / "crds" / "modelartifacts.yaml"
GROUP, VERSION, PLURAL = "modeldepot.dev", "v1alpha1", "modelartifacts"
OPERATOR_NAMESPACE = "modeldepot-system"
MB = 1_000_000
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_LEFTOVER_KINDS = ("jobs", "pods", "serviceaccounts", "roles", "rolebindings", "secrets")


@dataclass
class Run:
    """What one operator did with N artifacts."""

    operator: str
    artifacts: int
    seconds_to_ready: float = 0.0
    seconds_to_gone: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    status_patches: int = 0
    hub_requests: int = 0
    hub_bytes: int = 0
    left_behind: dict[str, int] = field(default_factory=dict)
    seconds_to_clean: float = 0.0

    @property
    def cpu_per_artifact(self) -> float:
        return self.cpu_seconds / self.artifacts


# ------------------------------------------------------------------------------- measuring


def process_usage(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm_kb = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm_kb * 1024 / MB, (int(fields[11]) + int(fields[12])) / ticks


def apiserver_requests(kubectl: Callable[..., str]) -> Counter[str]:
    """`apiserver_request_total` summed by `VERB resource[/subresource]`."""
    counts: Counter[str] = Counter()
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        counts[f"{labels.get('verb', '?')} {resource}"] += int(float(match["value"]))
    return counts


def wait_for(probe: Callable[[], bool], *, timeout: float, what: str, interval: float = 1.0) -> float:
    """Seconds until `probe()` is true; fails after `timeout`."""
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench-scale: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


# ------------------------------------------------------------------------------- the cluster


class Bench:
    """The control plane, the Hub and the artifacts of one bench-scale run."""

    def __init__(self, cluster_dir: Path, n: int, repos: int) -> None:
        self.cluster = LocalCluster(cluster_dir)
        self.n, self.repos = n, repos
        self.bin_dir = ensure_binaries()
        self.hub: Any = None
        self.custom: client.CustomObjectsApi
        self.core: client.CoreV1Api

    def kubectl(self, *args: str, input: str | None = None) -> str:
        cmd = [
            str(Path(sys.executable).parent / "kubectl"),
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            *args,
        ]
        return subprocess.run(
            cmd, input=input, capture_output=True, text=True, check=True, timeout=120
        ).stdout

    @contextmanager
    def up(self) -> Iterator[None]:
        from localdev.hubemu import HubEmulator

        self.cluster.up()
        try:
            config.load_kube_config(str(self.cluster.kubeconfig))
            self.custom, self.core = client.CustomObjectsApi(), client.CoreV1Api()
            self.kubectl("apply", "--server-side", "-f", str(CRD))
            self.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
            self.kubectl("create", "namespace", OPERATOR_NAMESPACE)
            self.hub = HubEmulator(host="127.0.0.1", port=0).start()
            for r in range(self.repos):
                files = {
                    f"config-{i}.json": json.dumps({"repo": r, "file": i}).encode() * 40 for i in range(3)
                }
                self.hub.add_repo_from_files(f"scale/tiny-{r}", files)
            yield
        finally:
            if self.hub is not None:
                self.hub.stop()
            self.cluster.down()

    def spec(self, i: int) -> dict[str, Any]:
        return {
            "source": {"huggingFace": {"repo": f"scale/tiny-{i % self.repos}", "endpoint": self.hub.url}},
            "storage": {"persistentVolumeClaim": {"claimName": "models", "create": {"size": "1Gi"}}},
        }

    def apply_all(self, namespace: str) -> None:
        self.kubectl("create", "namespace", namespace)
        for i in range(self.n):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelArtifact",
                "metadata": {"name": f"a-{i:04d}", "namespace": namespace},
                "spec": self.spec(i),
            }
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def phases(self, namespace: str) -> Counter[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return Counter((item.get("status") or {}).get("phase") or "-" for item in items)

    def count(self, namespace: str) -> int:
        return len(self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])

    def delete_all(self, namespace: str) -> None:
        self.kubectl("delete", PLURAL, "--all", "-n", namespace, "--wait=false")

    def left_behind(self, namespaces: list[str]) -> dict[str, int]:
        """Objects Model Depot made for the artifacts that still exist after they are gone."""
        left: dict[str, int] = {}
        for kind in _LEFTOVER_KINDS:
            for namespace in namespaces:
                out = self.kubectl(
                    "get",
                    kind,
                    "-n",
                    namespace,
                    "-o",
                    "name",
                    "-l",
                    "app.kubernetes.io/managed-by=modeldepot",
                )
                found = len(out.split())
                if found:
                    left[f"{namespace}/{kind}"] = found
        return left


# ------------------------------------------------------------------------------- one run


def start_operator(bench: Bench, which: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(bench.cluster.kubeconfig)}
    if which == "floor":
        argv = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "--quiet"]
        argv.append(str(ROOT / "bench" / "floor_operator.py"))
    else:
        argv = [str(Path(sys.executable).parent / "modeldepot"), "operator"]
        env |= {
            "MODELDEPOT_METRICS_PORT": str(free_port()),
            "MODELDEPOT_HEALTH_PORT": str(free_port()),
            "MODELDEPOT_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            "MODELDEPOT_ALLOWED_ENDPOINTS": json.dumps([bench.hub.url]),
        }
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_one(bench: Bench, which: str, workdir: Path) -> Run:
    namespace = f"scale-{which}"
    run = Run(which, bench.n)
    before = apiserver_requests(bench.kubectl)
    bench.hub.clear_requests()
    operator = start_operator(bench, which, workdir / f"{which}.log")
    try:
        time.sleep(3)  # let it list and watch before the first object arrives, as in a live cluster
        started = time.monotonic()
        bench.apply_all(namespace)
        timeout = 120 + bench.n * 3
        progress = Reporter(lambda: f"{which}: {dict(bench.phases(namespace))}")
        with progress:
            wait_for(
                lambda: bench.phases(namespace)["Ready"] == bench.n,
                timeout=timeout,
                what=f"{which}: all Ready",
            )
            run.seconds_to_ready = time.monotonic() - started
            deleting = time.monotonic()
            bench.delete_all(namespace)
            wait_for(lambda: bench.count(namespace) == 0, timeout=timeout, what=f"{which}: all deleted")
            run.seconds_to_gone = time.monotonic() - deleting
        if operator.poll() is not None:
            raise SystemExit(f"bench-scale: the {which} operator exited; see {workdir / f'{which}.log'}")
        run.peak_rss_mb, run.cpu_seconds = process_usage(operator.pid)
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
    after = apiserver_requests(bench.kubectl)
    run.requests = {
        key: after[key] - before.get(key, 0) for key in after if after[key] - before.get(key, 0) > 0
    }
    run.status_patches = run.requests.get("PATCH modelartifacts/status", 0) + run.requests.get(
        "APPLY modelartifacts/status", 0
    )
    hub_log = bench.hub.requests
    run.hub_requests, run.hub_bytes = len(hub_log), sum(int(e.get("bytes") or 0) for e in hub_log)
    if which == "ours":
        run.seconds_to_clean, run.left_behind = settle(bench, [namespace, OPERATOR_NAMESPACE])
    return run


def settle(bench: Bench, namespaces: list[str], limit: float = 300) -> tuple[float, dict[str, int]]:
    """Seconds until nothing of ours is left once the artifacts are gone (the garbage collector
    removes what owner references tie to them, at its own pace), and what is left after `limit`."""
    start = time.monotonic()
    while (left := bench.left_behind(namespaces)) and time.monotonic() - start < limit:
        time.sleep(5)
    return time.monotonic() - start, left


class Reporter:
    """Prints a status line every 15 s while a long wait runs."""

    def __init__(self, line: Callable[[], str], every: float = 15.0) -> None:
        self.line, self.every = line, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                print(f"  {self.line()}", flush=True)
            except Exception as error:  # a transient API error must not end the bench
                print(f"  ({error})", flush=True)

    def __enter__(self) -> Reporter:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


# ------------------------------------------------------------------------------- report


def verdicts(ours: Run, floor: Run) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for issue 10's operator-at-scale targets."""
    patch_rate = ours.status_patches / ours.artifacts / max(ours.seconds_to_ready, 1e-9) * 2
    cpu_ratio = ours.cpu_seconds / max(floor.cpu_seconds, 1e-9)
    rss_target = 150.0
    return [
        (
            f"operator peak RSS < {rss_target:.0f} MB",
            f"{ours.peak_rss_mb:.0f} MB",
            ours.peak_rss_mb < rss_target,
        ),
        ("CPU <= 3x the floor", f"{cpu_ratio:.1f}x", cpu_ratio <= 3),
        ("<= 1 status patch per artifact per 2 s", f"{patch_rate:.2f}", patch_rate <= 1),
        (
            "nothing left behind after delete (within 5 min)",
            json.dumps(ours.left_behind) if ours.left_behind else "{}",
            not ours.left_behind,
        ),
    ]


def report(ours: Run, floor: Run) -> str:
    n = ours.artifacts
    rows = [
        ("wall to all Ready (s)", f"{floor.seconds_to_ready:.0f}", f"{ours.seconds_to_ready:.0f}"),
        ("wall to all deleted (s)", f"{floor.seconds_to_gone:.0f}", f"{ours.seconds_to_gone:.0f}"),
        ("then until no child object (s)", "-", f"{ours.seconds_to_clean:.0f}"),
        ("operator peak RSS (MB)", f"{floor.peak_rss_mb:.0f}", f"{ours.peak_rss_mb:.0f}"),
        ("operator CPU s / artifact", f"{floor.cpu_per_artifact:.3f}", f"{ours.cpu_per_artifact:.3f}"),
        ("status patches / artifact", f"{floor.status_patches / n:.1f}", f"{ours.status_patches / n:.1f}"),
        (
            "API requests / artifact",
            f"{sum(floor.requests.values()) / n:.1f}",
            f"{sum(ours.requests.values()) / n:.1f}",
        ),
        ("Hub requests / artifact", "-", f"{ours.hub_requests / n:.1f}"),
        ("Hub bytes / artifact", "-", f"{ours.hub_bytes / n:.0f}"),
    ]
    lines = [f"bench-scale: {n} artifacts", f"{'':30} {'floor':>10} {'ours':>10}"]
    lines += [f"{name:30} {a:>10} {b:>10}" for name, a, b in rows]
    lines.append("API requests per artifact by verb and resource (ours; every client):")
    top = sorted(ours.requests.items(), key=lambda kv: -kv[1])[:14]
    lines += [f"  {key:44} {value / n:8.2f}" for key, value in top]
    lines.append("targets:")
    lines += [
        f"  [{'met' if met else 'NOT MET'}] {target}: {measured}"
        for target, measured, met in verdicts(ours, floor)
    ]
    return "\n".join(lines)


def main() -> int:
    n = int(os.environ.get("SCALE_N", "1000"))
    repos = int(os.environ.get("SCALE_REPOS", "10"))
    with tempfile.TemporaryDirectory(prefix="modeldepot-scale-") as tmp:
        cluster_dir = Path(os.environ.get("MODELDEPOT_SCALE_CLUSTER_DIR") or Path(tmp) / "cluster")
        bench = Bench(cluster_dir, n, repos)
        with bench.up():
            print(
                f"bench-scale: {n} artifacts of {repos} tiny repos, control plane in {cluster_dir}",
                flush=True,
            )
            floor = run_one(bench, "floor", Path(tmp))
            ours = run_one(bench, "ours", Path(tmp))
    text = report(ours, floor)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "artifacts": n,
        "repos": repos,
        "floor": asdict(floor),
        "ours": asdict(ours),
        "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in verdicts(ours, floor)],
    }
    (RESULTS / "scale-latest.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
