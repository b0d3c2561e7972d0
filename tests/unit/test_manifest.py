"""Manifest and digest: the canonical format of docs/internals.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modeldepot.fetcher.manifest import (
    FileEntry,
    Manifest,
    compute_digest,
    digest_of_dir,
    entries_of_dir,
    sort_entries,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_digest_formula_matches_the_contract() -> None:
    files = [FileEntry("b.txt", 2, "bb"), FileEntry("a/x.bin", 10, "aa")]
    canonical = "a/x.bin\t10\taa\nb.txt\t2\tbb\n"
    assert compute_digest(files) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_digest_is_order_independent_and_content_sensitive() -> None:
    a = [FileEntry("x", 1, "11"), FileEntry("y", 2, "22")]
    assert compute_digest(a) == compute_digest(list(reversed(a)))
    assert compute_digest(a) != compute_digest([FileEntry("x", 1, "11"), FileEntry("y", 2, "23")])
    assert compute_digest(a) != compute_digest([FileEntry("x", 1, "11"), FileEntry("y", 3, "22")])


def test_sort_uses_utf8_bytes_not_locale() -> None:
    names = ["b", "B", "a/z", "a.txt", "é", "z"]
    assert [f.path for f in sort_entries(FileEntry(n, 0, "") for n in names)] == sorted(
        names, key=lambda n: n.encode()
    )
    # "a.txt" (0x2e) sorts before "a/z" (0x2f), uppercase before lowercase, "é" last.
    assert [f.path for f in sort_entries(FileEntry(n, 0, "") for n in names)] == [
        "B",
        "a.txt",
        "a/z",
        "b",
        "z",
        "é",
    ]


def test_manifest_round_trip_and_shape(tmp_path: Path) -> None:
    m = Manifest(
        repo="org/m",
        repo_type="model",
        revision="main",
        commit="c" * 40,
        files=[FileEntry("z", 1, "11"), FileEntry("a", 2, "22")],
    )
    path = m.write(tmp_path)
    assert path == tmp_path / ".modeldepot" / "manifest.json"
    data = json.loads(path.read_text())
    assert set(data) == {"repo", "repoType", "revision", "commit", "files", "digest", "createdAt"}
    assert [f["path"] for f in data["files"]] == ["a", "z"]
    assert data["files"][0] == {"path": "a", "size": 2, "sha256": "22"}
    assert data["digest"] == m.digest == compute_digest(m.files)
    assert data["createdAt"].endswith("Z")
    back = Manifest.read(tmp_path)
    assert back is not None
    assert back.to_dict() == m.to_dict()
    assert back.total_bytes == 3


def test_read_missing_or_broken_manifest_is_none(tmp_path: Path) -> None:
    assert Manifest.read(tmp_path) is None
    (tmp_path / ".modeldepot").mkdir()
    (tmp_path / ".modeldepot" / "manifest.json").write_text("{not json")
    assert Manifest.read(tmp_path) is None


def test_digest_of_dir_hashes_files_and_skips_meta(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.json").write_bytes(b"{}")
    (tmp_path / "sub" / "w.bin").write_bytes(b"\x00" * 1000)
    (tmp_path / ".modeldepot").mkdir()
    (tmp_path / ".modeldepot" / "manifest.json").write_text("ignored")
    entries = entries_of_dir(tmp_path)
    assert entries == [
        FileEntry("a.json", 2, _sha(b"{}")),
        FileEntry("sub/w.bin", 1000, _sha(b"\x00" * 1000)),
    ]
    assert digest_of_dir(tmp_path) == compute_digest(entries)


def test_digest_of_dir_follows_a_top_level_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to("real")
    assert digest_of_dir(tmp_path / "link") == digest_of_dir(real)
    # A nested ".modeldepot" directory is model content, only the top-level one is metadata.
    (real / "d").mkdir()
    (real / "d" / ".modeldepot").mkdir()
    (real / "d" / ".modeldepot" / "k").write_bytes(b"k")
    assert "d/.modeldepot/k" in [e.path for e in entries_of_dir(real)]


@pytest.mark.parametrize(
    "entry",
    [
        FileEntry("a\tb", 1, "11"),
        FileEntry("a\nb", 1, "11"),
        FileEntry("nul\x00", 1, "11"),
        FileEntry("del\x7f", 1, "11"),
        FileEntry("", 1, "11"),
        FileEntry("lone\udc80", 1, "11"),
        FileEntry("a", -1, "11"),
        FileEntry("a", True, "11"),
        FileEntry("a", 1, "11\n"),
    ],
)
def test_digest_refuses_entries_the_canonical_form_cannot_encode(entry: FileEntry) -> None:
    with pytest.raises(ValueError):
        compute_digest([FileEntry("ok", 1, "22"), entry])


def test_separators_in_names_cannot_forge_a_digest() -> None:
    # Without the check, one file named "a\t1\t11\nb" would hash like the two files a and b.
    honest = [FileEntry("a", 1, "11"), FileEntry("b", 2, "22")]
    assert compute_digest(honest)
    with pytest.raises(ValueError):
        compute_digest([FileEntry("a\t1\t11\nb", 2, "22")])


def test_manifest_with_a_forged_name_is_not_read(tmp_path: Path) -> None:
    m = Manifest(repo="org/m", repo_type="model", revision="main", commit="c" * 40, files=[])
    data = m.to_dict()
    data["files"] = [{"path": "x\ny", "size": 1, "sha256": "11"}]
    (tmp_path / ".modeldepot").mkdir()
    (tmp_path / ".modeldepot" / "manifest.json").write_text(json.dumps(data))
    assert Manifest.read(tmp_path) is None
