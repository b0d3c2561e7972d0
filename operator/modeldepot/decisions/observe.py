"""Observations turned into decision inputs: a fetch Job and its pod's result as `JobState`, and
whether a pass needs the pods at all.

Pure: reads batch/v1 Job and core/v1 Pod dicts as listed by the reconciler.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import builders
from ..errors import ERRORS_BY_REASON
from ..models import (
    LABEL_GENERATION,
    LABEL_NODE,
    JobResult,
    ModelArtifact,
    RetryStatus,
    parse_termination_message,
)
from ..vocabulary import Phase, Reason
from .status import READY, current_entry, recorded, retry_message

# Kubernetes' words, read from Jobs and pods (not ours to define):
# pod waiting reasons that mean the fetcher cannot start until the user fixes something
_CONFIG_ERRORS = {"CreateContainerConfigError"}
# batch/v1 Job condition types of a finished Job
_JOB_COMPLETE = ("Complete", "SuccessCriteriaMet")
_JOB_FAILED = ("Failed", "FailureTarget")
# Job failure reasons (batch/v1) that name the failure better than the fetcher's own result; we
# report them with the same words
JOB_REASONS = {Reason.BACKOFF_LIMIT_EXCEEDED, Reason.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class JobState:
    """What the decisions need to know about one fetch Job (and its pod's termination message)."""

    name: str
    generation: int
    node: str | None = None
    active: int = 0
    ready: int = 0  # pods running (a fetch pod has no readiness probe)
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    deleting: bool = False
    result: JobResult | None = None
    failed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.complete or self.failure_reason is not None

    @classmethod
    def from_job(cls, job: Mapping[str, Any], result: JobResult | str | None = None) -> JobState:
        """Read a batch/v1 Job dict built by ``builders.fetch_job``; ``result`` is the parsed (or raw)
        termination message of its last pod, if any."""
        meta = job.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        status = job.get("status") or {}
        try:
            generation = int(labels.get(LABEL_GENERATION, -1))
        except (TypeError, ValueError):
            generation = -1
        complete = False
        failed_at: datetime | None = None
        failure_reason: str | None = None
        failure_message: str | None = None
        for cond in status.get("conditions") or ():
            if cond.get("status") != "True":
                continue
            if cond.get("type") in _JOB_COMPLETE:
                complete = True
            elif cond.get("type") in _JOB_FAILED:
                failure_reason = cond.get("reason") or Reason.FAILED
                failure_message = cond.get("message")
                failed_at = parse_time(cond.get("lastTransitionTime")) or failed_at
        if isinstance(result, str):
            result = parse_termination_message(result)
        return cls(
            name=str(meta.get("name", "")),
            generation=generation,
            node=annotations.get(LABEL_NODE) or labels.get(LABEL_NODE),
            active=int(status.get("active") or 0),
            ready=int(status.get("ready") or 0),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            complete=complete,
            failure_reason=failure_reason,
            failure_message=failure_message,
            deleting=bool(meta.get("deletionTimestamp")),
            result=result,
            failed_at=failed_at,
        )


def job_snapshot(job: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass reads of a Job (`JobState.from_job`, `job_duration`, the pods' `job-name`), and
    only that, so an in-memory index of every Job stays small."""
    meta = job.get("metadata") or {}
    kept = ("name", "namespace", "uid", "labels", "annotations", "creationTimestamp", "deletionTimestamp")
    return {
        "metadata": {key: copy.deepcopy(meta[key]) for key in kept if meta.get(key) is not None},
        "status": copy.deepcopy(dict(job.get("status") or {})),
    }


def pods_needed(artifact: ModelArtifact, jobs: Iterable[JobState]) -> bool:
    """Whether a pass must read the Jobs' pods: for a finished or failing Job's result (unless the
    status already records it), or to see why an active Job's fetcher has not reported yet (a
    missing Secret). Not while every fetcher reports progress, the common case of a download, so a
    busy namespace is not listed on every progress event."""
    for job in jobs:
        if job.deleting:
            continue
        if job.complete or job.succeeded > 0:
            if recorded(artifact, job.node) is None:
                return True
        elif job.failure_reason is not None or job.failed > 0:
            return True
        else:
            entry = current_entry(artifact, job.node)
            if entry is None or entry.phase in (None, Phase.PENDING):
                return True
    return False


def retry_news(status: Mapping[str, Any]) -> bool:
    """Whether a claim's status (as a watch event brings it) shows a fetcher's retry, or the end of
    one, that the conditions do not show yet, so that a pass folds it into them. The conditions of
    a download carry the reason and message of the retry it waits for (`overall`), and `Downloading`
    otherwise."""
    progress = status.get("progress") or {}
    if progress.get("phase") != Phase.DOWNLOADING or status.get("phase") != Phase.DOWNLOADING:
        return False
    ready = next((c for c in status.get("conditions") or () if c.get("type") == READY), None)
    if ready is None:
        return False
    retry = progress.get("retry")
    if not retry:
        return bool(ready.get("reason") != Reason.DOWNLOADING)
    try:
        shown = RetryStatus.model_validate(retry)
    except ValueError:  # pydantic's ValidationError: not ours to fold in
        return False
    return bool(ready.get("reason") != shown.reason or ready.get("message") != retry_message(shown))


def pod_result(
    pods: Iterable[Mapping[str, Any]], container: str = builders.FETCH_CONTAINER
) -> JobResult | None:
    """The result of a Job's newest finished pod: the container's termination message (core/v1 Pod
    dicts as listed by the Job's ``batch.kubernetes.io/job-name`` label)."""
    best: tuple[str, JobResult] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            if cs.get("name") != container:
                continue
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if not term:
                continue
            result = parse_termination_message(term.get("message"))
            finished = str(term.get("finishedAt") or "")
            if result is not None and (best is None or finished > best[0]):
                best = (finished, result)
    return best[1] if best else None


def retry_due(job: JobState, retry_after: timedelta | None, now: datetime) -> bool:
    return (
        retry_after is not None
        and job.failure_reason is not None
        and not job.deleting
        and job.failed_at is not None
        and is_transient(job)
        and now - job.failed_at >= retry_after
    )


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def is_transient(job: JobState) -> bool:
    """Whether a failed Job failed for a reason that may pass (the Hub was down, a timeout), as
    opposed to one only a spec change can fix (unknown repo, bad token, corrupt bytes)."""
    reason = job.result.reason if job.result is not None and job.result.phase == Phase.FAILED else None
    if reason is None:
        # no result from the fetcher: the pod died (OOM, eviction, deadline) rather than decided
        return True
    error = ERRORS_BY_REASON.get(reason)
    return error is not None and error.retryable


def config_error(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """Why the fetcher cannot start (a missing Secret key, as the kubelet reports it), if so."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _CONFIG_ERRORS:
                return str(waiting.get("message") or waiting["reason"])
    return None


def job_duration(job: Mapping[str, Any]) -> float | None:
    status = job.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return (parse(str(end).replace("Z", "+00:00")) - parse(str(start).replace("Z", "+00:00"))).total_seconds()
