"""The Argo CD health check (docs/argocd-health.lua), run with Lua 5.1 as Argo CD's gopher-lua does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from localdev.argocd import HEALTH_SCRIPT, Health, load_health_check

ROOT = Path(__file__).resolve().parents[2]

# docs/api.md, "Conditions": (Ready, Reconciling, Stalled, reason) per phase
TABLE = {
    "Pending": ("False", "True", "False", "Pending"),
    "Downloading": ("False", "True", "False", "Downloading"),
    "Ready": ("True", "False", "False", "Verified"),
    "Failed": ("False", "False", "True", "RepoNotFound"),
    "Suspended": ("False", "False", "False", "Suspended"),
    "Deleting": ("False", "True", "False", "Deleting"),
}


def artifact(
    phase: str | None,
    *,
    generation: int = 3,
    observed: int | None = 3,
    condition_generation: int | None = None,
    message: str = "",
    **status: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modeldepot.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "minilm", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if phase is None:
        return obj
    ready, reconciling, stalled, reason = TABLE[phase]
    gen = observed if condition_generation is None else condition_generation
    conditions = [
        {"type": t, "status": s, "reason": reason, "message": message, "observedGeneration": gen}
        for t, s in (("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled))
    ]
    obj["status"] = {"phase": phase, "conditions": conditions, **status}
    if observed is not None:
        obj["status"]["observedGeneration"] = observed
    return obj


@pytest.fixture(scope="module")
def health() -> Any:
    return load_health_check()


def test_ready_for_the_current_generation_is_healthy(health: Any) -> None:
    result = health(artifact("Ready", message="12 files, 91.6 MB, sha256:ab at pvc/models:minilm"))
    assert result == Health("Healthy", "Verified: 12 files, 91.6 MB, sha256:ab at pvc/models:minilm")


def test_stalled_is_degraded_with_the_reason(health: Any) -> None:
    result = health(artifact("Failed", message="repository acme/nope not found"))
    assert result == Health("Degraded", "RepoNotFound: repository acme/nope not found")


def test_suspended_phase_is_suspended(health: Any) -> None:
    assert health(artifact("Suspended", message="spec.suspend is true")).status == "Suspended"


@pytest.mark.parametrize("phase", ["Pending", "Downloading", "Deleting"])
def test_work_in_progress_is_progressing(health: Any, phase: str) -> None:
    assert health(artifact(phase, message="working")).status == "Progressing"


def test_progressing_shows_the_progress_summary(health: Any) -> None:
    obj = artifact("Downloading", progress={"summary": "1/3 nodes, 45% of 16.1 GB, 310.2 MB/s, ETA 1m40s"})
    assert health(obj) == Health("Progressing", "1/3 nodes, 45% of 16.1 GB, 310.2 MB/s, ETA 1m40s")


def test_no_status_yet_is_progressing(health: Any) -> None:
    assert health(artifact(None)) == Health("Progressing", "Waiting for the operator to report status")


def test_progress_without_operator_status_is_progressing(health: Any) -> None:
    # the fetcher may patch progress before the operator has written observedGeneration
    obj = artifact(None)
    obj["status"] = {"progress": {"percent": 10, "summary": "10% of 91.6 MB"}}
    assert health(obj).status == "Progressing"


def test_ready_of_an_older_generation_is_progressing_not_healthy(health: Any) -> None:
    # the spec changed (generation 4); the Ready condition still describes generation 3
    result = health(artifact("Ready", generation=4, observed=3))
    assert result == Health("Progressing", "Waiting for the operator to observe generation 4")


def test_stale_conditions_are_ignored_even_when_observed_generation_is_current(health: Any) -> None:
    assert health(artifact("Ready", generation=4, observed=4, condition_generation=3)).status == "Progressing"
    assert (
        health(artifact("Failed", generation=4, observed=4, condition_generation=3)).status == "Progressing"
    )


def test_failed_of_an_older_generation_is_not_degraded(health: Any) -> None:
    # after fixing a bad repo in the spec, Argo CD must not keep showing Degraded
    assert health(artifact("Failed", generation=5, observed=4)).status == "Progressing"


def test_deletion_is_progressing(health: Any) -> None:
    obj = artifact("Ready")
    obj["metadata"]["deletionTimestamp"] = "2026-05-01T12:00:00Z"
    assert health(obj).status == "Progressing"


def test_conditions_without_observed_generation_are_taken_as_current(health: Any) -> None:
    obj = artifact("Ready")
    for c in obj["status"]["conditions"]:
        del c["observedGeneration"]
    assert health(obj).status == "Healthy"


def test_every_api_phase_maps_to_an_argocd_status(health: Any) -> None:
    expected = {
        "Pending": "Progressing",
        "Downloading": "Progressing",
        "Ready": "Healthy",
        "Failed": "Degraded",
        "Suspended": "Suspended",
        "Deleting": "Progressing",
    }
    assert {phase: health(artifact(phase)).status for phase in TABLE} == expected


def test_gitops_doc_embeds_the_script_verbatim() -> None:
    """docs/gitops.md's argocd-cm snippet is the script, indented under the customization key."""
    doc = (ROOT / "docs" / "gitops.md").read_text()
    match = re.search(
        r"resource\.customizations\.health\.modeldepot\.dev_ModelArtifact: \|\n((?:    .*\n|\n)+)", doc
    )
    assert match, "docs/gitops.md has no argocd-cm snippet for modeldepot.dev_ModelArtifact"
    embedded = "\n".join(line[4:] for line in match.group(1).rstrip("\n").split("\n")) + "\n"
    assert embedded == HEALTH_SCRIPT.read_text()
