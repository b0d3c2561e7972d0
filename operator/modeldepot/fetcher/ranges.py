"""Which byte ranges of a file being downloaded by several streams are on disk, and its sidecar.

A file fetched by several ranged streams is written out of order, so its size no longer says how
much of it is there. `Coverage` (pure) holds the written ranges; `parts` cuts what is missing into
the requests the streams take in order. The sidecar `<staging>/.modeldepot/ranges/<key>.json`
(`{"path", "size", "sha256", "blobId", "done": [[start, end], ...]}`) records them across pod
restarts. It is written atomically, before the first byte of a multi-stream download and then as
the streams progress; it only ever names bytes already written. It is a claim, not a proof:
`load_coverage` trusts it only for this very file (path, size, expected hashes) and only as far as
the file on disk reaches, and the whole file is verified against its hash at the end anyway. All
I/O goes through the staging directory's `safefs.Dir` (no symlink is followed).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modeldepot import errors
from modeldepot.fetcher.manifest import META_DIR
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.verify import TransferItem

log = logging.getLogger(__name__)

RANGES_DIR = f"{META_DIR}/ranges"
MAX_SIDECAR = 1 << 20
"""Largest sidecar read (a hostile one could be any size)."""


class Coverage:
    """Disjoint, sorted, non-adjacent half-open byte ranges `[start, end)` of a file of `size` bytes."""

    def __init__(self, size: int, ranges: list[tuple[int, int]] | None = None) -> None:
        self.size = size
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or ():
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Mark `[start, end)` as written (merging with neighbours)."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range {start}-{end} outside 0-{self.size}")
        if start == end:
            return
        lo = bisect.bisect_left(self._ends, start)  # first range that ends at or after start
        hi = bisect.bisect_right(self._starts, end)  # ranges from lo to hi-1 touch [start, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def prefix(self) -> int:
        """End of the contiguous range from byte 0 (0 if byte 0 is missing)."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def done(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def holes(self, start: int = 0) -> Iterator[tuple[int, int]]:
        """The missing ranges from `start` on, in order."""
        pos = start
        for s, e in zip(self._starts, self._ends, strict=True):
            if e <= pos:
                continue
            if s > pos:
                yield pos, s
            pos = max(pos, e)
        if pos < self.size:
            yield pos, self.size

    def clipped(self, end: int) -> Coverage:
        """This coverage without anything at or after `end`."""
        return Coverage(self.size, [(s, min(e, end)) for s, e in self.ranges() if s < end])


@dataclass
class Part:
    """A range `[start, end)` being fetched; `offset`: how far it got."""

    start: int
    end: int
    offset: int


MIN_PART = 4 << 20
PARTS_PER_STREAM = 4


def parts(coverage: Coverage, streams: int, part_size: int) -> list[Part]:
    """The missing ranges cut into parts, in file order.

    Parts are at most `part_size` bytes, and small enough that each of `streams` streams gets about
    `PARTS_PER_STREAM` (streams start at different times; with a few parts each they still end
    together), but not under `MIN_PART`: each request costs a round trip.
    """
    missing = coverage.size - coverage.done()
    size = max(MIN_PART, min(part_size, -(-missing // max(1, streams * PARTS_PER_STREAM))))
    out = []
    for start, end in coverage.holes():
        for s in range(start, end, size):
            out.append(Part(s, min(end, s + size), s))
    return out


# -- the sidecar --------------------------------------------------------------------------------


def sidecar_rel(item: TransferItem) -> str:
    """Where the sidecar of `item` lives, relative to the staging directory (a fixed-length name)."""
    key = hashlib.sha256(item.path.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return f"{RANGES_DIR}/{key}.json"


def _identity(item: TransferItem) -> dict[str, Any]:
    return {"path": item.path, "size": item.size, "sha256": item.sha256, "blobId": item.blob_id}


def encode(item: TransferItem, coverage: Coverage) -> bytes:
    return json.dumps({**_identity(item), "done": coverage.ranges()}).encode("utf-8")


def decode(item: TransferItem, data: bytes) -> Coverage | None:
    """The coverage a sidecar records for `item`, or None if it is not exactly a record of it."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or any(doc.get(k) != v for k, v in _identity(item).items()):
            return None
        done = doc["done"]
        if not isinstance(done, list):
            return None
        ranges = []
        for pair in done:
            if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
                return None
            ranges.append((pair[0], pair[1]))
        if sorted(ranges) != ranges or any(a[1] > b[0] for a, b in itertools.pairwise(ranges)):
            return None  # overlapping or out of order: not something we wrote
        return Coverage(item.size, ranges)
    except (ValueError, KeyError, TypeError):
        return None


def load_coverage(item: TransferItem, staging: Dir, file_size: int) -> Coverage | None:
    """What the sidecar of `item` says is on disk, clipped to `file_size`; None if there is none.

    A sidecar that exists but is unreadable, malformed or of another file gives an empty coverage
    (the file's bytes are then not trusted at all, since it was written out of order).
    """
    rel = sidecar_rel(item)
    try:
        st = staging.lstat(rel)
    except FileNotFoundError:
        return None
    except (OSError, errors.PathConflictError):
        return Coverage(item.size)
    coverage = None
    if st.st_size <= MAX_SIDECAR:
        try:
            coverage = decode(item, staging.read_bytes(rel))
        except (OSError, errors.PathConflictError):
            coverage = None
    if coverage is None:
        log.warning("%s: its range record is unusable; downloading it again from zero", item.path)
        return Coverage(item.size)
    return coverage.clipped(file_size)


def save_coverage(item: TransferItem, staging: Dir, coverage: Coverage) -> None:
    staging.mkdir(RANGES_DIR)
    staging.write_atomic(sidecar_rel(item), encode(item, coverage))


def drop_sidecar(item: TransferItem, staging: Dir) -> None:
    with contextlib.suppress(errors.PathConflictError):
        staging.unlink(sidecar_rel(item), missing_ok=True)
