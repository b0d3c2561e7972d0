"""ModelArtifact end to end on the real control plane: download, progress, fan-out, deletion."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from typing import Any

from support import (
    MINILM_REPO,
    Artifacts,
    ClusterHandle,
    OperatorHandle,
    claim_dir,
    files_digest,
    node_entries,
    pvc_spec,
    unique_repo,
    wait_until,
)

MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def test_minilm_on_a_claim_becomes_ready_with_a_verified_digest(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle, operator: OperatorHandle
) -> None:
    artifacts.apply("minilm", pvc_spec(hub, MINILM_REPO))
    cluster.kubectl("wait", "-n", artifacts.namespace, "--for=condition=Ready", "ma/minilm", "--timeout=120s")
    status = artifacts.status("minilm")
    assert status["phase"] == "Ready"
    assert status["progress"]["percent"] == 100
    assert status["progress"]["bytesDone"] == status["progress"]["bytesTotal"] == 91618861
    assert status["fileCount"] == 13
    assert status["resolvedRevision"] == hub.minilm_commit
    assert status["observedGeneration"] == 1

    model_dir = claim_dir(cluster, artifacts.namespace, "models") / "minilm"
    assert (
        hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
        == MINILM_SAFETENSORS_SHA256
    )
    assert status["digest"] == files_digest(model_dir)
    manifest = json.loads((model_dir / ".modeldepot" / "manifest.json").read_text())
    assert manifest["commit"] == status["resolvedRevision"]
    assert manifest["digest"] == status["digest"]

    table = cluster.kubectl("get", "ma", "minilm", "-n", artifacts.namespace).stdout
    assert "Ready" in table and "91.6 MB" in table and f"main@{status['resolvedRevision'][:7]}" in table
    reasons = {event["reason"] for event in artifacts.events()}
    assert {"DownloadStarted", "Ready"} <= reasons

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
            text = response.read().decode()
        return {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line.startswith("modeldepot_") and " " in line
        }

    # the Job's completion time can reach the operator a moment after the Ready status
    samples = wait_until(
        lambda: (lambda s: s if s.get("modeldepot_download_duration_seconds_count", 0) >= 1 else None)(
            scrape()
        ),
        timeout=30,
        what="the download duration in /metrics",
    )
    assert samples['modeldepot_artifacts{phase="Ready"}'] >= 1
    assert samples["modeldepot_downloaded_bytes_total"] >= 91618861
    assert samples["modeldepot_downloads_completed_total"] >= 1
    assert samples["modeldepot_download_duration_seconds_sum"] > 0


def test_progress_is_reported_while_a_throttled_download_runs(hub: Any, artifacts: Artifacts) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"weights.safetensors": (24_000_000, 7), "config.json": b"{}"})
    hub.set_throttle(6_000_000, repo_id=repo)
    artifacts.apply("slow", pvc_spec(hub, repo))
    seen: list[float] = []

    def in_between() -> bool:
        percent = (artifacts.status("slow").get("progress") or {}).get("percent")
        if percent is not None:
            seen.append(percent)
        return percent is not None and 0 < percent < 100

    wait_until(in_between, timeout=60, interval=0.2, what="progress strictly between 0 and 100")
    progress = artifacts.status("slow")["progress"]
    assert progress["bytesTotal"] == 24_000_002
    assert 0 < progress["bytesDone"] < progress["bytesTotal"]
    assert artifacts.status("slow")["phase"] == "Downloading"
    final = artifacts.wait_phase("slow", "Ready", timeout=90)
    assert final["progress"]["percent"] == 100
    assert any(0 < p < 100 for p in seen)


def test_node_local_fans_out_to_exactly_the_matching_nodes(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {f"shard-{i}.bin": (200_000 + i, i) for i in range(5)})
    artifacts.apply(
        "fanout",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"nodeLocal": {"nodeSelector": {"gpu": "true"}}},
        },
    )
    status = artifacts.wait_phase("fanout", "Ready", timeout=120)
    assert node_entries(status) == {}  # Ready nodes are recorded outside the artifact
    nodes = artifacts.node_records("fanout")
    assert set(nodes) == {"md-node-a", "md-node-c"}
    assert status["readyNodes"] == status["targetNodes"] == 2
    assert status["fleet"]["ready"] == status["fleet"]["matched"] == 2
    job_nodes = sorted(job["metadata"]["annotations"]["modeldepot.dev/node"] for job in artifacts.jobs())
    assert job_nodes == ["md-node-a", "md-node-c"]
    pod_nodes = sorted(pod["spec"]["nodeName"] for pod in artifacts.pods())
    assert pod_nodes == ["md-node-a", "md-node-c"]
    published = f"var/lib/modeldepot/{artifacts.namespace}/fanout"
    for node in ("md-node-a", "md-node-c"):
        directory = cluster.node_dir(node) / published
        assert nodes[node]["digest"] == files_digest(directory) == status["digest"]
    assert not (cluster.node_dir("md-node-b") / published).exists()


def test_nodelocal_without_matching_nodes_says_so(hub: Any, artifacts: Artifacts) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"a.bin": b"a"})
    artifacts.apply(
        "nowhere",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"nodeLocal": {"nodeSelector": {"accelerator": "tpu-v9"}}},
        },
    )
    artifacts.wait_phase("nowhere", "Failed", timeout=60)
    ready = artifacts.condition("nowhere", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "NoMatchingNodes"
    assert "accelerator" in ready["message"]
    assert artifacts.condition("nowhere", "Stalled")["status"] == "True"
    assert not artifacts.jobs()


def test_delete_mid_download_cancels_and_removes_everything(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"big.safetensors": (40_000_000, 3)})
    hub.set_throttle(4_000_000, repo_id=repo)
    artifacts.apply("doomed", pvc_spec(hub, repo))
    artifacts.wait_bytes("doomed", 0)
    volume = claim_dir(cluster, artifacts.namespace, "models")
    assert any((volume / ".modeldepot" / "staging").rglob("*")), "partial data is being staged"
    started = time.monotonic()
    artifacts.delete("doomed", timeout="60s")
    elapsed = time.monotonic() - started
    assert artifacts.get("doomed") is None
    assert elapsed < 30, f"deletion took {elapsed:.1f}s"
    wait_until(
        lambda: not artifacts.pods() and not artifacts.jobs(), timeout=30, what="fetch Jobs and pods gone"
    )
    # the claim was created by the operator for this artifact: it goes too, with the files
    wait_until(
        lambda: (
            cluster.kubectl("get", "pvc", "models", "-n", artifacts.namespace, check=False).returncode != 0
        ),
        timeout=30,
        what="the owned claim to be garbage-collected",
    )


def test_delete_policy_removes_files_from_an_existing_claim_and_retain_keeps_them(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.bin": (300_000, 1), "config.json": b'{"a": 1}'})
    artifacts.create_claim("shared")
    for name, policy in (("removed", "Delete"), ("kept", "Retain")):
        artifacts.apply(
            name,
            {
                "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
                "storage": {"persistentVolumeClaim": {"claimName": "shared"}},
                "deletionPolicy": policy,
            },
        )
    for name in ("removed", "kept"):
        artifacts.wait_phase(name, "Ready")
    volume = claim_dir(cluster, artifacts.namespace, "shared")
    kept_digest = artifacts.status("kept")["digest"]
    artifacts.delete("removed")
    artifacts.delete("kept")
    assert not (volume / "removed").exists()
    assert not list((volume / ".modeldepot" / "store").glob("removed*"))
    assert (volume / "kept" / "model.bin").exists()
    assert files_digest(volume / "kept") == kept_digest
    cleanup_reasons = {event["reason"] for event in artifacts.events()}
    assert "Deleted" in cleanup_reasons


def test_delete_mid_download_on_nodes_leaves_no_partial_files(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"big.safetensors": (40_000_000, 11), "config.json": b"{}"})
    hub.set_throttle(4_000_000, repo_id=repo)
    artifacts.apply(
        "partial",
        {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"nodeLocal": {"nodeSelector": {"topology.kubernetes.io/zone": "zone-b"}}},
        },
    )
    root = cluster.node_dir("md-node-b") / "var/lib/modeldepot"
    staging = root / ".modeldepot" / "staging" / artifacts.namespace / "partial"
    wait_until(
        lambda: any(p.is_file() and p.stat().st_size > 0 for p in staging.rglob("*")),
        timeout=60,
        what="partial bytes on the node",
    )
    artifacts.delete("partial", timeout="60s")
    assert artifacts.get("partial") is None
    wait_until(
        lambda: not artifacts.pods() and not artifacts.jobs(), timeout=30, what="fetch Jobs and pods gone"
    )
    leftovers = [
        p for p in (root / ".modeldepot").rglob("*") if artifacts.namespace in p.parts and p.is_file()
    ]
    assert not leftovers, leftovers
    assert not (root / artifacts.namespace / "partial").exists()


def test_operator_restart_mid_download_picks_up_where_it_was(
    hub: Any, artifacts: Artifacts, operator: OperatorHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (24_000_000, 12)})
    hub.set_throttle(6_000_000, repo_id=repo)
    artifacts.apply("survivor", pvc_spec(hub, repo))
    artifacts.wait_bytes("survivor", 0)
    jobs_before = {job["metadata"]["name"] for job in artifacts.jobs()}
    operator.stop()
    operator.start()
    status = artifacts.wait_phase("survivor", "Ready", timeout=90)
    assert {job["metadata"]["name"] for job in artifacts.jobs()} == jobs_before, (
        "no second download was started"
    )
    assert len(artifacts.pods()) == 1
    assert status["progress"]["percent"] == 100
