"""status.model: what the fetcher found the model to be, carried from its result into status."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fakecluster import merge_patch

from modeldepot import builders
from modeldepot.decisions import JobState, plan
from modeldepot.models import JobResult, ModelArtifact, parse_termination_message

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
COMMIT = "53aa51172fb0b7b43cac4ae4ed8f8c4c1ee1f7ab"
DIGEST = "sha256:" + "ab" * 32
MODEL = {
    "format": "safetensors",
    "formats": ["safetensors", "pytorch"],
    "precision": "bf16",
    "parameters": 8_030_261_248,
    "files": {"weights": {"files": 4, "bytes": 16_060_522_496}, "config": {"files": 2, "bytes": 1_000}},
    "summary": "safetensors, bf16, 8.0B params",
}


def body(*, node_local: bool = False) -> dict[str, Any]:
    storage: dict[str, Any] = (
        {"nodeLocal": {"nodeSelector": {"gpu": "yes"}}}
        if node_local
        else {"persistentVolumeClaim": {"claimName": "models"}}
    )
    return {
        "metadata": {"name": "llama", "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": {"source": {"huggingFace": {"repo": "org/llama"}}, "storage": storage},
        "status": {},
    }


def result(model: dict[str, Any] | None = MODEL) -> JobResult:
    message: dict[str, Any] = {
        "phase": "Ready", "commit": COMMIT, "digest": DIGEST, "totalBytes": 16_060_523_496, "fileCount": 6,
        "transferredBytes": 0, "reusedBytes": 16_060_523_496, "adoptedBytes": 0, "path": "/data/llama",
    }  # fmt: skip
    if model is not None:
        message["model"] = model
    parsed = parse_termination_message(json.dumps(message))
    assert parsed is not None
    return parsed


def job(node: str | None = None, res: JobResult | None = None) -> JobState:
    return JobState(
        name=builders.fetch_job_name("llama", 1, node),
        generation=1,
        node=node,
        succeeded=1,
        complete=True,
        result=res or result(),
    )


def test_a_ready_result_describes_the_model_in_status() -> None:
    p = plan(ModelArtifact.from_body(body()), nodes=None, jobs=[job()], now=T0)
    assert p.phase == "Ready"
    assert p.status_patch["model"] == MODEL


def test_the_description_stays_when_the_result_is_rebuilt_from_status() -> None:
    b = body()
    first = plan(ModelArtifact.from_body(b), nodes=None, jobs=[job()], now=T0)
    b = copy.deepcopy(b)
    merge_patch(b["status"], first.status_patch)
    later = plan(ModelArtifact.from_body(b), nodes=None, jobs=[], now=T0 + timedelta(hours=1))
    assert later.phase == "Ready"
    assert "model" not in later.status_patch  # a merge patch without it leaves it as it was
    status = copy.deepcopy(b["status"])
    merge_patch(status, later.status_patch)
    assert status["model"] == MODEL


def test_an_older_fetcher_without_a_description_sets_none() -> None:
    p = plan(ModelArtifact.from_body(body()), nodes=None, jobs=[job(res=result(None))], now=T0)
    assert p.phase == "Ready" and "model" not in p.status_patch


def test_node_local_takes_the_description_of_a_node_that_has_one() -> None:
    nodes = ["n1", "n2"]
    jobs = [job("n1", result(None)), job("n2", result())]
    p = plan(ModelArtifact.from_body(body(node_local=True)), nodes=nodes, jobs=jobs, now=T0)
    assert p.phase == "Ready" and p.status_patch["model"] == MODEL
