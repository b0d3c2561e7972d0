"""Fault injection: what a test makes the emulated Hub do wrong.

Ordinary faults (`Faults`): `set_throttle` (bytes/s, global or per repo, shared by all
connections), `corrupt` (flip one byte of the served bytes, advertised hashes unchanged),
`fail` (next N matching requests answer 500/503..., with `Retry-After: 0` or the one given), `truncate` (next N matching GETs close the
connection after K body bytes).

Hostile modes (`HostileHub`, `HubEmulator.hostile`): a Hub that lies, loops, trickles or hangs.
The tenant names the endpoint, so the fetcher must survive one that attacks it (docs/internals.md,
"Trust boundary"). Each mode drives one attack against the real `huggingface_hub` client:

- `set_commit_sha(repo, sha)`: `repo_info` answers this `sha` (any JSON value, e.g. a path like
  `"../../x"`) instead of the real commit; listings and downloads still use the real one.
- file names as given: `HubEmulator.add_repo_from_files(..., check_paths=False)` stores names
  verbatim (control characters, `..`, absolute, huge), so the listing advertises them.
- `loop_tree(repo)`: tree listings of the repo answer `Link: <this very URL>; rel="next"`.
- `trickle(repo, path, bps, count=None)`: the next `count` (None: all) GETs of that file send
  about `bps` bytes/s in small pieces on each connection (unlike `set_throttle`, which shares a
  bucket and sends 4 KiB bursts).
- `silence(pattern)`: requests whose URL path matches the glob are read and never answered (the
  connection stays open) until `unsilence()`, `reset()` or the emulator stops.

All hostile modes are cleared by `HostileHub.reset()` (which `HubEmulator.reset_faults()` calls).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from localdev.hubemu.store import RepoKey, repo_key


class Bucket:
    """Aggregate rate limit shared by all connections it applies to (virtual-clock token bucket)."""

    def __init__(self, bps: float) -> None:
        self.bps = bps
        self._lock = threading.Lock()
        self._next = 0.0

    def reserve(self, n: int) -> float:
        """Reserve n bytes; return how long to sleep before sending them."""
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + n / self.bps
            return max(0.0, self._next - now)


@dataclass
class Fault:
    pattern: str
    count: int
    repo_key: RepoKey | None
    methods: frozenset[str] | None
    status: int = 503
    after_bytes: int = 0
    retry_after: str | None = "0"
    """The failure's `Retry-After` header (None: none)."""

    def matches(self, method: str, url_path: str, repo_key: RepoKey | None, file: str | None) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.repo_key is not None and self.repo_key != repo_key:
            return False
        if self.pattern.startswith("/"):
            return fnmatch.fnmatchcase(url_path, self.pattern)
        return file is not None and fnmatch.fnmatchcase(file, self.pattern)


@dataclass
class _Corruption:
    offset: int
    count: int | None  # responses left to corrupt; None = forever


class Faults:
    """Throttles, corruptions and pending failures/truncations; the handler takes them per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[RepoKey | None, Bucket] = {}
        self._faults: list[Fault] = []
        self._corruptions: dict[tuple[str, str, str], list[_Corruption]] = {}

    # ------------------------------------------------------------------ test controls

    def set_throttle(self, bps: float | None, repo: RepoKey | None) -> None:
        with self._lock:
            if bps is None or bps <= 0:
                self._buckets.pop(repo, None)
            else:
                self._buckets[repo] = Bucket(float(bps))

    def corrupt(self, repo: RepoKey, path: str, offset: int, count: int | None) -> None:
        with self._lock:
            self._corruptions.setdefault((*repo, path), []).append(_Corruption(offset, count))

    def clear_corruptions(self) -> None:
        with self._lock:
            self._corruptions.clear()

    def add(
        self,
        path: str,
        count: int,
        repo_id: str | None,
        repo_type: str,
        methods: Iterable[str] | None,
        *,
        status: int,
        after_bytes: int = 0,
        retry_after: str | None = "0",
    ) -> None:
        """A failure (`status` > 0, with `retry_after` as its Retry-After) or a truncation (`status` 0,
        after `after_bytes`) of the next `count`."""
        key = None if repo_id is None else repo_key(repo_type, repo_id)
        meths = None if methods is None else frozenset(m.upper() for m in methods)
        with self._lock:
            self._faults.append(Fault(path, count, key, meths, status, after_bytes, retry_after))

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._faults.clear()
            self._corruptions.clear()

    # ------------------------------------------------------------------ used by the handler

    def take(
        self, method: str, url_path: str, repo: RepoKey | None, file: str | None, *, truncation: bool
    ) -> Fault | None:
        """The first pending failure (or truncation) matching this request, counted as used."""
        with self._lock:
            for fault in self._faults:
                if (fault.status == 0) == truncation and fault.matches(method, url_path, repo, file):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def take_corruptions(self, repo: RepoKey, path: str, start: int, end: int) -> list[int]:
        """Offsets in `start`..`end` to flip in this response (each counted as used)."""
        with self._lock:
            items = self._corruptions.get((*repo, path), [])
            out: list[int] = []
            for c in list(items):
                if start <= c.offset < end:
                    out.append(c.offset)
                    if c.count is not None:
                        c.count -= 1
                        if c.count <= 0:
                            items.remove(c)
            return sorted(set(out))

    def buckets_for(self, repo: RepoKey | None) -> list[Bucket]:
        with self._lock:
            return [b for k, b in self._buckets.items() if k is None or k == repo]


@dataclass
class _Trickle:
    bps: float
    count: int | None


class HostileHub:
    """State of the hostile modes; the emulator's request handler consults it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shas: dict[RepoKey, Any] = {}
        self._loops: set[RepoKey] = set()
        self._trickles: dict[tuple[str, str, str], _Trickle] = {}
        self._silent: list[str] = []
        self._released = threading.Event()

    # ------------------------------------------------------------------ test controls

    def set_commit_sha(self, repo_id: str, sha: Any, *, repo_type: str = "model") -> None:
        """Make `repo_info` of the repo report `sha` as its commit (any JSON value)."""
        with self._lock:
            self._shas[(repo_type, repo_id)] = sha

    def loop_tree(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Make every tree listing page of the repo point `rel="next"` at itself."""
        with self._lock:
            self._loops.add((repo_type, repo_id))

    def trickle(
        self, repo_id: str, path: str, bps: float, *, count: int | None = None, repo_type: str = "model"
    ) -> None:
        """Serve the next `count` GETs of `path` (None: all) at about `bps` bytes/s per connection."""
        with self._lock:
            self._trickles[(repo_type, repo_id, path)] = _Trickle(float(bps), count)

    def silence(self, pattern: str = "/api/*") -> None:
        """Never answer requests whose URL path matches `pattern` (a glob)."""
        with self._lock:
            self._released.clear()
            self._silent.append(pattern)

    def unsilence(self) -> None:
        """Answer again; requests being held are dropped (their connections are closed)."""
        with self._lock:
            self._silent.clear()
            self._released.set()

    def reset(self) -> None:
        with self._lock:
            self._shas.clear()
            self._loops.clear()
            self._trickles.clear()
        self.unsilence()

    # ------------------------------------------------------------------ used by the handler

    def commit_sha(self, key: RepoKey, real: str) -> Any:
        with self._lock:
            return self._shas.get(key, real)

    def next_link(self, key: RepoKey, this_url: str) -> str | None:
        with self._lock:
            return this_url if key in self._loops else None

    def take_trickle(self, key: RepoKey, path: str) -> float | None:
        with self._lock:
            t = self._trickles.get((*key, path))
            if t is None:
                return None
            if t.count is not None:
                t.count -= 1
                if t.count <= 0:
                    del self._trickles[(*key, path)]
            return t.bps

    def is_silent(self, url_path: str) -> bool:
        with self._lock:
            return any(fnmatch.fnmatchcase(url_path, p) for p in self._silent)

    def hold(self) -> None:
        """Block the calling handler until the silence is lifted."""
        self._released.wait()


def send_trickle(
    send: Callable[[bytes], None], read: Callable[[int, int], bytes], start: int, end: int, bps: float
) -> None:
    """Send bytes `start`..`end` (via `read(a, b)`) at about `bps` bytes/s in ~10 pieces a second."""
    piece = max(1, int(bps / 10))
    pos = start
    while pos < end:
        n = min(piece, end - pos)
        send(read(pos, pos + n))
        pos += n
        time.sleep(n / bps)
