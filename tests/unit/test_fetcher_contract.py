"""The import-linter contract names every fetcher module but hub.py among those not to import the Hub.

A new module left out of the list could import `huggingface_hub` unnoticed; this keeps the list whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import modeldepot.fetcher

ROOT = Path(__file__).resolve().parents[2]


def test_every_fetcher_module_but_hub_is_forbidden_huggingface_hub() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"] == "only fetcher/hub.py imports huggingface_hub"]
    assert contract["forbidden_modules"] == ["huggingface_hub"]
    package = Path(modeldepot.fetcher.__file__).parent
    modules = {f"modeldepot.fetcher.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    assert modules - set(contract["source_modules"]) == {"modeldepot.fetcher.hub"}
