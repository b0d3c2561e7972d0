"""The Argo CD health check and Flux's kstatus rules, fed with real ModelArtifact objects."""

from __future__ import annotations

from typing import Any

from support import Artifacts, pvc_spec, unique_repo, wait_until

from localdev.argocd import load_health_check
from localdev.kstatus import Status, compute


def test_health_of_real_objects_through_their_lifecycle(hub: Any, artifacts: Artifacts) -> None:
    argocd = load_health_check()
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (20_000_000, 6)})
    hub.set_throttle(5_000_000, repo_id=repo)
    artifacts.apply("health", pvc_spec(hub, repo))

    downloading = wait_until(
        lambda: (lambda body: body if (body or {}).get("status", {}).get("phase") == "Downloading" else None)(
            artifacts.get("health")
        ),
        timeout=60,
        what="a Downloading object",
    )
    assert argocd(downloading).status == "Progressing"
    assert compute(downloading).status == Status.IN_PROGRESS

    hub.set_throttle(None, repo_id=repo)
    artifacts.wait_phase("health", "Ready")
    ready = artifacts.get("health")
    assert ready is not None
    assert argocd(ready).status == "Healthy"
    assert compute(ready).status == Status.CURRENT

    # the same object right after a spec change the operator has not observed yet
    stale = {**ready, "metadata": {**ready["metadata"], "generation": ready["metadata"]["generation"] + 1}}
    assert argocd(stale).status == "Progressing"
    assert compute(stale).status == Status.IN_PROGRESS

    artifacts.apply("paused", {**pvc_spec(hub, repo), "suspend": True})
    artifacts.wait_phase("paused", "Suspended")
    paused = artifacts.get("paused")
    assert paused is not None
    assert argocd(paused).status == "Suspended"

    artifacts.apply("broken", pvc_spec(hub, unique_repo("nobody")))
    artifacts.wait_phase("broken", "Failed", timeout=90)
    failed = artifacts.get("broken")
    assert failed is not None
    health = argocd(failed)
    assert health.status == "Degraded"
    assert "RepoNotFound" in health.message or "not found" in health.message.lower()
    assert compute(failed).status == Status.FAILED
