"""Parsing of ModelArtifact bodies, termination messages, and the formatting helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from modeldepot.formatting import (
    compute_percent,
    format_bytes,
    format_duration,
    progress_summary,
    retry_phrase,
)
from modeldepot.models import (
    JobResult,
    ModelArtifact,
    Progress,
    RetryStatus,
    parse_termination_message,
    progress_merge_patch,
    validation_message,
)
from modeldepot.vocabulary import Phase


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "modeldepot.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "minilm", "namespace": "ml", "uid": "u-1", "generation": 3},
        "spec": {
            "source": {"huggingFace": {"repo": "sentence-transformers/all-MiniLM-L6-v2"}},
            "storage": {"persistentVolumeClaim": {"claimName": "models"}},
        },
    }
    base["spec"].update(spec)
    return base


def test_parse_defaults() -> None:
    a = ModelArtifact.from_body(body())
    hf = a.hugging_face
    assert (hf.repo_type, hf.revision, hf.include, hf.token_secret_ref) == ("model", "main", None, None)
    assert a.spec.deletion_policy == "Delete" and a.spec.suspend is False
    assert a.spec.downloader.concurrency == 8
    assert a.spec.downloader.backoff_limit == 4
    assert a.spec.downloader.active_deadline_seconds == 21600
    assert (a.name, a.namespace, a.generation) == ("minilm", "ml", 3)
    assert a.status.phase is None and a.status.conditions == []


def test_parse_camel_case_and_status() -> None:
    b = body(
        storage={"nodeLocal": {"nodeSelector": {"gpu": "a100"}, "tolerations": [{"operator": "Exists"}]}},
        downloader={"backoffLimit": 0, "resources": {"limits": {"memory": "2Gi", "cpu": 2}}},
    )
    b["spec"]["source"]["huggingFace"].update({"type": "dataset", "tokenSecretRef": {"name": "hf"}})
    b["status"] = {
        "phase": "Downloading",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Downloading", "observedGeneration": 3}
        ],
        "nodes": [{"name": "n1", "percent": 12.5, "bytesDone": 10, "digest": "sha256:x"}],
        "kopf": {"progress": {}},  # fields a newer CRD or kopf may add are ignored
    }
    a = ModelArtifact.from_body(b)
    assert a.hugging_face.repo_type == "dataset"
    assert a.hugging_face.token_secret_ref is not None and a.hugging_face.token_secret_ref.key == "token"
    local = a.spec.storage.node_local
    assert (
        local is not None and local.path == "/var/lib/modeldepot" and local.node_selector == {"gpu": "a100"}
    )
    assert a.spec.downloader.backoff_limit == 0
    res = a.spec.downloader.resources
    assert res is not None and res.limits == {"memory": "2Gi", "cpu": 2}
    n1 = a.status.node("n1")
    assert n1 is not None and n1.bytes_done == 10 and n1.digest == "sha256:x"
    assert a.status.node("n2") is None
    cond = a.status.condition("Ready")
    assert cond is not None and cond.observed_generation == 3
    assert a.status.condition("Stalled") is None


def test_from_body_accepts_read_only_mappings() -> None:
    from types import MappingProxyType

    b = body()
    frozen = MappingProxyType({k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in b.items()})
    assert ModelArtifact.from_body(frozen).name == "minilm"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"source": {}}, "exactly one source"),
        ({"storage": {}}, "exactly one of persistentVolumeClaim, nodeLocal"),
        ({"storage": {"nodeLocal": {}, "persistentVolumeClaim": {"claimName": "x"}}}, "exactly one of"),
        ({"downloader": {"concurrency": 0}}, "concurrency"),
        ({"downloader": {"activeDeadlineSeconds": 59}}, "activeDeadlineSeconds"),
        ({"deletionPolicy": "Orphan"}, "deletionPolicy"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelArtifact.from_body(body(**spec))
    assert needle in validation_message(info.value)


def test_published_and_display_paths() -> None:
    a = ModelArtifact.from_body(body())
    assert a.published_path == "minilm"
    assert a.display_path == "pvc/models:minilm"
    b = ModelArtifact.from_body(
        body(storage={"persistentVolumeClaim": {"claimName": "models", "path": "m/x"}})
    )
    assert b.published_path == "m/x" and b.display_path == "pvc/models:m/x"
    c = ModelArtifact.from_body(body(storage={"nodeLocal": {"path": "/mnt/disk/"}}))
    assert c.published_path == "ml/minilm"
    assert c.display_path == "node:/mnt/disk/ml/minilm"


def test_to_api_uses_camel_case_and_drops_unset() -> None:
    a = ModelArtifact.from_body(
        body(storage={"nodeLocal": {"tolerations": [{"key": "gpu", "effect": "NoSchedule"}]}})
    )
    local = a.spec.storage.node_local
    assert local is not None and local.tolerations is not None
    assert local.tolerations[0].to_api() == {"key": "gpu", "effect": "NoSchedule"}
    assert a.spec.downloader.to_api() == {"concurrency": 8, "backoffLimit": 4, "activeDeadlineSeconds": 21600}


def test_termination_message() -> None:
    msg = {
        "phase": "Ready",
        "reason": None,
        "message": "ok",
        "commit": "53aa51172",
        "digest": "sha256:ab",
        "totalBytes": 91_600_000,
        "fileCount": 12,
        "path": "/data/minilm",
    }
    res = parse_termination_message(json.dumps(msg))
    assert res == JobResult(
        phase="Ready", message="ok", commit="53aa51172", digest="sha256:ab", total_bytes=91_600_000,
        file_count=12, path="/data/minilm",
    )  # fmt: skip
    for junk in (None, "", "Traceback (most recent call last):", "[1, 2]", '{"phase": "Maybe"}'):
        assert parse_termination_message(junk) is None


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (91_600_000, "91.6 MB"),
        (91_649_999, "91.6 MB"),
        (999_960, "1.0 MB"),  # rounds up into the next unit instead of "1000.0 kB"
        (15_000_000_000, "15.0 GB"),
        (2 * 10**18, "2.0 EB"),
        (None, "?"),
    ],
)
def test_format_bytes(n: int | None, text: str) -> None:
    assert format_bytes(n) == text


def test_format_duration() -> None:
    assert format_duration(4.2) == "5s"
    assert format_duration(245) == "4m05s"
    assert format_duration(7380) == "2h03m"
    assert format_duration(None) == "?" and format_duration(float("inf")) == "?"


def test_compute_percent() -> None:
    assert compute_percent(1, 3) == 33.3
    assert compute_percent(0, 0) == 100.0
    assert compute_percent(5, 4) == 100.0
    assert compute_percent(None, 4) is None


def test_progress_summary() -> None:
    assert (
        progress_summary(
            phase="Downloading",
            bytes_done=41_220_000,
            bytes_total=91_600_000,
            bytes_per_second=12_300_000,
            eta_seconds=4.1,
        )
        == "45% of 91.6 MB, 12.3 MB/s, ETA 5s"
    )
    # floors: 99.96% is not done
    assert progress_summary(percent=99.96, bytes_total=1000).startswith("99% of")
    assert progress_summary(phase="Ready", bytes_total=91_600_000) == "100% of 91.6 MB"
    assert (
        progress_summary(phase="Suspended", percent=45, bytes_total=91_600_000)
        == "Suspended at 45% of 91.6 MB"
    )
    assert progress_summary(phase="Pending") == "Pending"
    assert progress_summary(phase="Downloading") == "Resolving files"
    assert (
        progress_summary(phase="Downloading", percent=50, bytes_total=3_000, nodes_ready=1, nodes_total=3)
        == "1/3 nodes, 50% of 3.0 kB"
    )


def test_retry_phrase_and_a_summary_that_waits() -> None:
    message = "cannot reach the Hub: ConnectError: [Errno -2] Name or service not known"
    waiting = retry_phrase(attempt=2, max_attempts=5, message=message, wait=7.2)
    assert waiting == f"retrying in 8s (attempt 2/5): {message}"
    assert retry_phrase(attempt=2, max_attempts=5, message="x", wait=0).startswith("retrying now (attempt")
    at = retry_phrase(attempt=3, max_attempts=5, message="x", at="2026-05-01T12:00:08Z")
    assert at == "retrying at 2026-05-01T12:00:08Z (attempt 3/5): x"
    clipped = retry_phrase(attempt=2, max_attempts=5, message="m" * 500, wait=1, clip=20)
    assert clipped.endswith(": " + "m" * 19 + "…")
    # before the files are known it stands for "Resolving files"; after, it ends the summary
    assert progress_summary(phase="Downloading", retrying=waiting) == waiting
    assert (
        progress_summary(
            phase="Downloading", percent=42, bytes_total=91_600_000, eta_seconds=20, retrying=waiting
        )
        == f"42% of 91.6 MB, ETA 20s, {waiting}"
    )
    assert progress_summary(phase="Downloading", nodes_ready=0, nodes_total=2, retrying=waiting) == (
        f"0/2 nodes, {waiting}"
    )
    # a download that stopped waits for nothing
    assert (
        progress_summary(phase="Failed", percent=0, bytes_total=0, retrying=waiting) == "Failed at 0% of 0 B"
    )


def test_the_fetchers_progress_patch_names_what_went_away() -> None:
    retry = RetryStatus(
        reason="RateLimited", attempt=2, max_attempts=7, next_attempt_at="2026-05-01T12:00:08Z", message="429"
    )
    waiting = Progress(phase=Phase.DOWNLOADING, percent=4.0, eta_seconds=30.0, retry=retry)
    assert progress_merge_patch(waiting) == {
        "phase": "Downloading",
        "percent": 4.0,
        "etaSeconds": 30.0,
        "retry": {
            "reason": "RateLimited",
            "attempt": 2,
            "maxAttempts": 7,
            "nextAttemptAt": "2026-05-01T12:00:08Z",
            "message": "429",
        },
    }
    moving = Progress(phase=Phase.DOWNLOADING, percent=5.0)
    assert progress_merge_patch(moving) == {
        "phase": "Downloading",
        "percent": 5.0,
        "etaSeconds": None,
        "retry": None,
    }
