"""Waiting is visible (issue 10): while a fetch pod waits to try the Hub again, the ModelArtifact says
why, which attempt comes next and when; once the Hub recovers the retry is gone and it is Ready.

The session's fetchers give up after two retries of at most 1 s (conftest.py); this file restarts
the operator with fetchers that wait as long as the Hub asks (up to 10 s), and restores it after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from support import Artifacts, OperatorHandle, node_entries, pvc_spec, unique_repo

PATIENT_FETCHERS = {
    "MODELDEPOT_REPORT_INTERVAL": "0.5",
    "MODELDEPOT_MAX_RETRIES": "4",
    "MODELDEPOT_BACKOFF_MAX": "10",
}


@pytest.fixture(scope="module")
def patient_fetchers(operator: OperatorHandle) -> Iterator[None]:
    """The operator restarted so that the fetchers it launches wait as long as the Hub asks."""
    before = operator.env["MODELDEPOT_FETCHER_ENV"]
    operator.stop()
    operator.env["MODELDEPOT_FETCHER_ENV"] = json.dumps(PATIENT_FETCHERS)
    operator.start()
    try:
        yield
    finally:
        operator.stop()
        operator.env["MODELDEPOT_FETCHER_ENV"] = before
        operator.start()


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def watch_until_ready(artifacts: Artifacts, name: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every distinct status seen (polled ~10 times a second) until the artifact is Ready."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = artifacts.status(name)
        if status and (not seen or status != seen[-1]):
            seen.append(status)
        if status.get("phase") == "Ready":
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{name} not Ready after {timeout}s; last status: {json.dumps(seen[-1:], indent=1)}")


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def test_a_refusing_hub_shows_the_retry_in_status_until_it_recovers(
    hub: Any, artifacts: Artifacts, patient_fetchers: None
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (2_000_000, 5), "config.json": b"{}"})
    # the Hub refuses to resolve the revision once (429, come back in 4 s), then a file (503, 4 s)
    hub.fail_next(f"/api/models/{repo}/revision/*", 1, status=429, retry_after=4)
    hub.fail_next("model.safetensors", 1, status=503, retry_after=4, repo_id=repo)
    artifacts.apply("patient", pvc_spec(hub, repo))
    seen = watch_until_ready(artifacts, "patient")

    def waiting(reason: str) -> list[dict[str, Any]]:
        return [s for s in seen if (s.get("progress") or {}).get("retry", {}).get("reason") == reason]

    limited = waiting("RateLimited")
    assert limited, f"the 429 never showed in status: {json.dumps(seen, indent=1)[:4000]}"
    first = limited[0]["progress"]
    retry = first["retry"]
    assert (retry["attempt"], retry["maxAttempts"]) == (2, 5)
    assert retry["message"] == f"the Hub answered HTTP 429 for {repo}"
    assert 2 <= _seconds(retry["nextAttemptAt"]) - _seconds(first["updatedAt"]) <= 6
    assert first["phase"] == "Downloading"
    assert first["summary"].startswith("retrying in "), first["summary"]
    assert first["summary"].endswith(f"(attempt 2/5): the Hub answered HTTP 429 for {repo}")
    # the operator folds the wait into the conditions while it lasts
    folded = [s for s in limited if conditions(s).get("Ready", {}).get("reason") == "RateLimited"]
    assert folded, f"no condition carried RateLimited: {json.dumps(limited, indent=1)[:3000]}"
    cond = conditions(folded[0])
    assert cond["Reconciling"]["status"] == "True" and cond["Reconciling"]["reason"] == "RateLimited"
    assert cond["Stalled"]["status"] == "False"
    expected = f"retrying at {retry['nextAttemptAt']} (attempt 2/5): the Hub answered HTTP 429 for {repo}"
    assert cond["Ready"]["message"] == expected

    served = waiting("ServerError")
    assert served, f"the 503 never showed in status: {json.dumps(seen, indent=1)[:4000]}"
    retry = served[0]["progress"]["retry"]
    assert retry["attempt"] == 2 and "model.safetensors (HTTP 503)" in retry["message"]
    assert "retrying in " in served[0]["progress"]["summary"]
    assert seen.index(served[0]) > seen.index(limited[-1])

    final = seen[-1]
    assert "retry" not in final["progress"] and final["progress"]["percent"] == 100
    assert {c["reason"] for c in final["conditions"]} == {"Verified"}
    assert conditions(final)["Ready"]["status"] == "True"
    # one pod did it all: the waits were the fetcher's own, not the Job's backoff
    assert len(artifacts.pods()) == 1


def test_a_node_that_waits_lends_the_aggregate_and_conditions_its_retry(
    hub: Any, artifacts: Artifacts, patient_fetchers: None
) -> None:
    repo = unique_repo()
    hub.add_repo_from_files(repo, {"model.safetensors": (1_000_000, 6)})
    hub.fail_next(f"/api/models/{repo}/revision/*", 1, status=429, retry_after=4)  # one node's resolve
    spec = {
        "source": {"huggingFace": {"repo": repo, "endpoint": hub.url}},
        "storage": {"nodeLocal": {"nodeSelector": {"gpu": "true"}}},
    }
    artifacts.apply("fleet", spec)
    seen = watch_until_ready(artifacts, "fleet")
    shown = [s for s in seen if (s.get("progress") or {}).get("retry")]
    assert shown, f"the wait never reached the aggregate: {json.dumps(seen, indent=1)[:4000]}"
    retry = shown[0]["progress"]["retry"]
    node = retry["message"].split(":", 1)[0]
    assert node in {"md-node-a", "md-node-c"}
    assert retry["message"] == f"{node}: the Hub answered HTTP 429 for {repo}"
    assert retry["reason"] == "RateLimited" and retry["attempt"] == 2
    entry = node_entries(shown[0])[node]
    assert entry["retry"]["message"] == f"the Hub answered HTTP 429 for {repo}"
    assert "retrying in" in shown[0]["progress"]["summary"]
    folded = [s for s in shown if conditions(s).get("Ready", {}).get("reason") == "RateLimited"]
    assert folded, f"no condition carried RateLimited: {json.dumps(shown, indent=1)[:3000]}"
    assert conditions(folded[0])["Ready"]["message"].startswith(
        f"{node}: retrying at {retry['nextAttemptAt']}"
    )

    final = seen[-1]
    assert "retry" not in final["progress"]
    assert all("retry" not in e for e in node_entries(final).values())  # each apply dropped it
    assert conditions(final)["Ready"]["reason"] == "Verified"
