"""Hostile modes of the Hub emulator (`HubEmulator.hostile`): a Hub that lies, loops, trickles or hangs.

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

All modes are cleared by `reset()` (which `HubEmulator.reset_faults()` calls).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RepoKey = tuple[str, str]


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
