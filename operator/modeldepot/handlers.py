"""kopf handlers: thin adapters from watch events to `reconciler`, and the one place where the
package's errors become kopf's Temporary/Permanent errors.

Triggers: spec changes and operator restarts (create/update/resume), every change of a fetch Job
(progress ends, failures), status changes of node-local artifacts (progress aggregation), a
periodic safety-net timer, and deletion (the finalizer flow).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import kopf
from pydantic import ValidationError

from . import kube, metrics
from .builders import ANNOTATION_ARTIFACT, ANNOTATION_ARTIFACT_NAMESPACE
from .decisions import job_snapshot, retry_news
from .errors import ModelDepotError
from .models import (
    FETCHER_APP,
    FINALIZER,
    GROUP,
    LABEL_ARTIFACT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PLURAL,
    VERSION,
    ModelArtifact,
)
from .policy import PathClaim, path_claim
from .reconciler import ClaimLookup, JobLookup, Outcome, Reconciler
from .settings import OperatorSettings
from .vocabulary import Phase, Reason

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

RETRY_DELAY_SECONDS = 5


def kopf_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Map ModelDepotError to kopf: retryable → TemporaryError (backoff), otherwise PermanentError."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except ModelDepotError as error:
            if error.is_retryable:
                raise kopf.TemporaryError(str(error), delay=RETRY_DELAY_SECONDS) from error
            raise kopf.PermanentError(str(error)) from error

    return wrapper


def _announce(body: Any, outcome: Outcome | None) -> None:
    """Kubernetes Events for what users care about: started, cancelled, ready, failed.

    `body` is the artifact's body or a minimal object reference (apiVersion, kind, metadata).
    """
    if outcome is None:
        return
    if outcome.deleted:
        kopf.event(
            body,
            type="Normal",
            reason=Reason.DOWNLOAD_CANCELLED,
            message=f"cancelled {outcome.deleted} download Job(s): the spec changed or was suspended",
        )
    if outcome.created:
        kopf.event(
            body,
            type="Normal",
            reason=Reason.DOWNLOAD_STARTED,
            message=f"created {outcome.created} download Job(s)",
        )
    if outcome.phase == Phase.READY and outcome.previous_phase != Phase.READY:
        message = outcome.message or "verified and published"
        kopf.event(body, type="Normal", reason=Reason.READY, message=message)
    if outcome.phase == Phase.FAILED and outcome.previous_phase != Phase.FAILED:
        kopf.event(
            body,
            type="Warning",
            reason=outcome.reason or Reason.FAILED,
            message=outcome.message or "download failed",
        )


@kopf.index(GROUP, VERSION, PLURAL)
def path_claims(body: kopf.Body, **_: Any) -> dict[str, PathClaim] | None:
    """Every artifact's paths by storage, kept in memory by kopf, for PathConflict checks."""
    try:
        claim = path_claim(ModelArtifact.from_body(body))
    except ValidationError:
        return None
    return {claim.storage: claim}


@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_ARTIFACT: kopf.PRESENT})
def artifact_jobs(body: kopf.Body, namespace: str | None, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every Job the operator made (fetch and cleanup), by namespace and artifact label, kept in
    memory by kopf from the Jobs watch it has anyway: a reconcile pass reads its Jobs from here
    instead of listing a busy namespace from the API server each time."""
    return {(namespace or "", body.metadata.labels[LABEL_ARTIFACT]): job_snapshot(body)}


def _jobs(handler_kwargs: Mapping[str, Any]) -> JobLookup | None:
    """The `artifact_jobs` index as a `JobLookup` (None outside kopf: the reconciler lists)."""
    index: kopf.Index[tuple[str, str], dict[str, Any]] | None = handler_kwargs.get("artifact_jobs")
    if index is None:
        return None

    def lookup(namespace: str, selector: str) -> list[dict[str, Any]]:
        wanted = dict(pair.split("=", 1) for pair in selector.split(","))
        found = index.get((namespace, wanted.get(LABEL_ARTIFACT, "")), ())
        return [job for job in found if wanted.items() <= (job["metadata"].get("labels") or {}).items()]

    return lookup


def _reconciler(handler_kwargs: Mapping[str, Any]) -> Reconciler:
    """The Reconciler made at start-up (`run_operator`), which kopf passes as `memo`."""
    reconciler: Reconciler = handler_kwargs["memo"].reconciler
    return reconciler


def _lookup(handler_kwargs: Mapping[str, Any]) -> ClaimLookup:
    """The `path_claims` index, which kopf passes to every handler among its keyword arguments."""
    index: kopf.Index[str, PathClaim] | None = handler_kwargs.get("path_claims")
    if index is None:
        return lambda storage: ()
    return lambda storage: list(index.get(storage, ()))


async def _reconcile_from_event(
    namespace: str, name: str, trigger: str, handler_kwargs: Mapping[str, Any]
) -> Outcome | None:
    """Reconcile from a watch event; event handlers are not retried, so errors are logged and the
    periodic resync catches up."""
    try:
        return await _reconciler(handler_kwargs).reconcile(
            namespace, name, _lookup(handler_kwargs), _jobs(handler_kwargs)
        )
    except ModelDepotError as error:
        log.warning("reconcile of %s/%s after %s failed: %s", namespace, name, trigger, error)
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # status is a strict schema of our own: keep kopf's bookkeeping in annotations
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # kopf posts warnings and errors of handlers as Events; our own Events are explicit
    settings.posting.level = logging.WARNING
    metrics.serve(memo.reconciler.settings.metrics_port)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf_errors
async def spec_changed(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    **kwargs: Any,
) -> None:
    assert namespace is not None  # ModelArtifact is namespaced
    _announce(body, await _reconciler(kwargs).reconcile(namespace, name, _lookup(kwargs), _jobs(kwargs)))


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: FETCHER_APP, LABEL_ARTIFACT: kopf.PRESENT},
)
async def fetch_job_changed(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    assert namespace is not None
    annotations = body.metadata.annotations
    owner = next(
        (ref for ref in body.metadata.get("ownerReferences", []) if ref.get("kind") == "ModelArtifact"), None
    )
    if owner is not None:
        artifact_namespace, artifact_name = namespace, owner["name"]
    elif ANNOTATION_ARTIFACT_NAMESPACE in annotations and ANNOTATION_ARTIFACT in annotations:
        # a node-local Job in the operator's namespace (ownerReferences cannot cross namespaces)
        artifact_namespace = annotations[ANNOTATION_ARTIFACT_NAMESPACE]
        artifact_name = annotations[ANNOTATION_ARTIFACT]
    else:
        return
    outcome = await _reconcile_from_event(artifact_namespace, artifact_name, "a Job change", kwargs)
    if outcome is not None:
        artifact_ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelArtifact",
            "metadata": {"name": artifact_name, "namespace": artifact_namespace, "uid": outcome.uid},
        }
        _announce(artifact_ref, outcome)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def status_changed(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    type: str,
    **kwargs: Any,
) -> None:
    """Fetchers patch progress; fold it into the phase and conditions (a retry's reason while it
    waits) and, node-local, the aggregate."""
    if namespace is None or type != "MODIFIED" or body.metadata.get("deletionTimestamp"):
        return
    status = body.get("status") or {}
    node_local = bool(body.spec.get("storage", {}).get("nodeLocal"))
    progress_phase = (status.get("progress") or {}).get("phase")
    if not node_local and progress_phase == status.get("phase") and not retry_news(status):
        return
    _announce(body, await _reconcile_from_event(namespace, name, "a status change", kwargs))


@kopf_errors
async def resync(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    **kwargs: Any,
) -> None:
    assert namespace is not None
    _announce(body, await _reconciler(kwargs).reconcile(namespace, name, _lookup(kwargs), _jobs(kwargs)))


@kopf.on.delete(GROUP, VERSION, PLURAL)
@kopf_errors
async def deleted(body: kopf.Body, runtime: Any, **kwargs: Any) -> None:
    step = await _reconciler(kwargs).finalize(body, runtime.total_seconds())
    if not step.done:
        raise kopf.TemporaryError(f"deleting: waiting for {step.waiting_for}", delay=2)
    for reason, message in step.warnings:
        kopf.event(body, type="Warning", reason=reason, message=message)
    policy = body.spec.get("deletionPolicy", "Delete")
    kopf.event(
        body,
        type="Normal",
        reason=Reason.DELETED,
        message=f"downloads cancelled; files {'kept' if policy == 'Retain' else 'removed'}",
    )


def run_operator(settings: OperatorSettings) -> None:
    """Run the operator until it is stopped (`modeldepot operator`).

    The settings are read once, by the caller; the Reconciler made here holds them and reaches
    every handler as kopf's `memo`. The resync timer is registered here because its interval is
    a setting.
    """
    kopf.timer(
        GROUP, VERSION, PLURAL, interval=settings.resync_seconds, initial_delay=settings.resync_seconds
    )(resync)
    kopf.run(
        standalone=True,  # one replica by design (Deployment strategy Recreate); no peering
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(reconciler=Reconciler(settings, kube)),
    )
