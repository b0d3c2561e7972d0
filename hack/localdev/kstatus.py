"""kstatus's status computation for custom resources, in pure Python (for tests and tooling).

A port of the generic rules of sigs.k8s.io/cli-utils `pkg/kstatus/status` (`Compute` with
`checkGenericProperties` and `checkGeneration`), which Flux's health checks (`wait: true`,
`healthChecks`), `kubectl`-based CD tools and Cluster API use for any resource without type-specific
rules - such as ModelArtifact:

1. `metadata.deletionTimestamp` set -> Terminating.
2. `status.observedGeneration` present and != `metadata.generation` -> InProgress
   (`LatestGenerationNotObserved`). A missing `observedGeneration` skips this check.
3. The first condition in `status.conditions` that is `Reconciling=True` -> InProgress, or
   `Stalled=True` -> Failed (in list order), with that condition's message.
4. Otherwise -> Current ("Resource is current"): the absence of both conditions means done.

Ready is NOT part of kstatus's generic rules; Model Depot keeps `Reconciling`/`Stalled` consistent
with `Ready` (docs/api.md) so that kstatus and `kubectl wait --for=condition=Ready` agree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Status(enum.StrEnum):
    """kstatus's statuses (the subset a computation on one object can produce)."""

    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    CURRENT = "Current"
    TERMINATING = "Terminating"


@dataclass(frozen=True)
class Result:
    """What `status.Compute` returns: the status, a message and the condition that decided it."""

    status: Status
    message: str
    reason: str | None = None


def _int(value: Any) -> int | None:
    # unstructured.NestedInt64 accepts only integers; JSON floats such as 2.0 are decoded as ints there
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def compute(obj: Mapping[str, Any]) -> Result:
    """The kstatus status of a custom resource given as a dict in API form."""
    metadata: Mapping[str, Any] = obj.get("metadata") or {}
    status: Mapping[str, Any] = obj.get("status") or {}

    if metadata.get("deletionTimestamp"):
        return Result(Status.TERMINATING, "Resource scheduled for deletion")

    generation = _int(metadata.get("generation"))
    observed = _int(status.get("observedGeneration"))
    if generation is not None and observed is not None and observed != generation:
        kind = obj.get("kind", "")
        message = f"{kind} generation is {generation}, but latest observed generation is {observed}"
        return Result(Status.IN_PROGRESS, message, "LatestGenerationNotObserved")

    for condition in status.get("conditions") or ():
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Reconciling":
            return Result(Status.IN_PROGRESS, condition.get("message", ""), condition.get("reason"))
        if condition.get("type") == "Stalled":
            return Result(Status.FAILED, condition.get("message", ""), condition.get("reason"))

    return Result(Status.CURRENT, "Resource is current")
