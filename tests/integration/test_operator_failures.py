"""ModelArtifact failure modes, resume, revision changes and suspend on the real control plane."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from support import Artifacts, ClusterHandle, claim_dir, files_digest, pvc_spec, unique_repo, wait_until


def fetch_pod_count(artifacts: Artifacts) -> int:
    return len(artifacts.pods())


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown-repo", "RepoNotFound"),
        ("unknown-revision", "RevisionNotFound"),
        ("gated-without-token", "Unauthorized"),
        ("patterns-match-nothing", "NoMatchingFiles"),
    ],
)
def test_bad_input_fails_once_with_the_right_reason(
    hub: Any, artifacts: Artifacts, case: str, reason: str
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (100_000, 1), "config.json": b"{}"})
    source: dict[str, Any] = {}
    if case == "unknown-repo":
        repo = unique_repo("nobody")
    elif case == "unknown-revision":
        source["revision"] = "v9.9.9"
    elif case == "gated-without-token":
        hub.set_gated(repo, "hf_secret_token_value")
    elif case == "patterns-match-nothing":
        source["include"] = ["*.gguf"]
    artifacts.apply("bad", pvc_spec(hub, repo, **source))
    artifacts.wait_phase("bad", "Failed", timeout=90)
    ready = artifacts.condition("bad", "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == reason, ready
    assert ready["message"], "a human message explains the failure"
    assert artifacts.condition("bad", "Stalled")["status"] == "True"
    # a permanent error fails the Job at once (podFailurePolicy): one pod, no crash loop
    assert fetch_pod_count(artifacts) == 1
    assert any(event["reason"] == reason and event["type"] == "Warning" for event in artifacts.events())


def test_gated_repo_with_token_secret_downloads_and_token_stays_secret(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    token = "hf_test_" + os.urandom(8).hex()
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (150_000, 2)})
    hub.set_gated(repo, token)
    spec = pvc_spec(hub, repo, tokenSecretRef={"name": "hf-token", "key": "token"})
    artifacts.apply("gated", spec)
    artifacts.wait_phase("gated", "Failed", timeout=60)
    assert artifacts.condition("gated", "Ready")["reason"] == "TokenSecretNotFound"

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf-token", "namespace": artifacts.namespace},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    artifacts.wait_phase("gated", "Ready", timeout=90)
    for job in artifacts.jobs():
        assert token not in json.dumps(job)
    assert token not in json.dumps(artifacts.get("gated"))
    assert all(token not in json.dumps(event) for event in artifacts.events())
    downloads = [r for r in hub.requests if r.get("repo") == repo and r["method"] == "GET" and r.get("file")]
    assert downloads and all(r["auth"] for r in downloads)


def test_corrupted_byte_fails_with_checksum_mismatch_and_publishes_nothing(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (12_000_000, 5), "config.json": b"{}"})
    hub.corrupt(repo, "model.safetensors", offset=5_000_000)
    artifacts.apply("corrupt", pvc_spec(hub, repo))
    artifacts.wait_phase("corrupt", "Failed", timeout=90)
    ready = artifacts.condition("corrupt", "Ready")
    assert ready["reason"] == "ChecksumMismatch"
    assert "model.safetensors" in ready["message"]
    volume = claim_dir(cluster, artifacts.namespace, "models")
    assert not (volume / "corrupt").exists(), "nothing is published"
    assert not list((volume / ".modeldepot" / "store").rglob("model.safetensors"))


def test_killed_pod_resumes_from_partial_bytes(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    size = 30_000_000
    hub.add_repo_from_files(repo, {"model.safetensors": (size, 9)})
    hub.set_throttle(5_000_000, repo_id=repo)
    artifacts.apply("resume", pvc_spec(hub, repo))
    artifacts.wait_bytes("resume", 8_000_000)
    first_pod = artifacts.pods()[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", first_pod, "-n", artifacts.namespace, "--wait=true", "--timeout=40s")
    hub.set_throttle(None, repo_id=repo)
    status = artifacts.wait_phase("resume", "Ready", timeout=120)
    ranges = [
        r["range"]
        for r in hub.requests
        if r.get("repo") == repo
        and r.get("file") == "model.safetensors"
        and r["method"] == "GET"
        and r.get("range")
    ]
    assert ranges, "the second pod asked for the rest with a Range request"
    resumed_from = int(ranges[-1].removeprefix("bytes=").split("-")[0])
    assert resumed_from >= 8_000_000
    volume = claim_dir(cluster, artifacts.namespace, "models")
    assert files_digest(volume / "resume") == status["digest"]
    assert len({pod["metadata"]["name"] for pod in artifacts.pods()} | {first_pod}) == 2


def test_revision_change_swaps_to_the_new_verified_copy(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    first = hub.add_repo_from_files(repo, {"model.bin": (200_000, 1), "config.json": b'{"v": 1}'})
    hub.add_tag(repo, "v1", first)
    second = hub.add_repo_from_files(repo, {"model.bin": (200_000, 1), "config.json": b'{"v": 2}'})
    hub.add_tag(repo, "v2", second)
    artifacts.apply("swap", pvc_spec(hub, repo, revision="v1"))
    v1 = artifacts.wait_phase("swap", "Ready")
    assert v1["resolvedRevision"] == first
    volume = claim_dir(cluster, artifacts.namespace, "models")
    assert (volume / "swap" / "config.json").read_text() == '{"v": 1}'

    artifacts.apply("swap", pvc_spec(hub, repo, revision="v2"))
    v2 = artifacts.wait_phase("swap", "Ready")
    assert v2["resolvedRevision"] == second
    assert v2["revision"] == f"v2@{second[:7]}"
    assert (volume / "swap" / "config.json").read_text() == '{"v": 2}'
    assert files_digest(volume / "swap") == v2["digest"] != v1["digest"]
    assert [p.name for p in (volume / ".modeldepot" / "store" / "swap").iterdir()] == [second]


def test_suspend_pauses_and_resume_continues(hub: Any, artifacts: Artifacts, cluster: ClusterHandle) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (30_000_000, 4)})
    hub.set_throttle(5_000_000, repo_id=repo)
    spec = pvc_spec(hub, repo)
    artifacts.apply("pausable", spec)
    artifacts.wait_bytes("pausable", 5_000_000)
    artifacts.apply("pausable", {**spec, "suspend": True})
    artifacts.wait_phase("pausable", "Suspended", timeout=60)
    wait_until(lambda: not artifacts.pods(), timeout=40, what="the download pod to stop")
    volume = claim_dir(cluster, artifacts.namespace, "models")
    partial = [
        p for p in (volume / ".modeldepot" / "staging").rglob("*") if p.is_file() and p.stat().st_size > 0
    ]
    assert partial, "partial data is kept while suspended"
    hub.set_throttle(None, repo_id=repo)
    artifacts.apply("pausable", {**spec, "suspend": False})
    status = artifacts.wait_phase("pausable", "Ready", timeout=120)
    assert files_digest(volume / "pausable") == status["digest"]
    ranged = [r for r in hub.requests if r.get("repo") == repo and r["method"] == "GET" and r.get("range")]
    assert ranged, "resuming after suspend continued from the partial bytes"


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        (
            {
                "source": {"huggingFace": {"repo": "a/b"}},
                "storage": {"persistentVolumeClaim": {"claimName": "x"}, "nodeLocal": {}},
            },
            "exactly one",
        ),
        ({"source": {"huggingFace": {"repo": "a/b"}}, "storage": {}}, "exactly one"),
        ({"source": {}, "storage": {"nodeLocal": {}}}, "exactly one"),
        ({"source": {"huggingFace": {"repo": "not a repo"}}, "storage": {"nodeLocal": {}}}, "repo"),
        (
            {
                "source": {"huggingFace": {"repo": "a/b"}},
                "storage": {"persistentVolumeClaim": {"claimName": "x", "path": "../escape"}},
            },
            "path",
        ),
        (
            {"source": {"huggingFace": {"repo": "a/b"}}, "storage": {"nodeLocal": {"path": "relative"}}},
            "path",
        ),
        (
            {
                "source": {"huggingFace": {"repo": "a/b"}},
                "storage": {"nodeLocal": {}},
                "deletionPolicy": "Shred",
            },
            "deletionPolicy",
        ),
    ],
)
def test_malformed_specs_are_rejected_at_apply_time(
    cluster: ClusterHandle, artifacts: Artifacts, spec: dict[str, Any], complaint: str
) -> None:
    manifest = {
        "apiVersion": "modeldepot.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "malformed", "namespace": artifacts.namespace},
        "spec": spec,
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr
    assert artifacts.get("malformed") is None


def test_revision_change_mid_download_cancels_and_switches(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    first = hub.add_repo_from_files(repo, {"model.safetensors": (40_000_000, 1), "config.json": b'{"v": 1}'})
    hub.add_tag(repo, "v1", first)
    second = hub.add_repo_from_files(repo, {"model.safetensors": (3_000_000, 2), "config.json": b'{"v": 2}'})
    hub.add_tag(repo, "v2", second)
    hub.set_throttle(4_000_000, repo_id=repo)
    artifacts.apply("switch", pvc_spec(hub, repo, revision="v1"))
    artifacts.wait_bytes("switch", 0)
    first_job = artifacts.jobs()[0]["metadata"]["name"]
    artifacts.apply("switch", pvc_spec(hub, repo, revision="v2"))
    status = artifacts.wait_phase("switch", "Ready", timeout=90)
    assert status["resolvedRevision"] == second
    assert first_job not in {job["metadata"]["name"] for job in artifacts.jobs()}
    assert any(event["reason"] == "DownloadCancelled" for event in artifacts.events())
    volume = claim_dir(cluster, artifacts.namespace, "models")
    assert (volume / "switch" / "config.json").read_text() == '{"v": 2}'
    assert files_digest(volume / "switch") == status["digest"]
    assert not list((volume / ".modeldepot" / "staging").rglob("model.safetensors")), (
        "v1's partial bytes are gone"
    )


def test_transient_hub_failure_is_retried_by_the_operator(hub: Any, artifacts: Artifacts) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (2_000_000, 3)})
    # every attempt of the first pod fails (the fetcher retries twice in tests), then the Hub recovers
    hub.fail_next("model.safetensors", 3, status=503)
    spec = {**pvc_spec(hub, repo), "downloader": {"backoffLimit": 0}}
    artifacts.apply("flaky", spec)
    artifacts.wait_phase("flaky", "Failed", timeout=60)
    ready = artifacts.condition("flaky", "Ready")
    assert "retrying at" in ready["message"], ready
    # the operator replaces the failed Job after MODELDEPOT_FAILED_RETRY_SECONDS (5 s in tests)
    status = artifacts.wait_phase("flaky", "Ready", timeout=90)
    assert status["progress"]["percent"] == 100
    served = [r for r in hub.requests if r.get("repo") == repo and r.get("file") and r["method"] == "GET"]
    assert [r["status"] for r in served][:3] == [503, 503, 503]
    assert served[-1]["status"] in (200, 206)
