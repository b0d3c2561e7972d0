"""The reconciler's pure helpers: change detection, pod config errors, Job durations."""

from __future__ import annotations

from modeldepot.decisions import config_error, job_duration
from modeldepot.reconciler import changed


def test_changed_ignores_timestamps_that_always_move() -> None:
    current = {"phase": "Ready", "progress": {"percent": 100, "updatedAt": "2026-01-01T00:00:00Z"}}
    assert not changed(
        current, {"phase": "Ready", "progress": {"percent": 100, "updatedAt": "2026-01-02T00:00:00Z"}}
    )
    assert changed(current, {"phase": "Failed"})
    assert changed(current, {"progress": {"percent": 50}})


def test_changed_compares_lists_elementwise_and_sees_new_keys() -> None:
    current = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "a"}]}
    same = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "b"}]}
    assert not changed(current, same)
    assert changed(current, {"conditions": [{"type": "Ready", "status": "False"}]})
    assert changed(current, {"conditions": [*same["conditions"], {"type": "Stalled", "status": "False"}]})
    assert changed(current, {"digest": "sha256:00"})
    assert not changed({"digest": None}, {"digest": None})


def test_config_error_is_read_from_a_waiting_container() -> None:
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": "fetch",
                    "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret x"}},
                }
            ]
        }
    }
    assert config_error([pod]) == "secret x"
    assert config_error([{"status": {"containerStatuses": [{"state": {"running": {}}}]}}]) is None


def test_duration_of_a_completed_job() -> None:
    job = {"status": {"startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:30Z"}}
    assert job_duration(job) == 90
    assert job_duration({"status": {"startTime": "2026-01-01T00:00:00Z"}}) is None
