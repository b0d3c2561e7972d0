"""Prometheus metrics of the operator (prometheus-client), served on `/metrics`.

Names follow Prometheus conventions with the `modeldepot_` prefix; labels stay low-cardinality
(phase, reason), never an artifact or node name. docs/grafana-dashboard.json charts them.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .vocabulary import Phase

registry = CollectorRegistry()

artifacts = Gauge(
    "modeldepot_artifacts",
    "ModelArtifacts known to the operator, by phase.",
    ["phase"],
    registry=registry,
)
downloaded_bytes = Counter(
    "modeldepot_downloaded_bytes",
    "Bytes of verified model files published by completed downloads (summed over targets).",
    registry=registry,
)
download_duration = Histogram(
    "modeldepot_download_duration_seconds",
    "Wall time of a successful download Job, from its start to its completion.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
    registry=registry,
)
downloads_completed = Counter(
    "modeldepot_downloads_completed",
    "Download targets (a claim or one node) that became Ready.",
    registry=registry,
)
failures = Counter(
    "modeldepot_failures",
    "Artifacts that entered the Failed phase, by reason.",
    ["reason"],
    registry=registry,
)
reconcile_errors = Counter(
    "modeldepot_reconcile_errors",
    "Reconciliations that raised an error, by whether it will be retried.",
    ["retryable"],
    registry=registry,
)
reconcile_duration = Histogram(
    "modeldepot_reconcile_duration_seconds",
    "Time spent in one reconciliation of one artifact.",
    registry=registry,
)

_phases: dict[tuple[str, str], Phase] = {}
_lock = threading.Lock()


def record_phase(namespace: str, name: str, phase: Phase | None) -> None:
    """Remember an artifact's phase (None: forget it) and refresh the by-phase gauge."""
    with _lock:
        if phase is None:
            _phases.pop((namespace, name), None)
        else:
            _phases[(namespace, name)] = phase
        counts: dict[Phase, int] = dict.fromkeys(Phase, 0)
        for value in _phases.values():
            counts[value] += 1
    for phase_name, count in counts.items():
        artifacts.labels(phase=phase_name).set(count)


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread."""
    for phase in Phase:
        artifacts.labels(phase=phase).set(0)
    start_http_server(port, registry=registry)
