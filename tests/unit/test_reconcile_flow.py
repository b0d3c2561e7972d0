"""reconcile and finalize driven through their branches against the in-memory FakeCluster."""

from __future__ import annotations

import asyncio
from typing import Any

from fakecluster import FakeCluster

from modeldepot import builders
from modeldepot.models import ModelArtifact
from modeldepot.policy import PathClaim, path_claim
from modeldepot.reconciler import JobLookup, Outcome, Reconciler
from modeldepot.settings import OperatorSettings

NS, OPS = "team-a", "md-system"
COMMIT = "a" * 40
DIGEST = "sha256:" + "d" * 64
READY = {
    "phase": "Ready",
    "commit": COMMIT,
    "digest": DIGEST,
    "totalBytes": 10,
    "fileCount": 2,
    "path": "/data/x",
}


def settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "operator_namespace": OPS,
        "allowed_endpoints": ["https://huggingface.co"],
        "cancel_timeout_seconds": 60,
        "cleanup_timeout_seconds": 120,
        **overrides,
    }
    return OperatorSettings(**values)


def claim_spec(**source: Any) -> dict[str, Any]:
    return {
        "source": {"huggingFace": {"repo": "org/model", **source}},
        "storage": {"persistentVolumeClaim": {"claimName": "models"}},
    }


def node_spec(**local: Any) -> dict[str, Any]:
    return {"source": {"huggingFace": {"repo": "org/model"}}, "storage": {"nodeLocal": local}}


def reconcile(
    cluster: FakeCluster,
    name: str,
    *,
    claims: list[PathClaim] | None = None,
    jobs: JobLookup | None = None,
    **kw: Any,
) -> Outcome:
    reconciler = Reconciler(settings(**kw), cluster)
    outcome = asyncio.run(reconciler.reconcile(NS, name, lambda storage: claims or [], jobs))
    assert outcome is not None
    return outcome


def finalize(cluster: FakeCluster, name: str, runtime: float = 0, **kw: Any) -> Any:
    body = cluster.get_artifact(NS, name)
    assert body is not None
    return asyncio.run(Reconciler(settings(**kw), cluster).finalize(body, runtime))


# --------------------------------------------------------------------------------------- reconcile


def test_a_claim_artifact_gets_one_job_and_its_own_identity_then_becomes_ready() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("llm", claim_spec())
    outcome = reconcile(cluster, "llm")
    assert (outcome.phase, outcome.created) == ("Pending", 1)
    (job,) = cluster.jobs_in(NS)
    artifact = ModelArtifact.from_body(cluster.artifacts[(NS, "llm")])
    identity = builders.fetcher_identity_name(artifact)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == identity
    assert (NS, identity) in cluster.service_accounts
    assert cluster.roles[(NS, identity)]["rules"][0]["resourceNames"] == ["llm"]

    cluster.complete(job)
    cluster.add_pod_for(job, result=READY)
    outcome = reconcile(cluster, "llm")
    assert outcome.phase == "Ready" and outcome.previous_phase == "Pending"
    assert cluster.status(NS, "llm")["digest"] == DIGEST
    # nothing changed: no further write
    writes = len(cluster.writes)
    reconcile(cluster, "llm")
    assert len(cluster.writes) == writes


def test_a_running_download_costs_no_lists_and_no_claim_writes() -> None:
    """The hot path at scale: while the fetcher reports progress, a pass reads the Jobs from the
    operator's memory (kopf's index), lists no pods and does not re-create the claim."""
    cluster = FakeCluster()
    cluster.add_artifact(
        "llm",
        {
            **claim_spec(),
            "storage": {"persistentVolumeClaim": {"claimName": "models", "create": {"size": "1Gi"}}},
        },
    )
    indexed: list[str] = []

    def from_memory(namespace: str, selector: str) -> list[dict[str, Any]]:
        indexed.append(namespace)
        return cluster.jobs_matching(namespace, selector)

    assert reconcile(cluster, "llm", jobs=from_memory).created == 1
    assert cluster.writes.count(f"create-claim {NS}/models") == 1
    (job,) = cluster.jobs_in(NS)
    cluster.jobs[(NS, job["metadata"]["name"])]["status"] = {"active": 1}
    cluster.add_pod_for(job)
    cluster.artifacts[(NS, "llm")]["status"]["progress"] = {
        "phase": "Downloading",
        "observedGeneration": 1,
        "bytesDone": 5,
        "bytesTotal": 10,
    }
    cluster.lists.clear()
    writes = len(cluster.writes)
    assert reconcile(cluster, "llm", jobs=from_memory).phase == "Downloading"
    assert cluster.lists == [] and indexed
    assert not [w for w in cluster.writes[writes:] if "claim" in w or "create" in w]

    # the Job finished: now its pod's result is needed, once; after Ready is recorded, no more
    cluster.complete(job)
    cluster.pods.clear()
    cluster.add_pod_for(job, result=READY)
    assert reconcile(cluster, "llm", jobs=from_memory).phase == "Ready"
    assert cluster.lists == [f"pods {NS}"]
    reconcile(cluster, "llm", jobs=from_memory)
    assert cluster.lists == [f"pods {NS}"]


def test_a_fetcher_that_has_not_reported_gets_its_pod_read() -> None:
    """An active Job without progress may be stuck on a missing Secret: the pass reads its pod."""
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("llm", claim_spec())
    reconcile(cluster, "llm")
    (job,) = cluster.jobs_in(NS)
    cluster.jobs[(NS, job["metadata"]["name"])]["status"] = {"active": 1}
    cluster.lists.clear()
    reconcile(cluster, "llm")
    assert f"pods {NS}" in cluster.lists


def test_a_missing_claim_blocks_the_job() -> None:
    cluster = FakeCluster()
    cluster.add_artifact("llm", claim_spec())
    assert reconcile(cluster, "llm").phase == "Failed"
    assert cluster.condition(NS, "llm")["reason"] == "StorageNotFound"
    assert not cluster.jobs


def test_policy_violation_cancels_running_jobs_and_creates_none() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("llm", claim_spec())
    reconcile(cluster, "llm")
    assert cluster.jobs
    # the admin narrows the policy: the mirror it was admitted with is no longer allowed
    cluster.artifacts[(NS, "llm")]["spec"]["source"]["huggingFace"]["endpoint"] = "https://mirror.example"
    outcome = reconcile(cluster, "llm")
    assert (outcome.phase, outcome.reason, outcome.deleted) == ("Failed", "PolicyViolation", 1)
    assert "policy.allowedEndpoints" in cluster.condition(NS, "llm")["message"]
    assert not cluster.jobs


def test_path_conflict_with_an_older_artifact_creates_nothing() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("second", claim_spec())
    cluster.artifacts[(NS, "second")]["spec"]["storage"]["persistentVolumeClaim"]["path"] = "shared"
    older = ModelArtifact.from_body(
        {
            "metadata": {
                "name": "first",
                "namespace": NS,
                "uid": "u0",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "source": {"huggingFace": {"repo": "a/b"}},
                "storage": {"persistentVolumeClaim": {"claimName": "models", "path": "shared"}},
            },
        }
    )
    outcome = reconcile(cluster, "second", claims=[path_claim(older)])
    assert (outcome.phase, outcome.reason) == ("Failed", "PathConflict")
    assert "team-a/first" in cluster.condition(NS, "second")["message"]
    assert not cluster.jobs


def test_a_missing_token_secret_blocks_until_it_exists() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("gated", claim_spec(tokenSecretRef={"name": "hf", "key": "token"}))
    assert reconcile(cluster, "gated").phase == "Failed"
    assert cluster.condition(NS, "gated")["reason"] == "TokenSecretNotFound"
    assert not cluster.jobs
    cluster.secrets[(NS, "hf")] = {"token": b"hf_x"}
    assert reconcile(cluster, "gated").created == 1


def test_node_local_jobs_run_in_the_operators_namespace_with_a_token_copy() -> None:
    cluster = FakeCluster()
    for node in ("n1", "n2", "n3"):
        cluster.add_node(node, gpu="true" if node != "n2" else "false")
    cluster.secrets[(NS, "hf")] = {"token": b"hf_secret"}
    spec = node_spec(nodeSelector={"gpu": "true"})
    spec["source"]["huggingFace"]["tokenSecretRef"] = {"name": "hf"}
    cluster.add_artifact("local", spec)
    assert reconcile(cluster, "local").created == 2
    assert not cluster.jobs_in(NS)
    jobs = cluster.jobs_in(OPS)
    assert sorted(j["metadata"]["annotations"]["modeldepot.dev/node"] for j in jobs) == ["n1", "n3"]
    identity = builders.fetcher_identity_name(ModelArtifact.from_body(cluster.artifacts[(NS, "local")]))
    assert cluster.secrets[(OPS, identity)] == {"token": b"hf_secret"}
    assert (OPS, identity) in cluster.service_accounts


def test_no_matching_nodes_is_a_failure_without_jobs() -> None:
    cluster = FakeCluster()
    cluster.add_node("n1", gpu="false")
    cluster.add_artifact("local", node_spec(nodeSelector={"gpu": "true"}))
    assert reconcile(cluster, "local").reason == "NoMatchingNodes"
    assert not cluster.jobs


def test_a_node_matching_again_waits_for_its_cleanup_job() -> None:
    cluster = FakeCluster()
    cluster.add_node("n1", gpu="true")
    cluster.add_artifact("local", node_spec(nodeSelector={"gpu": "true"}))
    artifact = ModelArtifact.from_body(cluster.artifacts[(NS, "local")])
    defaults = builders.JobDefaults(image="x", operator_namespace=OPS)
    cleanup = builders.cleanup_job(artifact, node="n1", defaults=defaults)
    cluster.create_job(cleanup)
    assert reconcile(cluster, "local").created == 0  # the copy is still being removed
    cluster.complete(cleanup)
    assert reconcile(cluster, "local").created == 1
    assert not cluster.jobs_in(OPS, "modeldepot-cleanup")


# ---------------------------------------------------------------------------------------- finalize


def test_finalize_waits_for_download_pods_then_cleans_the_claim() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("llm", claim_spec())
    reconcile(cluster, "llm")
    (job,) = cluster.jobs_in(NS)
    cluster.add_pod_for(job, node="n1")
    step = finalize(cluster, "llm")
    assert not step.done and "download pod" in step.waiting_for
    assert not cluster.jobs_in(NS), "fetch Jobs are deleted at once"
    assert cluster.status(NS, "llm")["phase"] == "Deleting"
    cluster.pods.clear()  # the pod stopped
    step = finalize(cluster, "llm", runtime=1)
    assert not step.done and "cleanup Job" in step.waiting_for
    (cleanup,) = cluster.jobs_in(NS, "modeldepot-cleanup")
    assert "--owner" in cleanup["spec"]["template"]["spec"]["containers"][0]["args"]
    cluster.complete(cleanup)
    assert finalize(cluster, "llm", runtime=2).done


def test_finalize_releases_pods_of_vanished_nodes_after_the_cancel_timeout() -> None:
    cluster = FakeCluster()
    cluster.add_node("n1")
    cluster.add_artifact("local", node_spec(), generation=1)
    cluster.artifacts[(NS, "local")]["spec"]["deletionPolicy"] = "Retain"
    reconcile(cluster, "local")
    (job,) = cluster.jobs_in(OPS)
    cluster.add_pod_for(job, node="n1")
    del cluster.nodes["n1"]
    assert not finalize(cluster, "local", runtime=10).done
    step = finalize(cluster, "local", runtime=61)
    assert step.done
    assert [w[0] for w in step.warnings] == ["CancelTimedOut"]
    assert not cluster.pods
    identity = builders.fetcher_identity_name(ModelArtifact.from_body(cluster.artifacts[(NS, "local")]))
    assert f"delete-fetcher-objects {OPS}/{identity}" in cluster.writes


def test_finalize_gives_up_on_a_slow_cleanup_with_a_warning() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("llm", claim_spec())
    assert not finalize(cluster, "llm").done
    step = finalize(cluster, "llm", runtime=121)
    assert step.done and [w[0] for w in step.warnings] == ["CleanupTimedOut"]


def test_finalize_when_the_claim_or_node_is_gone() -> None:
    cluster = FakeCluster()
    cluster.add_artifact("llm", claim_spec())
    step = finalize(cluster, "llm")
    assert step.done and [w[0] for w in step.warnings] == ["StorageGone"]
    assert not cluster.jobs

    cluster.add_artifact("local", node_spec())
    cluster.artifacts[(NS, "local")]["status"] = {"nodes": [{"name": "gone-node", "phase": "Ready"}]}
    step = finalize(cluster, "local")
    assert step.done and [w[0] for w in step.warnings] == ["NodeGone"]


def test_finalize_runs_no_job_for_a_spec_against_policy() -> None:
    cluster = FakeCluster()
    cluster.add_node("n1")
    cluster.add_artifact("root", node_spec(path="/etc"))
    cluster.artifacts[(NS, "root")]["status"] = {"nodes": [{"name": "n1", "phase": "Ready"}]}
    step = finalize(cluster, "root")
    assert step.done and [w[0] for w in step.warnings] == ["PolicyViolation"]
    assert not cluster.jobs


def test_retain_keeps_the_files() -> None:
    cluster = FakeCluster()
    cluster.add_claim(NS, "models")
    cluster.add_artifact("llm", claim_spec())
    cluster.artifacts[(NS, "llm")]["spec"]["deletionPolicy"] = "Retain"
    assert finalize(cluster, "llm").done
    assert not cluster.jobs_in(NS, "modeldepot-cleanup")
