"""Which ranges of a multi-stream file are on disk (fetcher/ranges.py), and its sidecar, without a server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot import errors
from modeldepot.fetcher.ranges import (
    MIN_PART,
    RANGES_DIR,
    Coverage,
    decode,
    drop_sidecar,
    encode,
    load_coverage,
    parts,
    save_coverage,
    sidecar_rel,
)
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.verify import TransferItem

MiB = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Dir]:
    with Dir.open_root(tmp_path) as d:
        yield d


def item(root: Dir, *, size: int = 100, sha256: str | None = "a" * 64, path: str = "w.bin") -> TransferItem:
    return TransferItem(path, "https://hub.invalid/w.bin", root / path, size, "b" * 40, sha256)


def test_ranges_merge_and_the_prefix_grows_only_from_byte_zero() -> None:
    c = Coverage(100)
    c.add(10, 20)
    c.add(30, 40)
    assert c.prefix() == 0 and c.done() == 20
    c.add(20, 30)  # touches both neighbours: one range
    assert c.ranges() == [(10, 40)]
    c.add(0, 5)
    assert c.prefix() == 5
    c.add(3, 12)  # overlaps both
    assert c.ranges() == [(0, 40)] and c.prefix() == 40
    c.add(50, 50)  # empty: nothing
    assert c.ranges() == [(0, 40)]
    assert list(c.holes()) == [(40, 100)]


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4), (90, 101)])
def test_a_range_outside_the_file_is_refused(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        Coverage(100).add(start, end)


def test_holes_and_clipping() -> None:
    c = Coverage(100, [(10, 20), (50, 60)])
    assert list(c.holes()) == [(0, 10), (20, 50), (60, 100)]
    assert list(c.holes(55)) == [(60, 100)]
    assert c.clipped(55).ranges() == [(10, 20), (50, 55)]
    assert c.clipped(10).ranges() == []


def test_parts_cover_exactly_the_holes_in_order_and_share_them_between_streams() -> None:
    c = Coverage(64 * MiB, [(0, 8 * MiB), (20 * MiB, 21 * MiB)])
    ps = parts(c, streams=4, part_size=32 * MiB)
    spans = [(p.start, p.end) for p in ps]
    assert spans == sorted(spans) and all(p.offset == p.start for p in ps)
    covered = Coverage(c.size, c.ranges())
    for s, e in spans:
        assert next(iter(Coverage(c.size, c.ranges()).holes(s)))[0] == s  # never inside what is there
        covered.add(s, e)
    assert covered.ranges() == [(0, 64 * MiB)]
    assert sum(e - s for s, e in spans) == 64 * MiB - c.done()
    assert max(e - s for s, e in spans) <= -(-(64 * MiB - c.done()) // 4)  # every stream gets a part
    # never smaller than MIN_PART (a request has its own cost), never larger than part_size
    assert {p.end - p.start for p in parts(Coverage(40 * MiB), streams=32, part_size=32 * MiB)} == {MIN_PART}
    assert {p.end - p.start for p in parts(Coverage(40 * MiB), streams=1, part_size=8 * MiB)} == {8 * MiB}


def test_sidecar_round_trip(root: Dir) -> None:
    it = item(root)
    c = Coverage(100, [(0, 10), (30, 60)])
    assert decode(it, encode(it, c)) is not None
    assert decode(it, encode(it, c)).ranges() == c.ranges()  # type: ignore[union-attr]
    save_coverage(it, root, c)
    assert sidecar_rel(it).startswith(f"{RANGES_DIR}/")
    assert load_coverage(it, root, 100).ranges() == c.ranges()  # type: ignore[union-attr]
    assert load_coverage(it, root, 40).ranges() == [(0, 10), (30, 40)]  # type: ignore[union-attr]
    drop_sidecar(it, root)
    assert load_coverage(it, root, 100) is None
    drop_sidecar(it, root)  # nothing there: fine


@pytest.mark.parametrize(
    "change",
    [
        {"path": "other.bin"},
        {"size": 101},
        {"sha256": "c" * 64},
        {"blobId": "d" * 40},
        {"done": [[0, 10], [5, 20]]},  # overlapping
        {"done": [[30, 40], [0, 10]]},  # out of order
        {"done": [[0, 200]]},  # beyond the file
        {"done": [[-5, 10]]},
        {"done": [[0, 10.5]]},
        {"done": [[0, True]]},
        {"done": [[0, 1, 2]]},
        {"done": "0-10"},
        {"done": None},
    ],
)
def test_a_sidecar_of_another_file_or_malformed_is_not_trusted(root: Dir, change: dict[str, object]) -> None:
    it = item(root)
    doc = json.loads(encode(it, Coverage(100, [(0, 10)])))
    doc.update(change)
    assert decode(it, json.dumps(doc).encode()) is None
    root.mkdir(RANGES_DIR)
    root.write_atomic(sidecar_rel(it), json.dumps(doc).encode())
    assert load_coverage(it, root, 100).ranges() == []  # type: ignore[union-attr]


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"done": []}', b"\xff" * 10])
def test_a_garbage_sidecar_means_nothing_is_trusted(root: Dir, data: bytes) -> None:
    it = item(root)
    root.mkdir(RANGES_DIR)
    root.write_atomic(sidecar_rel(it), data)
    assert load_coverage(it, root, 100).ranges() == []  # type: ignore[union-attr]


def test_a_huge_sidecar_is_not_read(root: Dir, tmp_path: Path) -> None:
    it = item(root)
    root.mkdir(RANGES_DIR)
    (tmp_path / sidecar_rel(it)).write_bytes(b" " * (2 << 20))
    assert load_coverage(it, root, 100).ranges() == []  # type: ignore[union-attr]


def test_a_symlinked_sidecar_or_ranges_dir_is_never_followed(root: Dir, tmp_path: Path) -> None:
    it = item(root)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(encode(it, Coverage(100, [(0, 100)])))
    root.mkdir(RANGES_DIR)
    os.symlink(elsewhere, tmp_path / sidecar_rel(it))
    assert load_coverage(it, root, 100).ranges() == []  # type: ignore[union-attr]
    save_coverage(it, root, Coverage(100, [(0, 5)]))  # replaces the link, never writes through it
    assert not (tmp_path / sidecar_rel(it)).is_symlink()
    assert json.loads(elsewhere.read_bytes())["done"] == [[0, 100]]

    root.rmtree(RANGES_DIR)
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / RANGES_DIR)
    assert load_coverage(it, root, 100).ranges() == []  # type: ignore[union-attr]
    with pytest.raises(errors.PathConflictError):
        save_coverage(it, root, Coverage(100))
    assert list((tmp_path / "target").iterdir()) == []
    drop_sidecar(it, root)  # no error, nothing removed through the link
