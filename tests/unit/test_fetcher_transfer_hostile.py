"""Transfer against a hostile server: trickles, one-byte connections, redirects to other hosts.

Short settings (stall_window below a second) keep these fast; no test asserts on wall time beyond
"it finished".
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot import errors
from modeldepot.fetcher.hub import HubClient
from modeldepot.fetcher.retry import RetryNotice
from modeldepot.fetcher.transfer import RetryPolicy, Transfer, TransferItem

SIZE = 200_000


def dest(tmp_path: Path, name: str) -> Any:
    """Where the transfer writes `name` below `tmp_path`."""
    try:
        from modeldepot.fetcher import safefs
    except ImportError:  # before staging access went through safefs
        return tmp_path / name
    return safefs.Location(safefs.Dir.open_root(tmp_path), name)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    with HubEmulator() as emu:
        emu.add_repo_from_files("org/t", {"w.bin": (SIZE, 3)})
        yield emu


def item_of(hub: HubEmulator, tmp_path: Path) -> TransferItem:
    (f,) = HubClient(endpoint=hub.url).snapshot("org/t").files
    return TransferItem(f.path, f.url, dest(tmp_path, f.path), f.size, f.blob_id, f.sha256)


def transfer(**kw: Any) -> Transfer:
    kw.setdefault("headers", {})
    kw.setdefault("retry", RetryPolicy(2, 0.01, 0.02))
    kw.setdefault("min_bytes_per_second", 64 * 1024)
    kw.setdefault("stall_window", 0.5)
    return Transfer(**kw)


def gets(hub: HubEmulator) -> list[dict[str, Any]]:
    return [r for r in hub.requests if r["method"] == "GET" and r.get("file") == "w.bin"]


def test_a_trickle_is_cut_and_resumed_by_range(
    hub: HubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.hostile.trickle("org/t", "w.bin", 4000, count=1)
    item = item_of(hub, tmp_path)
    caplog.set_level(logging.WARNING)
    heard: list[RetryNotice | None] = []
    with transfer(retry=RetryPolicy(2, 0.01, 0.02, on_retry=heard.append)) as t:
        v = t.fetch(item)
    assert v.sha256 == hub.repo_files("org/t")["w.bin"]["sha256"]
    assert "stalled" in caplog.text
    # the status shows the cut while the retry waits
    assert [(n.reason, n.attempt, n.max_attempts) for n in heard if n is not None] == [("SlowTransfer", 2, 3)]
    assert heard[0] is not None and heard[0].message.startswith("w.bin: stalled, ")
    requests = gets(hub)
    assert len(requests) == 2
    assert requests[0]["range"] is None and 0 < requests[0]["bytes"] < SIZE
    resumed_at = int(requests[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= requests[0]["bytes"]  # what reached us before the cut is kept


def test_a_trickle_for_ever_fails_after_the_retries(hub: HubEmulator, tmp_path: Path) -> None:
    hub.hostile.trickle("org/t", "w.bin", 4000)  # every response, although each brings bytes
    with transfer() as t, pytest.raises(errors.DownloadFailedError, match="stalled") as exc:
        t.fetch(item_of(hub, tmp_path))
    assert exc.value.retryable
    assert len(gets(hub)) == 3  # max_retries=2: three attempts, then the transient failure


def test_one_byte_per_connection_does_not_reset_the_retries(hub: HubEmulator, tmp_path: Path) -> None:
    hub.truncate_next("w.bin", after_bytes=1, count=100)
    heard: list[RetryNotice | None] = []
    policy = RetryPolicy(2, 0.01, 0.02, on_retry=heard.append)
    with transfer(retry=policy) as t, pytest.raises(errors.DownloadFailedError):
        t.fetch(item_of(hub, tmp_path))
    assert len(gets(hub)) == 3
    assert [(n.reason, n.attempt) for n in heard if n is not None] == [
        ("DownloadFailed", 2),
        ("DownloadFailed", 3),
    ]


def test_real_progress_still_resets_the_retries(hub: HubEmulator, tmp_path: Path) -> None:
    hub.truncate_next("w.bin", after_bytes=40_000, count=4)  # 4 cuts > 2 retries, each real progress
    with transfer(min_bytes_per_second=10_000, stall_window=1) as t:  # progress floor 10 kB
        assert t.fetch(item_of(hub, tmp_path)).size == SIZE
    assert len(gets(hub)) == 5


def test_the_floor_is_shared_by_the_running_streams() -> None:
    t = transfer(min_bytes_per_second=8000)
    rx = t._rx
    assert rx._stalled(3000, 1.0) is not None  # one stream (or none) running: the whole floor
    rx._streams = 4
    assert rx._stalled(3000, 1.0) is None  # 2000 B/s each is enough for four streams
    assert rx._stalled(1000, 1.0) is not None
    t.close()


def test_floor_zero_disables_stall_detection(hub: HubEmulator, tmp_path: Path) -> None:
    hub.hostile.trickle("org/t", "w.bin", 400_000, count=1)
    with transfer(min_bytes_per_second=0, stall_window=0.01) as t:
        assert t.fetch(item_of(hub, tmp_path)).size == SIZE
    assert len(gets(hub)) == 1


# -- the token never follows a redirect to another origin --------------------------------------

DATA = b"redirected body" * 1000


class _Target(BaseHTTPRequestHandler):
    auth: list[str | None] = []

    def do_GET(self) -> None:
        type(self).auth.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(host: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("target_host", "same_origin"),
    [("127.0.0.1", False), ("127.0.0.2", False), ("127.0.0.1", True)],
    ids=["other-port", "other-host", "same-origin"],
)
def test_authorization_is_not_sent_to_another_origin_after_a_redirect(
    tmp_path: Path, target_host: str, same_origin: bool
) -> None:
    _Target.auth = []
    target = _serve(target_host, _Target)
    location = f"http://{target_host}:{target.server_address[1]}/blob"

    class Redirect(_Target):
        def do_GET(self) -> None:
            if self.path == "/blob":
                return super().do_GET()
            self.send_response(302)
            self.send_header("Location", "/blob" if same_origin else location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    origin = target if same_origin else _serve("127.0.0.1", Redirect)
    if same_origin:
        target.RequestHandlerClass = Redirect
    try:
        url = f"http://127.0.0.1:{origin.server_address[1]}/file"
        item = TransferItem(
            "f", url, dest(tmp_path, "f"), len(DATA), "0" * 40, hashlib.sha256(DATA).hexdigest()
        )
        with transfer(headers={"authorization": "Bearer hf_redirect_secret"}) as t:
            assert t.fetch(item).size == len(DATA)
        assert _Target.auth == ["Bearer hf_redirect_secret" if same_origin else None]
    finally:
        for server in {target, origin}:
            server.shutdown()
            server.server_close()
