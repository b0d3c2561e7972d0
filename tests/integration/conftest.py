"""Fixtures for tests against the real local control plane (hack/localdev).

The session starts the cluster (or reuses a running one, or the cluster that
MODELDEPOT_TEST_KUBECONFIG points at) and gives each test its own namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from waiting import wait_until

from localdev.cluster import LocalCluster, ensure_binaries

KUBECTL = str(Path(sys.executable).parent / "kubectl")


@dataclass
class ClusterHandle:
    kubeconfig: Path
    root: Path | None  # None when the cluster is not ours (MODELDEPOT_TEST_KUBECONFIG)
    api: client.ApiClient
    bin_dir: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def node_dir(self, node: str) -> Path:
        assert self.root is not None, "node directories exist only on the local cluster"
        return self.root / "nodes" / node


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
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": name, "labels": {"modeldepot.dev/test": "true"}}})
    # pods are rejected until the serviceaccount controller has made the namespace's default SA
    wait_until(
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
