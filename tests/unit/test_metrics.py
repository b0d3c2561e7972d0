"""Metric names: what the operator exports is what the dashboard and the README use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from modeldepot import metrics

ROOT = Path(__file__).resolve().parents[2]


def exported_series() -> set[str]:
    metrics.record_phase("ns", "name", "Ready")
    metrics.failures.labels(reason="RepoNotFound")
    metrics.reconcile_errors.labels(retryable="true")
    text = generate_latest(metrics.registry).decode()
    metrics.record_phase("ns", "name", None)
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                found.append(value) if key == "expr" else walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text()))
    return found


def test_every_series_the_dashboard_queries_is_exported() -> None:
    queried = set(re.findall(r"modeldepot_[a-z_]+", " ".join(dashboard_expressions())))
    assert queried, "the dashboard queries modeldepot metrics"
    assert queried <= exported_series(), queried - exported_series()


def test_every_metric_the_readme_names_is_exported() -> None:
    named = set(re.findall(r"`(modeldepot_[a-z_]+)", (ROOT / "README.md").read_text()))
    exported = exported_series()
    # a histogram is named by its family and exported as _bucket/_sum/_count series
    missing = {name for name in named if name not in exported and f"{name}_count" not in exported}
    assert named and not missing, missing


def test_names_follow_prometheus_conventions() -> None:
    for name in exported_series():
        assert name.startswith("modeldepot_")
        assert re.fullmatch(r"[a-z_]+", name)
    assert "modeldepot_downloaded_bytes_total" in exported_series()
    assert "modeldepot_download_duration_seconds_bucket" in exported_series()


def test_phase_gauge_counts_artifacts_per_phase() -> None:
    metrics.record_phase("a", "one", "Ready")
    metrics.record_phase("a", "two", "Ready")
    metrics.record_phase("a", "three", "Failed")
    try:
        assert metrics.artifacts.labels(phase="Ready")._value.get() == 2
        assert metrics.artifacts.labels(phase="Failed")._value.get() == 1
        metrics.record_phase("a", "two", None)
        assert metrics.artifacts.labels(phase="Ready")._value.get() == 1
    finally:
        for name in ("one", "two", "three"):
            metrics.record_phase("a", name, None)
