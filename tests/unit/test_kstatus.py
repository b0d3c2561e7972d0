"""hack/localdev/kstatus.py follows kstatus's generic rules, and ModelArtifact statuses map as documented."""

from __future__ import annotations

from typing import Any

import pytest

from localdev.kstatus import Result, Status, compute

# docs/api.md, "Conditions": (Ready, Reconciling, Stalled, reason) per phase
TABLE = {
    "Pending": ("False", "True", "False", "Pending"),
    "Downloading": ("False", "True", "False", "Downloading"),
    "Ready": ("True", "False", "False", "Verified"),
    "Failed": ("False", "False", "True", "ChecksumMismatch"),
    "Suspended": ("False", "False", "False", "Suspended"),
    "Deleting": ("False", "True", "False", "Deleting"),
}


def artifact(phase: str | None, *, generation: int = 2, observed: int | None = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modeldepot.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "minilm", "namespace": "ml", "generation": generation},
    }
    if phase is not None:
        ready, reconciling, stalled, reason = TABLE[phase]
        obj["status"] = {
            "phase": phase,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": reason,
                    "message": f"{t} {phase}",
                    "observedGeneration": observed,
                }
                for t, s in (("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled))
            ],
        }
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Pending", Status.IN_PROGRESS),
        ("Downloading", Status.IN_PROGRESS),
        ("Ready", Status.CURRENT),
        ("Failed", Status.FAILED),
        ("Suspended", Status.CURRENT),
    ],
)
def test_phases_map_as_docs_gitops_says(phase: str, expected: Status) -> None:
    assert compute(artifact(phase)).status is expected


def test_reconciling_and_stalled_carry_their_condition_reason_and_message() -> None:
    assert compute(artifact("Downloading")) == Result(
        Status.IN_PROGRESS, "Reconciling Downloading", "Downloading"
    )
    assert compute(artifact("Failed")) == Result(Status.FAILED, "Stalled Failed", "ChecksumMismatch")


def test_deletion_is_terminating_whatever_the_conditions() -> None:
    obj = artifact("Deleting")
    obj["metadata"]["deletionTimestamp"] = "2026-05-01T12:00:00Z"
    assert compute(obj) == Result(Status.TERMINATING, "Resource scheduled for deletion")


def test_unobserved_generation_is_in_progress_even_if_ready() -> None:
    result = compute(artifact("Ready", generation=3, observed=2))
    assert result == Result(
        Status.IN_PROGRESS,
        "ModelArtifact generation is 3, but latest observed generation is 2",
        "LatestGenerationNotObserved",
    )


def test_unobserved_generation_hides_a_stale_failure() -> None:
    assert compute(artifact("Failed", generation=3, observed=2)).status is Status.IN_PROGRESS


def test_no_status_is_current_as_in_kstatus() -> None:
    # kstatus's known gap for custom resources (docs/gitops.md, "the first seconds")
    assert compute(artifact(None)) == Result(Status.CURRENT, "Resource is current")


def test_missing_observed_generation_skips_the_generation_check() -> None:
    assert compute(artifact("Ready", generation=7, observed=None)).status is Status.CURRENT


def test_the_first_abnormal_true_condition_in_list_order_decides() -> None:
    obj = artifact(None)
    obj["status"] = {
        "conditions": [
            {"type": "Stalled", "status": "True", "message": "stuck"},
            {"type": "Reconciling", "status": "True", "message": "busy"},
        ]
    }
    assert compute(obj).status is Status.FAILED
    obj["status"]["conditions"].reverse()
    assert compute(obj).status is Status.IN_PROGRESS


def test_ready_alone_does_not_matter_to_kstatus() -> None:
    obj = artifact(None)
    obj["status"] = {"conditions": [{"type": "Ready", "status": "False", "message": "not yet"}]}
    assert compute(obj).status is Status.CURRENT


def test_conditions_with_other_statuses_are_ignored() -> None:
    obj = artifact(None)
    obj["status"] = {"conditions": [{"type": "Reconciling", "status": "Unknown"}]}
    assert compute(obj).status is Status.CURRENT


def test_integral_float_generations_compare_as_integers() -> None:
    obj = artifact("Ready")
    obj["status"]["observedGeneration"] = 2.0
    assert compute(obj).status is Status.CURRENT
