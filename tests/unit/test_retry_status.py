"""The operator's side of a download that waits for a retry: conditions, progress and the node-local
aggregate carry the fetcher's `retry` while it waits, and nothing of it once it is over
(decisions.status, decisions.plan, decisions.observe.retry_news). Pure: no cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from fakecluster import merge_patch

from modeldepot import builders
from modeldepot.decisions import JobState, Plan, plan, retry_news
from modeldepot.models import ModelArtifact

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
UNREACHABLE = "cannot reach the Hub: ConnectError: [Errno -2] Name or service not known"


def retry(
    attempt: int = 2, at: str = "2026-05-01T12:00:08Z", reason: str = "HubUnreachable"
) -> dict[str, Any]:
    return {
        "reason": reason,
        "attempt": attempt,
        "maxAttempts": 5,
        "nextAttemptAt": at,
        "message": UNREACHABLE,
    }


def waiting_entry(**extra: Any) -> dict[str, Any]:
    """What a fetcher reports while its resolve call waits to try again."""
    return {
        "phase": "Downloading", "percent": 0.0, "bytesDone": 0, "bytesTotal": 0, "filesDone": 0,
        "filesTotal": 0, "bytesPerSecond": 0, "observedGeneration": 2, "updatedAt": "2026-05-01T11:59:59Z",
        "summary": f"retrying in 8s (attempt 2/5): {UNREACHABLE}", "retry": retry(), **extra,
    }  # fmt: skip


def body(*, node_local: bool = False) -> dict[str, Any]:
    storage: dict[str, Any] = (
        {"nodeLocal": {"nodeSelector": {"gpu": "yes"}}}
        if node_local
        else {"persistentVolumeClaim": {"claimName": "models"}}
    )
    return {
        "metadata": {"name": "minilm", "namespace": "ml", "uid": "u1", "generation": 2},
        "spec": {"source": {"huggingFace": {"repo": "org/minilm"}}, "storage": storage},
        "status": {"phase": "Downloading"},
    }


def job(node: str | None = None, **kw: Any) -> JobState:
    return JobState(name=builders.fetch_job_name("minilm", 2, node), generation=2, node=node, **kw)


def run(b: dict[str, Any], jobs: list[JobState], nodes: list[str] | None = None) -> Plan:
    return plan(ModelArtifact.from_body(b), nodes=nodes, jobs=jobs, now=T0)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it to status (on a copy)."""
    out = copy.deepcopy(target)
    merge_patch(out, patch)
    return out


def conds(p: Plan) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in p.status_patch["conditions"]}


def test_the_conditions_carry_the_retry_while_a_claims_download_waits() -> None:
    b = body()
    b["status"]["progress"] = waiting_entry()
    p = run(b, [job(active=1)])
    assert p.phase == "Downloading" and p.create == [] and p.delete == []
    message = f"retrying at 2026-05-01T12:00:08Z (attempt 2/5): {UNREACHABLE}"
    assert conds(p) == {
        "Ready": ("False", "HubUnreachable", message),
        "Reconciling": ("True", "HubUnreachable", message),
        "Stalled": ("False", "HubUnreachable", message),
    }
    assert "progress" not in p.status_patch  # the fetcher's to write, retry included

    # the retry succeeded: the fetcher's next report has none, and the conditions say Downloading
    b["status"] = merge(b["status"], p.status_patch)
    b["status"]["progress"] = {**waiting_entry(summary="Resolving files"), "retry": None}
    del b["status"]["progress"]["retry"]
    again = run(b, [job(active=1)])
    assert {t: (s, r) for t, (s, r, _) in conds(again).items()} == {
        "Ready": ("False", "Downloading"),
        "Reconciling": ("True", "Downloading"),
        "Stalled": ("False", "Downloading"),
    }
    assert conds(again)["Ready"][2] == "Resolving files"


def test_a_download_that_stopped_while_waiting_loses_its_retry() -> None:
    b = body()
    b["status"]["progress"] = waiting_entry()
    failed = job(
        failed=5,
        failure_reason="BackoffLimitExceeded",
        failure_message="Job has reached the specified backoff limit",
    )
    p = run(b, [failed])
    assert p.phase == "Failed"
    assert p.status_patch["progress"]["retry"] is None  # named, so the merge patch removes it
    status = merge(b["status"], p.status_patch)
    assert "retry" not in status["progress"] and status["progress"]["phase"] == "Failed"
    assert {c["reason"] for c in status["conditions"]} == {"BackoffLimitExceeded"}


def test_the_node_local_aggregate_shows_the_first_node_that_waits() -> None:
    b = body(node_local=True)
    moving = {
        "name": "a", "phase": "Downloading", "percent": 50.0, "bytesDone": 500, "bytesTotal": 1000,
        "filesDone": 1, "filesTotal": 2, "bytesPerSecond": 100.0, "etaSeconds": 5.0, "observedGeneration": 2,
        "updatedAt": "2026-05-01T11:59:58Z",
    }  # fmt: skip
    waiting = {
        **moving, "name": "b", "percent": 10.0, "bytesDone": 100, "bytesPerSecond": 20.0,
        "etaSeconds": 53.0, "retry": retry(reason="RateLimited"),
    }  # fmt: skip
    b["status"]["nodes"] = [moving, waiting]
    p = run(b, [job("a", active=1), job("b", active=1)], nodes=["a", "b"])
    assert p.phase == "Downloading" and p.nodes == []  # both entries are their fetchers'
    prog = p.status_patch["progress"]
    assert prog["retry"] == {**retry(reason="RateLimited"), "message": f"b: {UNREACHABLE}"}
    assert prog["etaSeconds"] == 53.0  # the waiting node's ETA includes its wait
    assert prog["summary"] == (
        f"0/2 nodes, 30% of 1.0 kB, 120 B/s, ETA 53s, retrying in 8s (attempt 2/5): b: {UNREACHABLE}"
    )
    ready, reconciling, _ = conds(p).values()
    message = f"b: retrying at 2026-05-01T12:00:08Z (attempt 2/5): {UNREACHABLE}; 0/2 nodes ready"
    assert ready == ("False", "RateLimited", message) and reconciling == ("True", "RateLimited", message)

    # b's retry succeeded: the aggregate names retry as None (the merge patch removes it)
    b["status"]["nodes"] = [moving, {**waiting, "retry": None}]
    del b["status"]["nodes"][1]["retry"]
    after = run(b, [job("a", active=1), job("b", active=1)], nodes=["a", "b"])
    assert after.status_patch["progress"].get("retry") is None
    assert "retrying" not in after.status_patch["progress"]["summary"]
    assert conds(after)["Ready"][1] == "Downloading"


def test_a_node_entry_the_operator_writes_names_no_retry() -> None:
    b = body(node_local=True)
    b["status"]["nodes"] = [{**waiting_entry(), "name": "a"}]
    p = run(
        b, [job("a", failed=1, failure_reason="DeadlineExceeded", failure_message="too long")], nodes=["a"]
    )
    (entry,) = p.nodes
    assert entry.phase == "Failed" and entry.retry is None
    assert "retry" not in entry.to_api()  # an apply without it removes the fetcher's


def test_retry_news_wakes_a_pass_only_for_what_the_conditions_do_not_show() -> None:
    b = body()
    b["status"]["progress"] = waiting_entry()
    b["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Downloading", "message": "x"}
    ]
    assert retry_news(b["status"])  # a retry began
    b["status"] = merge(b["status"], run(b, [job(active=1)]).status_patch)
    assert not retry_news(b["status"])  # the conditions show it: progress reports alone wake nothing
    b["status"]["progress"]["summary"] = f"retrying in 3s (attempt 2/5): {UNREACHABLE}"
    assert not retry_news(b["status"])
    b["status"]["progress"]["retry"] = retry(attempt=3, at="2026-05-01T12:00:20Z")
    assert retry_news(b["status"])  # the next attempt failed too
    b["status"] = merge(b["status"], run(b, [job(active=1)]).status_patch)
    assert not retry_news(b["status"])
    del b["status"]["progress"]["retry"]
    assert retry_news(b["status"])  # it succeeded
    b["status"] = merge(b["status"], run(b, [job(active=1)]).status_patch)
    assert not retry_news(b["status"])
    # not a download (the phases differ, or nothing is downloading): not this function's business
    assert not retry_news({**b["status"], "phase": "Pending", "progress": waiting_entry()})
    malformed = {**b["status"], "progress": {"phase": "Downloading", "retry": {"attempt": "soon"}}}
    assert not retry_news(malformed)
