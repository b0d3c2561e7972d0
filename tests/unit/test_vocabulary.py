"""One vocabulary: every reason and phase written on the wire is a member of `vocabulary`, and the
documents that list them name only members."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from modeldepot import errors, metrics
from modeldepot.vocabulary import Phase, Reason

ROOT = Path(__file__).resolve().parents[2]


def _error_classes(cls: type[errors.ModelDepotError]) -> list[type[errors.ModelDepotError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_error_classes(sub))]


def test_every_error_has_its_own_reason_from_the_vocabulary() -> None:
    classes = _error_classes(errors.ModelDepotError)
    reasons = [c.reason for c in classes]
    assert all(isinstance(r, Reason) for r in [errors.ModelDepotError.reason, *reasons])
    assert len(set(reasons)) == len(reasons)
    # the fetcher reports these reasons; the operator looks up whether each is retryable
    assert set(errors.ERRORS_BY_REASON.values()) == set(classes) - {errors.KubernetesApiError}


def test_the_documented_reasons_are_the_vocabulary() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    section = api.split("### Failure reasons", 1)[1].split("\n#", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    assert len(documented) > 10
    assert set(documented) <= set(Reason)
    internals = (ROOT / "docs" / "internals.md").read_text()
    listed = re.findall(r"`([A-Z]\w+)`", internals.split("## Error reasons", 1)[1])
    assert len(listed) > 10
    assert set(listed) <= set(Reason)


def test_the_phase_gauge_has_one_series_per_phase() -> None:
    metrics.record_phase("ns", "a", Phase.READY)
    text = generate_latest(metrics.registry).decode()
    metrics.record_phase("ns", "a", None)
    series = set(re.findall(r'^modeldepot_artifacts\{phase="(\w+)"\}', text, re.MULTILINE))
    assert series == set(Phase)
