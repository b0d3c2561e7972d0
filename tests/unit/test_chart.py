"""The Helm chart's static contract: its CRD copy, its values documentation and its schema.

Rendering and installing the chart needs the helm binary and lives in
tests/integration/test_helm_chart.py; these checks need neither.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldepot.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldepot"


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of values.yaml; a non-empty map whose keys are free-form (resources) is a leaf."""
    keys: list[str] = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted != "resources":
            keys += _leaves(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def test_chart_crd_is_a_byte_identical_copy_of_the_canonical_crd() -> None:
    copy = CHART / "files" / "crds" / "modelartifacts.yaml"
    assert copy.read_bytes() == (ROOT / "crds" / "modelartifacts.yaml").read_bytes(), (
        "charts/modeldepot/files/crds/modelartifacts.yaml differs from crds/modelartifacts.yaml: "
        "cp crds/modelartifacts.yaml charts/modeldepot/files/crds/"
    )


def test_crd_template_reads_the_copy_behind_enabled_and_keep() -> None:
    template = (CHART / "templates" / "crds.yaml").read_text()
    assert '.Files.Get "files/crds/modelartifacts.yaml"' in template
    assert ".Values.crds.enabled" in template
    assert ".Values.crds.keep" in template
    assert '"helm.sh/resource-policy" "keep"' in template


def test_chart_versions_and_default_image_match_the_operator_default(values: dict[str, Any]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    assert image == OperatorSettings.model_fields["fetcher_image"].default


def test_safe_defaults(values: dict[str, Any]) -> None:
    assert values["replicaCount"] == 1
    assert values["crds"] == {"enabled": True, "keep": True}
    assert values["rbac"]["scope"] == "cluster"
    assert values["health"]["port"] == OperatorSettings.model_fields["health_port"].default
    assert values["metrics"]["port"] == OperatorSettings.model_fields["metrics_port"].default
    assert values["metrics"]["serviceMonitor"]["enabled"] is False


def test_every_value_is_documented_in_values_yaml_comments(values: dict[str, Any]) -> None:
    """Each leaf value (by dotted path) is introduced by a `# --` comment block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    commented: dict[str, bool] = {}
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z]\w*):", line)
        if not match:
            continue
        depth = len(match.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack.append((depth, match.group(2)))
        dotted = ".".join(name for _, name in stack)
        above = i - 1
        while (
            above >= 0
            and lines[above].strip().startswith("#")
            and not lines[above].strip().startswith("# --")
        ):
            above -= 1
        commented[dotted] = above >= 0 and lines[above].strip().startswith("# --")
    missing = [key for key in _leaves(values) if not commented.get(key)]
    assert not missing, f"values without a '# --' comment: {missing}"


def test_every_value_is_in_the_readme_table(values: dict[str, Any]) -> None:
    readme = (CHART / "README.md").read_text().split("## Values", 1)[1]
    documented = set(re.findall(r"^\| `([\w.]+)` \|", readme, flags=re.M))
    assert set(_leaves(values)) == documented


def _schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if sub.get("type") == "object" and sub.get("additionalProperties") is False and dotted != "resources":
            keys |= _schema_keys(sub, dotted + ".")
        else:
            keys.add(dotted)
    return keys


def test_schema_covers_exactly_the_values(values: dict[str, Any], schema: dict[str, Any]) -> None:
    assert _schema_keys(schema) - {"global"} == set(_leaves(values))


def test_schema_rejects_unknown_keys_and_pins_the_replica_count_and_scope(schema: dict[str, Any]) -> None:
    assert schema["additionalProperties"] is False
    assert schema["properties"]["replicaCount"] == {
        "type": "integer",
        "const": 1,
        "description": schema["properties"]["replicaCount"]["description"],
    }
    assert schema["properties"]["rbac"]["properties"]["scope"]["enum"] == ["cluster", "namespaces"]

    def closed(node: dict[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub and path + key != "resources":
                assert sub.get("additionalProperties") is False, f"{path}{key} accepts unknown keys"
                closed(sub, f"{path}{key}.")

    closed(schema, "")
