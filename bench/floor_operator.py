"""The floor of `make bench-scale`: the least a kopf operator can do for a ModelArtifact.

It watches the same objects as Model Depot's operator and patches each one's status once
(`phase: Ready`), nothing else: no Jobs, no finalizer, no progress. Its RSS and CPU seconds are what
any kopf operator pays to follow N objects, so the scale bench prints ours as a multiple of them.

    kopf run --standalone --all-namespaces bench/floor_operator.py
"""

from __future__ import annotations

import logging
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # the same choices as Model Depot's operator: kopf's bookkeeping in annotations (the status
    # schema is strict), only warnings posted as events
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modeldepot.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="modeldepot.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING


@kopf.on.create("modeldepot.dev", "v1alpha1", "modelartifacts")
def mark_ready(patch: kopf.Patch, **_: Any) -> None:
    patch.status["phase"] = "Ready"
