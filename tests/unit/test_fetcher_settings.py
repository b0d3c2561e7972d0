"""FetchSettings: defaults, the environment, overrides, conversion and bounds, without pydantic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modeldepot.fetcher.settings import FetchSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("MODELDEPOT_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = FetchSettings()
    assert (s.concurrency, s.chunk_size, s.streams, s.streams_min_size) == (8, 1 << 20, 8, 64 << 20)
    assert s.termination_log == Path("/dev/termination-log") and s.storage_root is None
    assert s.fsync is True and s.metadata_timeout == 120.0 and isinstance(s.backoff_base, float)


def test_environment_is_read_and_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPOT_STREAMS", " 3 ")
    monkeypatch.setenv("MODELDEPOT_FSYNC", "false")
    monkeypatch.setenv("MODELDEPOT_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("MODELDEPOT_STORAGE_ROOT", "/srv/models")
    monkeypatch.setenv("modeldepot_log_interval", "7")  # names match case-insensitively
    monkeypatch.setenv("MODELDEPOT_SOMETHING_ELSE", "ignored")
    s = FetchSettings()
    assert (s.streams, s.fsync, s.read_timeout, s.log_interval) == (3, False, 2.5, 7.0)
    assert s.storage_root == Path("/srv/models")


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELDEPOT_STREAMS", "3")
    monkeypatch.setenv("MODELDEPOT_CHUNK_SIZE", "131072")
    s = FetchSettings(streams=5, termination_log=str(tmp_path / "tl"))
    assert (s.streams, s.chunk_size, s.termination_log) == (5, 131072, tmp_path / "tl")


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("streams", 0, "at least 1"),
        ("streams", 33, "at most 32"),
        ("chunk_size", 1000, "at least 65536"),
        ("read_timeout", 0, "more than 0"),
        ("read_timeout", float("nan"), "number expected"),
        ("concurrency", "eight", "int expected"),
        ("concurrency", 2.5, "int expected"),
        ("concurrency", True, "int expected"),
        ("fsync", "maybe", "bool expected"),
        ("termination_log", 3, "Path expected"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(name: str, value: object, why: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: .*{why}"):
        FetchSettings(**{name: value})


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPOT_CONCURRENCY", "100")
    with pytest.raises(ValueError, match="MODELDEPOT_CONCURRENCY: must be at most 64, got 100"):
        FetchSettings()


def test_unknown_overrides_are_an_error() -> None:
    with pytest.raises(TypeError, match="no setting streamz"):
        FetchSettings(streamz=3)


def test_bounds() -> None:
    assert FetchSettings.bounds("streams") == {"ge": 1, "le": 32}
    assert FetchSettings.bounds("fsync") == {}
    with pytest.raises(KeyError):
        FetchSettings.bounds("nope")


def test_the_fetch_path_imports_neither_pydantic_nor_httpx() -> None:
    """What `modeldepot fetch` loads before it downloads: start-up is a large share of a small fetch."""
    code = (
        "import sys, modeldepot.cli, modeldepot.fetcher.run; "
        "print(sorted(m for m in ('pydantic', 'pydantic_settings', 'httpx', 'httpcore', 'kubernetes')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
