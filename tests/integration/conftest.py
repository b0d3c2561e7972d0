"""Fixtures for tests against the real local control plane (hack/localdev).

The session starts the cluster (or reuses a running one, or the cluster that
MODELDEPOT_TEST_KUBECONFIG points at) and gives each test its own namespace. Helpers the tests
import (handles, namespaces, artifacts, waits) are in support.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from support import (
    CRD_PATH,
    MINILM_DIR,
    MINILM_REPO,
    OPERATOR_NAMESPACE,
    Artifacts,
    ClusterHandle,
    OperatorHandle,
    ensure_operator_namespace,
    fresh_namespace,
    wait_until,
)

from localdev.cluster import LocalCluster, ensure_binaries, free_port


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    external = os.environ.get("MODELDEPOT_TEST_KUBECONFIG")
    bin_dir = ensure_binaries()
    if external:
        config.load_kube_config(external)
        yield ClusterHandle(Path(external), None, client.ApiClient(), bin_dir)
        return
    local = LocalCluster()
    was_up = local.status() == "up"
    local.up()
    config.load_kube_config(str(local.kubeconfig))
    try:
        yield ClusterHandle(local.kubeconfig, local.root, client.ApiClient(), bin_dir)
    finally:
        if not was_up:
            local.down()


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    with fresh_namespace(cluster) as name:
        yield name


# ---------------------------------------------------------------------------- operator and Hub


@pytest.fixture(scope="session")
def hub() -> Iterator[Any]:
    """The Hub emulator on loopback, serving MiniLM; tests add their own small repos."""
    from localdev.hubemu import HubEmulator

    emulator = HubEmulator(host="127.0.0.1", port=0)
    emulator.start()
    emulator.minilm_commit = emulator.add_repo_from_dir(MINILM_REPO, MINILM_DIR)  # type: ignore[attr-defined]
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterHandle, hub: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorHandle]:
    """The CRD installed and `modeldepot operator` running as a process against the cluster.

    Its policy allows the test Hub's endpoint (and only that one)."""
    ensure_operator_namespace(cluster)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/modelartifacts.modeldepot.dev", "--timeout=30s"
    )
    metrics_port, health_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "MODELDEPOT_METRICS_PORT": str(metrics_port),
        "MODELDEPOT_HEALTH_PORT": str(health_port),
        "MODELDEPOT_RESYNC_SECONDS": "10",
        "MODELDEPOT_CANCEL_TIMEOUT_SECONDS": "20",
        "MODELDEPOT_CLEANUP_TIMEOUT_SECONDS": "30",
        "MODELDEPOT_FAILED_RETRY_SECONDS": "5",
        "MODELDEPOT_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
        "MODELDEPOT_ALLOWED_ENDPOINTS": json.dumps([hub.url]),
        # fetchers report faster than the 2 s default so tests see progress quickly, and give up on
        # a failing Hub after two quick retries instead of about 30 s of backoff
        "MODELDEPOT_FETCHER_ENV": json.dumps(
            {
                "MODELDEPOT_REPORT_INTERVAL": "0.5",
                "MODELDEPOT_MAX_RETRIES": "2",
                "MODELDEPOT_BACKOFF_MAX": "1",
            }
        ),
    }
    handle = OperatorHandle(
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        health_url=f"http://127.0.0.1:{health_port}/healthz",
        log_path=log_path,
        argv=[str(Path(sys.executable).parent / "modeldepot"), "operator"],
        env=env,
    )
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def artifacts(cluster: ClusterHandle, operator: OperatorHandle, namespace: str) -> Iterator[Artifacts]:
    handle = Artifacts(cluster, namespace)
    yield handle
    # delete artifacts before the namespace goes, so finalizers run while the operator is up
    custom = client.CustomObjectsApi(cluster.api)

    def remaining() -> list[dict[str, Any]]:
        listing = custom.list_namespaced_custom_object(
            "modeldepot.dev", "v1alpha1", namespace, "modelartifacts"
        )
        items: list[dict[str, Any]] = listing["items"]
        return items

    for item in remaining():
        handle.delete(item["metadata"]["name"], wait=False)
    wait_until(
        lambda: not remaining(),
        timeout=120,
        what=f"artifacts in {namespace} to be finalized",
    )
