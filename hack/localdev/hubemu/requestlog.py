"""The emulator's request log: method, path, Range, status, body bytes -- never a token.

An entry is appended when a request starts (so a client never races the log) and completed when
the response is done; `entries()` waits for requests in flight, so a response the caller has just
received is logged with its final status and byte count.
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import Any


class RequestLog:
    def __init__(self, limit: int = 100_000, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self._done = threading.Condition()
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._inflight: set[int] = set()

    def begin(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Log a request that has just started; pass the returned entry to `end`."""
        with self._done:
            self._log.append(entry)
            self._inflight.add(id(entry))
        return entry

    def end(self, entry: dict[str, Any], **done: Any) -> None:
        """Complete `entry` with its final fields (status, bytes, repo, file, duration)."""
        with self._done:
            entry.update(done)
            self._inflight.discard(id(entry))
            self._done.notify_all()
        if self.verbose:
            print(
                f"hubemu: {entry['method']} {entry['path']} range={entry['range']} -> {entry['status']}"
                f" {entry['bytes']}B",
                file=sys.stderr,
                flush=True,
            )

    def entries(self, wait: float = 2.0) -> list[dict[str, Any]]:
        """Copies of the entries, oldest first, after waiting (up to `wait` s) for those in flight."""
        with self._done:
            pending = set(self._inflight)
            self._done.wait_for(lambda: not (pending & self._inflight), timeout=wait)
            return [dict(r) for r in self._log]

    def clear(self) -> None:
        with self._done:
            self._log.clear()
