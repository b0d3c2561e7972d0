"""A hostile Hub (the endpoint is named by a tenant) on the real control plane.

The emulator's hostile modes (hack/localdev/hubemu/faults.py) play the attacker: a commit id that is a
path into another artifact's store, a listing whose next page is itself, a file name with a
newline. Each must end as a Failed artifact with a clear reason, and never touch another artifact.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from support import Artifacts, ClusterHandle, claim_dir, files_digest, unique_repo


def claim_spec(hub: Any, repo: str, **source: Any) -> dict[str, Any]:
    return {
        "source": {"huggingFace": {"repo": repo, "endpoint": hub.url, **source}},
        "storage": {"persistentVolumeClaim": {"claimName": "shared"}},
    }


def tree_state(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below `directory`: (size, mtime_ns, sha256), symlinks not followed."""
    state: dict[str, tuple[int, int, str]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            state[path.relative_to(directory).as_posix()] = (
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return state


def assert_failed(artifacts: Artifacts, name: str, reason: str, *fragments: str) -> dict[str, Any]:
    artifacts.wait_phase(name, "Failed", timeout=120)
    ready = artifacts.condition(name, "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason, ready
    for fragment in fragments:
        assert fragment in ready["message"], ready
    # permanent: the Job fails at once (podFailurePolicy), no crash loop
    own = [
        p
        for p in artifacts.pods()
        if p["metadata"].get("annotations", {}).get("modeldepot.dev/artifact") == name
    ]
    assert len(own) == 1, [p["metadata"]["name"] for p in own]
    return ready


def test_hostile_commit_id_fails_and_the_victim_is_untouched(
    hub: Any, artifacts: Artifacts, cluster: ClusterHandle
) -> None:
    artifacts.create_claim("shared")
    victim_repo = unique_repo()
    hub.add_repo_from_files(victim_repo, {"model.safetensors": (300_000, 21), "config.json": b'{"v": 1}'})
    artifacts.apply("llm", claim_spec(hub, victim_repo))
    victim = artifacts.wait_phase("llm", "Ready", timeout=120)
    volume = claim_dir(cluster, artifacts.namespace, "shared")
    store = volume / ".modeldepot" / "store" / "llm"
    published = (volume / "llm").resolve()
    before = tree_state(store)
    manifest = (published / ".modeldepot" / "manifest.json").read_bytes()
    assert files_digest(volume / "llm") == victim["digest"]

    attacker_repo = unique_repo()
    hub.add_repo_from_files(attacker_repo, {"model.safetensors": (300_000, 22), "config.json": b'{"v": 2}'})
    # store/<attacker path>/<commit> would be the victim's published version directory
    hub.hostile.set_commit_sha(attacker_repo, f"../llm/{victim['resolvedRevision']}")
    artifacts.apply("attacker", claim_spec(hub, attacker_repo))
    assert_failed(artifacts, "attacker", "InvalidSpec", "invalid commit id")

    assert tree_state(store) == before, "the victim's store is untouched"
    assert (volume / "llm").resolve() == published
    assert (published / ".modeldepot" / "manifest.json").read_bytes() == manifest
    assert files_digest(volume / "llm") == victim["digest"]
    after = artifacts.status("llm")
    assert after["phase"] == "Ready" and after["digest"] == victim["digest"]
    assert not [r for r in hub.requests if r.get("repo") == attacker_repo and "/resolve/" in r["path"]]


def test_self_referencing_listing_fails_instead_of_hanging(hub: Any, artifacts: Artifacts) -> None:
    artifacts.create_claim("shared")
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (100_000, 23), "config.json": b"{}"})
    hub.hostile.loop_tree(repo)
    artifacts.apply("loop", claim_spec(hub, repo))
    assert_failed(artifacts, "loop", "InvalidSpec", "loops")
    pages = [r for r in hub.requests if r.get("repo") == repo and "/tree/" in r["path"]]
    assert len(pages) == 1, "the repeated page is not requested again"


def test_file_name_with_a_newline_is_invalid_spec(hub: Any, artifacts: Artifacts) -> None:
    artifacts.create_claim("shared")
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"config.json": b"{}", "evil\nname.bin": b"x" * 1000}, check_paths=False)
    artifacts.apply("newline", claim_spec(hub, repo))
    assert_failed(artifacts, "newline", "InvalidSpec", "control character")
    assert not [r for r in hub.requests if r.get("repo") == repo and "/resolve/" in r["path"]]
