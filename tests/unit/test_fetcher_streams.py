"""Multi-stream downloads (fetcher/streams.py through Transfer): ranges at their offsets, resume of
every part, and servers that abuse ranges (ignore them, answer another range or total, send a short,
long or wrong body, lie about the size). Whatever they do, a file is accepted only by its hash.

The streams are forced (the probe's CPU check is switched off with `many()`) except where a test is
about that check; a few MiB per file keep these fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot import errors
from modeldepot.fetcher.hub import HubClient
from modeldepot.fetcher.ranges import Coverage, load_coverage, save_coverage, sidecar_rel
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.streams import Ramp
from modeldepot.fetcher.transfer import RetryPolicy, Transfer, TransferItem

MiB = 1 << 20
SIZE = 16 * MiB
DATA = os.urandom(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()
PART = 4 * MiB


@dataclasses.dataclass
class Answer:
    """How the server answers one request (defaults: honestly)."""

    status: int
    headers: dict[str, str]
    body: bytes
    cut_after: int | None = None
    pause: float = 0.0
    """Before the body."""
    trickle: float = 0.0
    """After each 256 KiB of the body."""


Behaviour = Callable[[int, int, int, "Answer"], "Answer"]
"""(index of the request, start, end, honest answer) -> the answer sent."""


class RangeServer:
    """Serves `data` at any path, with single `bytes=a-b` / `bytes=a-` ranges unless `behave` says otherwise."""

    def __init__(self, data: bytes = DATA, behave: Behaviour | None = None) -> None:
        self.data = data
        self.behave = behave or (lambda n, start, end, a: a)
        self.ranges: list[str | None] = []
        self.active = self.most_active = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/w.bin"

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range")
        with self.lock:
            n = len(self.ranges)
            self.ranges.append(rng)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            size = len(self.data)
            start, end = 0, size
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
            if m:
                start, end = int(m[1]), min(size, int(m[2]) + 1 if m[2] else size)
            if start >= size and rng:
                honest = Answer(416, {"Content-Range": f"bytes */{size}"}, b"")
            elif m:
                honest = Answer(
                    206, {"Content-Range": f"bytes {start}-{end - 1}/{size}"}, self.data[start:end]
                )
            else:
                honest = Answer(200, {}, self.data)
            a = self.behave(n, start, end, honest)
            h.send_response(a.status)
            for k, v in {"Content-Length": str(len(a.body)), **a.headers}.items():
                h.send_header(k, v)
            h.end_headers()
            time.sleep(a.pause)
            body = a.body if a.cut_after is None else a.body[: a.cut_after]
            for i in range(0, len(body), 256 << 10):
                h.wfile.write(body[i : i + (256 << 10)])
                time.sleep(a.trickle)
            if a.cut_after is not None:
                h.wfile.flush()
                h.close_connection = True
        except OSError:
            h.close_connection = True
        finally:
            with self.lock:
                self.active -= 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Dir]:
    with Dir.open_root(tmp_path) as d:
        yield d


@pytest.fixture
def serve() -> Iterator[Callable[..., RangeServer]]:
    servers: list[RangeServer] = []

    def start(behave: Behaviour | None = None, data: bytes = DATA) -> RangeServer:
        servers.append(RangeServer(data, behave))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def many(**kw: Any) -> Transfer:
    """A transfer that fetches files of 1 byte or more with 4 streams from the start."""
    kw.setdefault("headers", {})
    kw.setdefault("retry", RetryPolicy(2, 0.01, 0.02))
    kw.setdefault("fsync", False)
    t = Transfer(streams=4, streams_min_size=1, part_size=PART, **kw)
    t._plan = dataclasses.replace(t._plan, busy_window=0.0, busy_threshold=float("inf"), gain=0.0)
    return t


def item_at(root: Dir, url: str, *, size: int = SIZE, sha: str = SHA) -> TransferItem:
    return TransferItem("w.bin", url, root / "w.bin", size, "0" * 40, sha)


def fetch_ok(root: Dir, tmp_path: Path, server: RangeServer, **kw: Any) -> None:
    files: list[object] = []
    with many(on_file=files.append, **kw) as t:
        assert t.fetch(item_at(root, server.url)).sha256 == SHA
    assert (tmp_path / "w.bin").read_bytes() == DATA
    assert len(files) == 1
    assert not (tmp_path / sidecar_rel(item_at(root, server.url))).exists()  # dropped once verified


# -- honest servers -------------------------------------------------------------------------------


def test_a_large_file_is_fetched_by_several_ranged_streams_at_their_offsets(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    server = serve(lambda n, s, e, a: dataclasses.replace(a, pause=0.1))  # a network wait before each part
    got: list[int] = []
    fetch_ok(root, tmp_path, server, on_bytes=got.append)
    assert server.ranges[0] == f"bytes=0-{PART - 1}"  # the probe, alone
    assert sorted(str(r) for r in server.ranges) == sorted(
        f"bytes={s}-{s + PART - 1}" for s in range(0, SIZE, PART)
    )
    assert server.most_active > 1
    assert sum(got) == SIZE


def test_below_the_threshold_or_with_one_stream_a_file_is_one_plain_get(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    server = serve()
    with Transfer(headers={}, streams=4, streams_min_size=SIZE + 1, fsync=False) as t:
        t.fetch(item_at(root, server.url))
    with Transfer(headers={}, streams=1, streams_min_size=1, fsync=False) as t:
        t.fetch(dataclasses.replace(item_at(root, server.url), path="w2.bin", dest=root / "w2.bin"))
    assert server.ranges == [None, None]
    assert (tmp_path / "w2.bin").read_bytes() == DATA


def test_the_streams_are_added_when_one_stream_waits_for_the_network(
    root: Dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with HubEmulator(conn_bps=8_000_000) as hub:  # a CDN's per-connection cap
        hub.add_repo_from_files("org/w", {"w.bin": (SIZE, 1)})
        (f,) = HubClient(endpoint=hub.url).snapshot("org/w").files
        with Transfer(headers={}, streams=4, streams_min_size=1, part_size=PART, fsync=False) as t:
            t.fetch(TransferItem(f.path, f.url, root / f.path, f.size, f.blob_id, f.sha256))
        gets = [r for r in hub.requests if r["method"] == "GET" and r.get("file") == "w.bin"]
    assert len(gets) == 4 and all(r["status"] == 206 for r in gets)
    starts = sorted(r["time"] for r in gets)
    # The other three joined the probe before it could have ended alone (2 s): after two probe
    # windows, a trial and a check, each a few of the emulator's 50 ms sends at this rate.
    assert starts[-1] - starts[0] < 1.5


@pytest.mark.parametrize(
    ("busy", "trial_rate", "full_rate", "limits", "state"),
    [
        (0.9, None, None, [1, 1, 1], "probe"),  # CPU-bound (loopback): one stream, checked again and again
        (0.1, 200, 800, [1, 2, 2, 8, 8], "full"),  # waits for the network, two streams faster, all faster
        (0.1, 110, None, [1, 2, 2, 1], "single"),  # waits, but two are no faster: back to one, for good
        (0.1, 200, 120, [1, 2, 2, 8, 1], "single"),  # two were faster once, all of them are not: one
    ],
)
def test_the_ramp_adds_streams_only_when_they_prove_faster(
    busy: float, trial_rate: int | None, full_rate: int | None, limits: list[int], state: str
) -> None:
    ramp = Ramp(8, window=1.0, busy_threshold=0.5, gain=1.5, probe_windows=1)
    seen = [ramp.observe(0.0, 0, 0.0, writing=0)]  # nothing written yet: no window
    assert ramp.observe(0.0, 0, 0.0, writing=1) == 1  # the probe's window starts
    seen.append(ramp.observe(1.0, 100, busy, writing=1))  # 100 B/s, busy that share of the second
    seen.append(ramp.observe(1.5, 150, busy, writing=1))  # a trial's window waits for stream 2
    if trial_rate is not None:
        ramp.observe(2.0, 200, busy, writing=2)
        seen.append(ramp.observe(3.0, 200 + trial_rate, busy, writing=2))
    if full_rate is not None:
        assert ramp.observe(3.0, 400, busy, writing=7) == 8  # the check waits for all 8
        ramp.observe(3.0, 400, busy, writing=8)
        seen.append(ramp.observe(4.0, 400 + full_rate, busy, writing=8))
    assert seen == limits and ramp.state == state
    assert Ramp(1, window=1.0, busy_threshold=0.5).observe(5.0, 0, 0.0, 1) == 1
    assert "1 stream" in ramp.describe()


def test_one_slow_window_of_a_busy_machine_does_not_pass_for_a_slow_link() -> None:
    ramp = Ramp(8, window=1.0, busy_threshold=0.5, gain=1.5, probe_windows=1)
    ramp.observe(0.0, 0, 0.0, writing=1)
    assert ramp.observe(1.0, 1000, 0.9, writing=1) == 1  # CPU-bound at 1000 B/s
    ramp.observe(1.0, 1000, 0.9, writing=1)
    assert ramp.observe(2.0, 1100, 1.0, writing=1) == 2  # a hiccup: 100 B/s, thread idle (starved)
    ramp.observe(2.0, 1100, 1.0, writing=2)
    assert ramp.observe(3.0, 2100, 1.5, writing=2) == 1  # two streams: 1000 B/s, the probe's average
    assert ramp.state == "single"


def test_the_probe_runs_two_windows_before_a_trial() -> None:
    """A starved first window (the repo's small files share the CPU) alone does not start a second
    stream; a second window, busy (CPU-bound), keeps one; two idle windows (a slow link) try two."""
    ramp = Ramp(8, window=1.0, busy_threshold=0.5, gain=1.5)
    ramp.observe(0.0, 0, 0.0, writing=1)
    assert ramp.observe(1.0, 100, 0.1, writing=1) == 1  # idle-looking, but only one window
    ramp.observe(1.0, 100, 0.1, writing=1)
    assert ramp.observe(2.0, 1100, 1.0, writing=1) == 1  # busy: CPU-bound, one stream
    assert ramp.state == "probe" and ramp.rates[1] == 1000
    slow = Ramp(8, window=1.0, busy_threshold=0.5, gain=1.5)
    slow.observe(0.0, 0, 0.0, writing=1)
    assert slow.observe(1.0, 100, 0.1, writing=1) == 1
    slow.observe(1.0, 100, 0.1, writing=1)
    assert slow.observe(2.0, 200, 0.2, writing=1) == 2 and slow.state == "trial"


# -- servers that abuse ranges ----------------------------------------------------------------------


def test_a_server_ignoring_range_is_detected_by_the_probe_and_served_by_one_stream(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    server = serve(lambda n, s, e, a: Answer(200, {}, DATA))  # every request: 200 with the whole file
    fetch_ok(root, tmp_path, server)
    assert server.ranges == [f"bytes=0-{PART - 1}", None]


def test_range_ignored_in_the_middle_falls_back_to_one_stream_from_the_contiguous_prefix(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    def behave(n: int, s: int, e: int, a: Answer) -> Answer:
        if n == 0:
            return dataclasses.replace(a, pause=0.2)  # the probe's part lands after the others' answers
        return Answer(200, {}, DATA) if s == 2 * PART else a

    server = serve(behave)
    fetch_ok(root, tmp_path, server)
    *ranged, last = server.ranges
    assert (
        all(r and re.fullmatch(r"bytes=\d+-\d+", r) for r in ranged)
        and f"bytes={2 * PART}-{3 * PART - 1}" in ranged
    )
    assert last is None or re.fullmatch(r"bytes=\d+-", last)  # one stream from the contiguous prefix


@pytest.mark.parametrize(
    "lie",
    [
        lambda s, e, size: f"bytes {s + 1}-{e}/{size}",  # another range
        lambda s, e, size: f"bytes {s}-{e - 1}/{size + 1}",  # another total
        lambda s, e, size: f"bytes {s}-{e - 1}/*",  # size unknown
        lambda s, e, size: None,  # none at all
    ],
    ids=["other-range", "other-total", "unknown-total", "missing"],
)
def test_a_wrong_content_range_falls_back_to_one_stream(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer], lie: Callable[[int, int, int], str | None]
) -> None:
    def behave(n: int, s: int, e: int, a: Answer) -> Answer:
        if a.status != 206 or s != PART:
            return a
        value = lie(s, e, SIZE)
        headers = {} if value is None else {"Content-Range": value}
        return Answer(206, headers, DATA[s + 1 : e + 1] if "other-range" in str(value) else a.body)

    server = serve(behave)
    fetch_ok(root, tmp_path, server)
    assert any(r is None or r.endswith("-") for r in server.ranges)  # one stream took over


def test_a_part_body_longer_than_its_range_is_never_written_past_it(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    def behave(n: int, s: int, e: int, a: Answer) -> Answer:
        if a.status == 206 and (s, e) == (PART, 2 * PART):
            return dataclasses.replace(a, body=a.body + b"X" * 1000)  # Content-Length says so too
        return a

    server = serve(behave)
    fetch_ok(root, tmp_path, server)
    assert any(r is None or r.endswith("-") for r in server.ranges)


def test_a_short_part_body_is_resumed_where_it_stopped(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    cut = {"done": False}

    def behave(n: int, s: int, e: int, a: Answer) -> Answer:
        if a.status == 206 and s == PART and not cut["done"]:
            cut["done"] = True
            return dataclasses.replace(a, cut_after=MiB)
        return a

    server = serve(behave)
    fetch_ok(root, tmp_path, server, min_bytes_per_second=0)
    resumed = [
        r
        for r in server.ranges
        if r and r.startswith("bytes=") and PART < int(r[6:].split("-")[0]) < 2 * PART
    ]
    assert resumed == [f"bytes={int(resumed[0][6:].split('-')[0])}-{2 * PART - 1}"]
    assert PART < int(resumed[0][6:].split("-")[0]) <= PART + MiB
    assert None not in server.ranges  # no fallback: the range was honoured, the body was just cut


def test_wrong_bytes_in_one_part_are_caught_by_the_hash_and_fetched_again_with_one_stream(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    def behave(n: int, s: int, e: int, a: Answer) -> Answer:
        if a.status == 206 and s == 3 * PART:
            return dataclasses.replace(a, body=b"\0" + a.body[1:])
        return a

    server = serve(behave)
    fetch_ok(root, tmp_path, server)
    assert server.ranges[-1] is None  # once more from zero, one plain GET


def test_a_server_always_sending_wrong_bytes_ends_in_checksum_mismatch_with_nothing_left(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    bad = bytes([DATA[0] ^ 1]) + DATA[1:]
    server = serve(data=bad)
    files: list[object] = []
    with many(on_file=files.append) as t, pytest.raises(errors.ChecksumMismatchError):
        t.fetch(item_at(root, server.url))
    assert not (tmp_path / "w.bin").exists() and files == []
    assert not (tmp_path / sidecar_rel(item_at(root, server.url))).exists()


@pytest.mark.parametrize("real_size", [SIZE + 1000, SIZE - 1000], ids=["bigger", "smaller"])
def test_a_server_lying_about_the_size_never_yields_a_complete_looking_file(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer], real_size: int
) -> None:
    data = (DATA * 2)[:real_size]
    server = serve(data=data)
    files: list[object] = []
    with (
        many(on_file=files.append, min_bytes_per_second=0) as t,
        pytest.raises((errors.ChecksumMismatchError, errors.DownloadFailedError)) as failed,
    ):
        t.fetch(item_at(root, server.url))  # listed: SIZE bytes, DATA's sha256
    assert files == []
    dest = tmp_path / "w.bin"
    if real_size > SIZE:  # more bytes than listed: a mismatch, and nothing of them is kept
        assert isinstance(failed.value, errors.ChecksumMismatchError) and not dest.exists()
    else:  # fewer: a transient failure; what came stays for a resume, visibly short
        assert failed.value.retryable and dest.stat().st_size < SIZE
    assert not (tmp_path / sidecar_rel(item_at(root, server.url))).exists() or real_size < SIZE


# -- resume -------------------------------------------------------------------------------------------


def test_an_interrupted_multi_stream_download_resumes_every_part(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    def slow(n: int, s: int, e: int, a: Answer) -> Answer:
        return dataclasses.replace(a, pause=0.02, trickle=0.01)  # ~25 MB/s per stream

    server = serve(slow)
    cancel = threading.Event()
    got: list[int] = []

    def on_bytes(n: int) -> None:
        got.append(n)
        if sum(got) >= 6 * MiB:
            cancel.set()

    it = item_at(root, server.url)
    with (
        many(cancel=cancel, on_bytes=on_bytes, chunk_size=256 << 10) as t,
        pytest.raises(errors.InterruptedFetchError),
    ):
        t.fetch(it)
    on_disk = load_coverage(it, root, (tmp_path / "w.bin").stat().st_size)
    assert on_disk is not None and 0 < on_disk.done() < SIZE
    assert len(on_disk.ranges()) > 1  # several streams, each stopped within its part
    for s, e in on_disk.ranges():
        assert (tmp_path / "w.bin").read_bytes()[s:e] == DATA[s:e]  # it only names bytes written

    server.ranges.clear()
    adjusted: list[int] = []
    fetch_ok(root, tmp_path, server, on_adjust=adjusted.append)
    asked = Coverage(SIZE)
    for r in server.ranges:
        assert r is not None
        s, e = (int(x) for x in r[6:].split("-"))
        assert all(not (a <= s < b) for a, b in on_disk.ranges())  # never a byte already there
        asked.add(s, e + 1)
    assert asked.done() == SIZE - on_disk.done()
    assert adjusted[0] == on_disk.done()


def test_resume_trusts_the_sidecar_only_as_far_as_the_file_reaches(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    server = serve()
    it = item_at(root, server.url)
    (tmp_path / "w.bin").write_bytes(DATA[: 3 * MiB])
    save_coverage(it, root, Coverage(SIZE, [(0, 8 * MiB)]))  # claims more than the file holds
    fetch_ok(root, tmp_path, server)
    assert f"bytes=0-{3 * MiB - 1}" not in server.ranges
    assert all(int(r[6:].split("-")[0]) >= 3 * MiB for r in server.ranges if r)


def test_a_lying_sidecar_costs_one_download_from_zero_never_a_wrong_file(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    server = serve()
    it = item_at(root, server.url)
    (tmp_path / "w.bin").write_bytes(b"\0" * SIZE)  # a planted file of the right size
    save_coverage(it, root, Coverage(SIZE, [(0, SIZE)]))  # "all there"
    fetch_ok(root, tmp_path, server)
    assert server.ranges == [None]  # nothing to fetch by range; the hash said no; once from zero


def test_a_partial_file_without_sidecar_is_a_prefix_as_before(
    root: Dir, tmp_path: Path, serve: Callable[..., RangeServer]
) -> None:
    server = serve()
    (tmp_path / "w.bin").write_bytes(DATA[: 5 * MiB])  # left by a one-stream download
    fetch_ok(root, tmp_path, server)
    assert min(int(r[6:].split("-")[0]) for r in server.ranges if r) == 5 * MiB


# -- the token ------------------------------------------------------------------------------------------


def test_parts_go_straight_to_the_redirect_target_without_the_token(
    root: Dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_TOKEN", "hf_stream_secret")
    with HubEmulator(lfs_redirect=True) as hub:
        hub.add_repo_from_files("org/r", {"w.bin": (SIZE, 7)})
        hub.set_gated("org/r", "hf_stream_secret")
        client = HubClient(endpoint=hub.url)
        (f,) = client.snapshot("org/r").files
        with many(headers=client.download_headers()) as t:
            assert (
                t.fetch(TransferItem(f.path, f.url, root / f.path, f.size, f.blob_id, f.sha256)).size == SIZE
            )
        gets = [r for r in hub.requests if r["method"] == "GET" and r.get("file") == "w.bin"]
    hub_gets = [r for r in gets if r["status"] == 302]
    cdn_gets = [r for r in gets if r["status"] == 206]
    assert len(hub_gets) == 1 and hub_gets[0]["auth"]  # the Hub's resolver is asked once
    assert len(cdn_gets) == SIZE // PART and not any(r["auth"] for r in cdn_gets)


# -- settings -------------------------------------------------------------------------------------------


def test_cli_flags_set_the_stream_settings_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldepot import cli
    from modeldepot.fetcher import run

    seen: list[Any] = []

    def fake_run(request: object, *, settings: object, **kw: object) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(run, "run", fake_run)
    monkeypatch.setenv("MODELDEPOT_STREAMS", "3")
    monkeypatch.setenv("MODELDEPOT_PART_SIZE", str(8 * MiB))
    argv = ["fetch", "org/r", "--to", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    assert (seen[-1].streams, seen[-1].part_size, seen[-1].chunk_size) == (3, 8 * MiB, MiB)
    assert (
        cli.main([*argv, "--streams", "5", "--streams-min-size", "1000", "--chunk-size", str(256 << 10)]) == 0
    )
    assert (seen[-1].streams, seen[-1].streams_min_size, seen[-1].chunk_size) == (5, 1000, 256 << 10)
    with pytest.raises(SystemExit, match="streams"):
        cli.main([*argv, "--streams", "0"])
