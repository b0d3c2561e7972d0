"""One copy per storage root (issue 9): the content-addressed store across namespaces sharing a
node-local root, and adoption of files already at the path, on the real control plane."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
from support import (
    Artifacts,
    ClusterHandle,
    claim_dir,
    files_digest,
    fresh_namespace,
    unique_repo,
    wait_until,
)

NODE = "md-node-b"
ZONE = {"topology.kubernetes.io/zone": "zone-b"}
FILES = {
    "model.safetensors": (2_000_000, 91),
    "config.json": b'{"hidden": 91}\n',
    "tokenizer.json": b'{"vocab": ["a", "b"]}\n' * 50,
}


def node_local_spec(hub: Any, repo: str) -> dict[str, Any]:
    return {
        "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
        "storage": {"nodeLocal": {"nodeSelector": ZONE}},
    }


def file_requests(hub: Any, repo: str) -> list[dict[str, Any]]:
    """Requests for the repo's file contents (not its API: resolve, tree)."""
    return [r for r in hub.requests if r.get("repo") == repo and r.get("file")]


def node_root(cluster: ClusterHandle) -> Path:
    return cluster.node_dir(NODE) / "var/lib/modeldepot"


def blobs(root: Path) -> set[str]:
    d = root / ".modeldepot/blobs/sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_a_second_namespace_on_the_node_root_fetches_no_file_bytes(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, FILES)
    root = node_root(cluster)
    artifacts.apply("m", node_local_spec(hub, repo))
    first = artifacts.wait_phase("m", "Ready", timeout=120)
    assert file_requests(hub, repo), "the first artifact downloads the files"
    mine = root / artifacts.namespace / "m"
    with fresh_namespace(cluster) as other_ns:
        other = Artifacts(cluster, other_ns)
        hub.clear_requests()
        other.apply("m", node_local_spec(hub, repo))
        second = other.wait_phase("m", "Ready", timeout=120)
        assert file_requests(hub, repo) == [], "the second artifact got every byte from the node's store"
        assert second["digest"] == first["digest"]
        assert second["progress"]["bytesReused"] == second["totalBytes"], second["progress"]
        # what the model is, read from the verified files (the weights here are random bytes)
        assert second["model"]["format"] == "safetensors", second.get("model")
        assert second["model"]["files"]["weights"] == {"files": 1, "bytes": 2_000_000}
        theirs = root / other_ns / "m"
        assert files_digest(theirs) == second["digest"]
        for path in FILES:
            assert (mine / path).stat().st_ino == (theirs / path).stat().st_ino, path  # once on disk
        shared = blobs(root)
        assert {hashlib.sha256((theirs / p).read_bytes()).hexdigest() for p in FILES} <= shared
        # the first goes: the second keeps its files and the blobs
        artifacts.delete("m")
        assert not mine.exists()
        assert files_digest(theirs) == second["digest"] and blobs(root) >= shared
        # the last goes: so do the blobs only it named
        other.delete("m")
        assert not theirs.exists()
        wait_until(lambda: not (blobs(root) & shared), timeout=30, what="the blobs to be removed")


def test_files_copied_by_hand_are_adopted_without_a_download(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, FILES)
    target = node_root(cluster) / artifacts.namespace / "copied"
    target.mkdir(parents=True)
    for path in FILES:
        (target / path).write_bytes(httpx.get(f"{hub.url}/{repo}/resolve/main/{path}").content)
    hub.clear_requests()
    artifacts.apply("copied", node_local_spec(hub, repo))
    status = artifacts.wait_phase("copied", "Ready", timeout=120)
    assert file_requests(hub, repo) == []
    assert status["progress"]["bytesAdopted"] == status["totalBytes"], status["progress"]
    assert target.is_symlink() and files_digest(target) == status["digest"]


def test_two_artifacts_on_one_claim_share_its_store(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    """On a claim every reused blob is re-hashed first; a blob poisoned through the first artifact's
    hard link is then fetched again, never published for the second."""
    repo = unique_repo()
    hub.add_repo_from_files(repo, FILES)
    artifacts.create_claim("shared")

    def spec(path: str) -> dict[str, Any]:
        return {
            "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
            "storage": {"persistentVolumeClaim": {"claimName": "shared", "path": path}},
        }

    artifacts.apply("first", spec("first"))
    first = artifacts.wait_phase("first", "Ready", timeout=120)
    volume = claim_dir(cluster, artifacts.namespace, "shared")
    hub.clear_requests()
    artifacts.apply("second", spec("second"))
    second = artifacts.wait_phase("second", "Ready", timeout=120)
    assert file_requests(hub, repo) == []
    assert second["digest"] == first["digest"] and second["progress"]["bytesReused"] == second["totalBytes"]
    # a tenant pod with the claim mounted writes through the first artifact's file (the blob's inode)
    weights = volume / "first" / "model.safetensors"
    weights.chmod(0o644)
    with weights.open("r+b") as fh:
        fh.write(b"EVIL")
    weights.chmod(0o444)
    hub.clear_requests()
    artifacts.apply("third", spec("third"))
    third = artifacts.wait_phase("third", "Ready", timeout=120)
    assert {r["file"] for r in file_requests(hub, repo)} == {"model.safetensors"}
    assert third["digest"] == first["digest"] == files_digest(volume / "third")
