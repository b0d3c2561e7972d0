"""The emulated link between a client and the Hub: a per-connection rate cap and latency (`Link`).

Loopback has no round trips and no per-stream limit, which hides what real users hit: a CDN edge
caps each TCP connection's throughput, so one stream per file leaves most of a fast link idle, and
every request pays a round trip (every new connection a handshake more). `Link` makes the emulator
behave so, for `bench/` and for tests:

- `conn_bps`: body bytes/s of *each* connection (token bucket per connection, no burst credit), so a
  client with N parallel connections can go N times faster, as on a real CDN. It applies to file
  bodies (`resolve` and the "CDN" redirect target), not to the small JSON answers. It is applied
  alongside `Faults`' throttles (which are shared by all connections); the slowest wins.
- `latency`: seconds added before the answer to every request (time to first byte: one round trip).
- `connect_latency`: seconds added once per new connection, before its first answer (the TCP and
  TLS handshakes a real client pays on a new connection).

`HubEmulator(conn_bps=..., latency=..., connect_latency=...)`, `HubEmulator.set_link(...)`, or the
CLI's `--conn-rate`, `--latency`, `--connect-latency`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from localdev.hubemu.faults import Bucket


@dataclass(frozen=True)
class Link:
    """What the link adds; the default is plain loopback (no cap, no latency)."""

    conn_bps: float | None = None
    latency: float = 0.0
    connect_latency: float = 0.0

    def __post_init__(self) -> None:
        if self.conn_bps is not None and self.conn_bps <= 0:
            raise ValueError(f"conn_bps must be positive or None, got {self.conn_bps}")
        if self.latency < 0 or self.connect_latency < 0:
            raise ValueError("latencies cannot be negative")

    def describe(self) -> str:
        """E.g. `40 MB/s per connection, +30 ms per request, +60 ms per new connection`."""
        parts = []
        if self.conn_bps:
            parts.append(f"{self.conn_bps / 1e6:g} MB/s per connection")
        if self.latency:
            parts.append(f"+{self.latency * 1000:g} ms per request")
        if self.connect_latency:
            parts.append(f"+{self.connect_latency * 1000:g} ms per new connection")
        return ", ".join(parts) or "loopback"


class ConnectionPace:
    """One connection's side of the link: its own bucket, and the waits it owes."""

    def __init__(self) -> None:
        self._bucket: Bucket | None = None
        self._first = True

    def wait_before_answer(self, link: Link) -> None:
        """Sleep the request's latency, plus the handshake if this is the connection's first answer."""
        delay = link.latency + (link.connect_latency if self._first else 0.0)
        self._first = False
        if delay > 0:
            time.sleep(delay)

    def bucket(self, link: Link) -> Bucket | None:
        """This connection's rate bucket (None without a cap); a changed cap starts a new one."""
        if link.conn_bps is None:
            self._bucket = None
        elif self._bucket is None or self._bucket.bps != link.conn_bps:
            self._bucket = Bucket(link.conn_bps)
        return self._bucket
