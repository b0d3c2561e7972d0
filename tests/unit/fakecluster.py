"""An in-memory stand-in for `modeldepot.clusterapi.ClusterApi`, for unit tests of the reconciler.

A mock only in the sense that no apiserver runs: it stores objects as plain dicts, matches label
selectors, applies JSON merge patches to status (a list in one replaces the whole list, as on the
API server) and server-side applies of `status.nodes` entries with the API server's field
ownership (`apply_nodes`), and records every write, so tests can drive reconcile and finalize
through their branches in milliseconds. The real behaviour (RBAC, owner references, the Job
controller, the API server's own apply) is covered by tests/integration against a real control plane.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from modeldepot.models import NodeStatus, node_field_manager

Key = tuple[str, str]
# who owns which fields of each status.nodes entry: artifact -> node -> field manager -> fields
Owners = dict[str, dict[str, set[str]]]
# the manager a merge patch writes as (an "Update" operation, as kubectl edit or a client would)
MERGE_MANAGER = "merge-patch"


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _key(obj: Mapping[str, Any]) -> Key:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


class FakeCluster:
    """The objects the operator reads and writes, a log of its writes (`writes`) and of its lists
    (`lists`)."""

    def __init__(self) -> None:
        self.artifacts: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.claims: dict[Key, dict[str, Any]] = {}
        self.secrets: dict[Key, dict[str, bytes]] = {}
        self.service_accounts: set[Key] = set()
        self.roles: dict[Key, dict[str, Any]] = {}
        self.node_owners: dict[Key, Owners] = {}
        self.writes: list[str] = []
        self.lists: list[str] = []
        self.status_patches: list[dict[str, Any]] = []
        self.config_maps: dict[Key, dict[str, Any]] = {}

    # ------------------------------------------------------------------------- the protocol

    def get_artifact(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.artifacts.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def patch_artifact_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.writes.append(f"patch-status {namespace}/{name}")
        self.status_patches.append(json.loads(json.dumps(patch)))
        body = self.artifacts[(namespace, name)]
        merge_patch(body, json.loads(json.dumps(patch)))
        if "nodes" in (patch.get("status") or {}):
            # the list was replaced whole: every entry now belongs to the merge patch's manager
            nodes = (body.get("status") or {}).get("nodes") or []
            self.node_owners[(namespace, name)] = {
                e["name"]: {MERGE_MANAGER: set(e) - {"name"}} for e in nodes if isinstance(e, dict)
            }

    def apply_node_status(self, namespace: str, name: str, entry: NodeStatus) -> None:
        self.apply_nodes(namespace, name, node_field_manager(entry.name), [entry.to_api()])

    def forget_node_status(self, namespace: str, name: str, node: str) -> None:
        self.apply_nodes(namespace, name, node_field_manager(node), [])

    def list_nodes(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(n) for n in self.nodes.values()]

    def node_exists(self, name: str) -> bool:
        return name in self.nodes

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists.append(f"jobs {namespace}")
        return self.jobs_matching(namespace, selector)

    def jobs_matching(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(j)
            for (ns, _), j in sorted(self.jobs.items())
            if ns == namespace and _matches(j["metadata"].get("labels") or {}, selector)
        ]

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists.append(f"pods {namespace}")
        return [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.pods.items())
            if ns == namespace and _matches(p["metadata"].get("labels") or {}, selector)
        ]

    def create_job(self, manifest: Mapping[str, Any]) -> bool:
        key = _key(manifest)
        self.writes.append(f"create-job {key[0]}/{key[1]}")
        if key in self.jobs:
            return False
        job = copy.deepcopy(dict(manifest))
        job["metadata"]["uid"] = f"uid-{key[1]}"
        job["status"] = {}
        self.jobs[key] = job
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        self.writes.append(f"delete-job {namespace}/{name}")
        self.jobs.pop((namespace, name), None)

    def force_delete_pod(self, namespace: str, name: str) -> None:
        self.writes.append(f"force-delete-pod {namespace}/{name}")
        self.pods.pop((namespace, name), None)

    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.claims.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def create_claim(self, manifest: Mapping[str, Any]) -> bool:
        key = _key(manifest)
        if key in self.claims:
            return False
        self.writes.append(f"create-claim {key[0]}/{key[1]}")
        self.claims[key] = copy.deepcopy(dict(manifest))
        return True

    def ensure_fetcher_identity(
        self, service_account: Mapping[str, Any], role: Mapping[str, Any], binding: Mapping[str, Any]
    ) -> None:
        self.service_accounts.add(_key(service_account))
        self.roles[_key(role)] = copy.deepcopy(dict(role))

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        return self.secrets.get((namespace, name), {}).get(key)

    def apply_secret(self, manifest: Mapping[str, Any]) -> None:
        import base64

        key = _key(manifest)
        self.writes.append(f"apply-secret {key[0]}/{key[1]}")
        self.secrets[key] = {k: base64.b64decode(v) for k, v in manifest["data"].items()}

    def delete_fetcher_objects(self, namespace: str, name: str) -> None:
        self.writes.append(f"delete-fetcher-objects {namespace}/{name}")
        self.service_accounts.discard((namespace, name))
        self.secrets.pop((namespace, name), None)
        self.config_maps.pop((namespace, name), None)

    def get_node_records(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.config_maps.get((namespace, name))
        return dict(found.get("data") or {}) if found is not None else None

    def write_node_records(self, manifest: Mapping[str, Any]) -> None:
        key = _key(manifest)
        self.writes.append(f"write-records {key[0]}/{key[1]}")
        self.config_maps[key] = copy.deepcopy(dict(manifest))

    def apply_nodes(self, namespace: str, name: str, manager: str, entries: list[dict[str, Any]]) -> None:
        """Server-side apply, with force, of `status.nodes` (a list-map keyed by `name`) by one field
        manager, as the API server does it: the manager then owns exactly the fields it applied
        (taking them from other managers); a field it owned and no longer names is removed unless
        another manager owns it; an entry whose fields nobody owns any more is removed."""
        self.writes.append(f"apply-status {namespace}/{name} {manager}")
        status = self.artifacts[(namespace, name)].setdefault("status", {})
        nodes: list[dict[str, Any]] = status.get("nodes") or []
        owners = self.node_owners.setdefault((namespace, name), {})
        applied = {e["name"]: copy.deepcopy(e) for e in entries}
        for node in [*owners, *(n for n in applied if n not in owners)]:
            by_manager = owners.setdefault(node, {})
            before = by_manager.pop(manager, set())
            now = set(applied.get(node, {})) - {"name"}
            for fields in by_manager.values():
                fields -= now
            current = next((e for e in nodes if e["name"] == node), None)
            if node in applied:
                if current is None:
                    current = {"name": node}
                    nodes.append(current)
                current.update({k: v for k, v in applied[node].items() if k != "name"})
            others = set().union(*by_manager.values())
            for field in before - now - others:
                if current is not None:
                    current.pop(field, None)
            if now:
                by_manager[manager] = now
            if not any(by_manager.values()):
                owners.pop(node)
                nodes = [e for e in nodes if e["name"] != node]
        if nodes:
            status["nodes"] = nodes
        else:
            status.pop("nodes", None)

    # ------------------------------------------------------------------------ test helpers

    def add_artifact(
        self, name: str, spec: dict[str, Any], *, namespace: str = "team-a", generation: int = 1
    ) -> None:
        self.artifacts[(namespace, name)] = {
            "apiVersion": "modeldepot.dev/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{namespace}-{name}",
                "generation": generation,
                "creationTimestamp": "2026-11-22T06:00:00Z",
            },
            "spec": spec,
        }

    def add_node(self, name: str, **labels: str) -> None:
        self.nodes[name] = {"metadata": {"name": name, "labels": labels}, "spec": {}}

    def add_claim(self, namespace: str, name: str, *, deleting: bool = False) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if deleting:
            meta["deletionTimestamp"] = "2026-11-22T06:00:00Z"
        self.claims[(namespace, name)] = {"metadata": meta}

    def add_pod_for(
        self, job: Mapping[str, Any], *, node: str = "", result: dict[str, Any] | None = None
    ) -> None:
        """A pod of `job`, running, or terminated with `result` as its termination message."""
        namespace, name = _key(job)
        labels = {**(job["spec"]["template"]["metadata"].get("labels") or {}), "job-name": name}
        state: dict[str, Any] = {"running": {}}
        if result is not None:
            state = {"terminated": {"message": json.dumps(result), "finishedAt": "2026-11-22T06:01:00Z"}}
        self.pods[(namespace, f"{name}-pod")] = {
            "metadata": {"name": f"{name}-pod", "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node},
            "status": {
                "phase": "Running" if result is None else "Succeeded",
                "containerStatuses": [{"name": "fetch", "state": state}],
            },
        }

    def complete(self, job: Mapping[str, Any]) -> None:
        stored = self.jobs[_key(job)]
        stored["status"] = {
            "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}],
            "startTime": "2026-11-22T06:00:00Z",
            "completionTime": "2026-11-22T06:01:00Z",
        }

    def jobs_in(self, namespace: str, app: str = "modeldepot-fetcher") -> list[dict[str, Any]]:
        return self.jobs_matching(namespace, f"app.kubernetes.io/name={app}")

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.artifacts[(namespace, name)].get("status") or {}
        return status

    def condition(self, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any]:
        return next(c for c in self.status(namespace, name)["conditions"] if c["type"] == type_)
