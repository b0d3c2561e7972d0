"""The pure validation of the Hub's answers (fetcher/remote.py), without a Hub."""

from __future__ import annotations

import pytest

from modeldepot import errors
from modeldepot.fetcher import remote

OID = "a" * 40
SHA = "b" * 64


def test_resolved_commit_is_lower_cased_and_must_be_the_one_asked_for() -> None:
    assert remote.check_resolved("C" * 40, "org/m", "main") == "c" * 40
    assert remote.check_resolved("C" * 40, "org/m", "c" * 40) == "c" * 40
    with pytest.raises(errors.InvalidSpecError, match="names another commit"):
        remote.check_resolved("d" * 40, "org/m", "c" * 40)
    for bad in ("c" * 39, "g" * 40, None, 40):
        with pytest.raises(errors.InvalidSpecError, match="invalid commit id"):
            remote.check_resolved(bad, "org/m", "main")


def test_repo_types() -> None:
    remote.check_repo_type("model")
    remote.check_repo_type("dataset")
    with pytest.raises(errors.InvalidSpecError, match="unsupported repo type"):
        remote.check_repo_type("space")


def test_listed_file_without_lfs() -> None:
    assert remote.check_listed_file("a/b.txt", 3, OID.upper(), None) == ("a/b.txt", 3, OID, None)


@pytest.mark.parametrize("paths", [["a", "a"], ["a", "a/b"], ["a/b", "a"], ["x/y/z", "x/y"]])
def test_distinct_refuses_repeats_and_file_directory_clashes(paths: list[str]) -> None:
    with pytest.raises(errors.InvalidSpecError, match="lists"):
        remote.check_distinct(paths)


def test_distinct_accepts_prefixes_that_are_not_components() -> None:
    remote.check_distinct(["a", "ab/c", "a.d/e", "ax"])


def test_snapshot_is_validated_sorted_by_bytes_and_has_urls() -> None:
    listed = [("é.txt", 1, OID, None), ("z/w.bin", 2**40, OID, SHA.upper()), ("Z", 0, OID, None)]
    snap = remote.snapshot_of("org/m", "model", "main", "c" * 40, listed, lambda p: f"https://hub/{p}")
    assert [f.path for f in snap.files] == ["Z", "z/w.bin", "é.txt"]
    assert snap.total_bytes == 1 + 2**40
    big = snap.files[1]
    assert big.is_lfs and big.sha256 == SHA and big.url == "https://hub/z/w.bin"
    assert not snap.files[0].is_lfs


def test_snapshot_validates_every_entry_before_making_urls() -> None:
    asked: list[str] = []
    with pytest.raises(errors.InvalidSpecError, match="unsafe file path"):
        remote.snapshot_of(
            "org/m", "model", "main", "c" * 40, [("ok", 1, OID, None), ("../x", 1, OID, None)], asked.append
        )
    assert asked == []


def test_clip_bounds_what_a_hostile_answer_puts_in_a_message() -> None:
    assert remote.clip("x" * 10) == "x" * 10
    assert remote.clip("x" * 500) == "x" * 200 + "..."
