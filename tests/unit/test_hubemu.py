"""Tests of the Hub emulator (hack/localdev/hubemu/) driven by the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from localdev.hubemu import MINILM_REPO_ID, HubEmulator, Link, minilm_dir, parse_duration
from localdev.hubemu.cli import build_parser

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def small_repo() -> dict[str, bytes]:
    return {
        "config.json": b'{"hidden_size": 8}\n',
        "README.md": b"# tiny\n",
        "weights/model.safetensors": os.urandom(300_000),
        "weights/extra.dat": os.urandom(5000),
    }


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ~/.cache/huggingface untouched: huggingface_hub read HF_HOME at import time."""
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubEmulator]:
    with HubEmulator(cache_dir=tmp_path / "emu-cache", lfs_threshold=1 << 20) as emu:
        yield emu


@pytest.fixture
def hf_env(tmp_path: Path, hub: HubEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for subprocesses; in-process calls pass endpoint/cache_dir/token explicitly."""
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return env


def test_model_info_resolves_branches_tags_and_old_commits(hub: HubEmulator) -> None:
    first = hub.add_repo_from_files("org/model", {"a.txt": b"one"})
    hub.add_tag("org/model", "v1")
    second = hub.add_repo_from_files("org/model", {"a.txt": b"two", "b.txt": b"new"})
    api = HfApi(endpoint=hub.url, token=False)

    assert len(first) == 40 and first != second
    assert api.model_info("org/model").sha == second
    assert api.model_info("org/model", revision="main").sha == second
    assert api.model_info("org/model", revision="v1").sha == first
    old = api.model_info("org/model", revision=first, files_metadata=True)
    assert old.sha == first
    assert [s.rfilename for s in old.siblings or []] == ["a.txt"]
    assert (old.siblings or [])[0].blob_id == git_blob_id(b"one")

    hub.set_branch("org/model", "main", first)
    assert api.model_info("org/model").sha == first
    refs = api.list_repo_refs("org/model")
    assert {(b.name, b.target_commit) for b in refs.branches} == {("main", first)}
    assert {(t.name, t.target_commit) for t in refs.tags} == {("v1", first)}
    commits = api.list_repo_commits("org/model", revision=second)
    assert [c.commit_id for c in commits] == [second, first]


def test_commit_sha_is_deterministic(tmp_path: Path) -> None:
    shas = []
    for i in range(2):
        emu = HubEmulator(cache_dir=tmp_path / f"c{i}")
        shas.append(emu.add_repo_from_files("org/x", {"f": b"same"}))
    assert shas[0] == shas[1]
    other = HubEmulator(cache_dir=tmp_path / "c2").add_repo_from_files("org/x", {"f": b"different"})
    assert other != shas[0]


def test_list_repo_tree_reports_sizes_blob_ids_and_lfs(tmp_path: Path) -> None:
    files = small_repo()
    with HubEmulator(cache_dir=tmp_path / "cache", lfs_threshold=1 << 20, tree_page_size=2) as hub:
        commit = hub.add_repo_from_files("org/tree", files)
        api = HfApi(endpoint=hub.url, token=False)

        entries = list(api.list_repo_tree("org/tree", recursive=True, revision=commit))
        by_path = {e.path: e for e in entries}
        assert {p for p, e in by_path.items() if isinstance(e, RepoFolder)} == {"weights"}
        repo_files = {p: e for p, e in by_path.items() if isinstance(e, RepoFile)}
        assert set(repo_files) == set(files)
        for path, data in files.items():
            entry = repo_files[path]
            assert entry.size == len(data)
            if path.endswith(".safetensors"):
                assert entry.lfs is not None
                assert entry.lfs.sha256 == sha256(data)
                assert entry.lfs.size == len(data)
                spec = "version https://git-lfs.github.com/spec/v1"
                pointer = f"{spec}\noid sha256:{sha256(data)}\nsize {len(data)}\n"
                assert entry.lfs.pointer_size == len(pointer)
                # like the Hub: the git oid of an LFS file is the one of its pointer
                assert entry.blob_id == git_blob_id(pointer.encode())
            else:
                assert entry.lfs is None
                assert entry.blob_id == git_blob_id(data)
        # several pages were followed (page size 2)
        tree_calls = [r for r in hub.requests if "/tree/" in r["path"]]
        assert len(tree_calls) == 3

        top = {e.path for e in api.list_repo_tree("org/tree", revision=commit)}
        assert top == {"config.json", "README.md", "weights"}
        sub = {e.path for e in api.list_repo_tree("org/tree", path_in_repo="weights")}
        assert sub == {"weights/model.safetensors", "weights/extra.dat"}

        info = api.get_paths_info("org/tree", ["config.json", "weights", "nope.txt"])
        assert {type(i).__name__: i.path for i in info} == {
            "RepoFile": "config.json",
            "RepoFolder": "weights",
        }


def test_downloads_are_byte_identical_for_models_and_datasets(hub: HubEmulator, tmp_path: Path) -> None:
    files = small_repo()
    commit = hub.add_repo_from_files("org/data", files, repo_type="dataset")
    hub.add_repo_from_files("gpt-legacy", {"vocab.txt": b"a\nb\n"})  # un-namespaced repo id

    path = hf_hub_download(
        "org/data",
        "weights/model.safetensors",
        repo_type="dataset",
        endpoint=hub.url,
        cache_dir=tmp_path / "c",
        token=False,
    )
    assert Path(path).read_bytes() == files["weights/model.safetensors"]
    assert f"/snapshots/{commit}/" in path

    out = Path(
        snapshot_download(
            "org/data", repo_type="dataset", endpoint=hub.url, local_dir=tmp_path / "snap", token=False
        )
    )
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    legacy = hf_hub_download(
        "gpt-legacy", "vocab.txt", endpoint=hub.url, cache_dir=tmp_path / "c", token=False
    )
    assert Path(legacy).read_bytes() == b"a\nb\n"
    prefixes = ("/api/datasets/", "/datasets/", "/api/models/gpt-legacy", "/gpt-legacy/")
    assert all(r["path"].startswith(prefixes) for r in hub.requests)


def test_minilm_snapshot_matches_known_sha256(hub: HubEmulator, tmp_path: Path) -> None:
    src = minilm_dir()
    if not (src / "model.safetensors").is_file():
        pytest.skip(f"MiniLM files not installed in {src}")
    commit = hub.add_repo_from_dir(MINILM_REPO_ID, src)
    out = Path(snapshot_download(MINILM_REPO_ID, endpoint=hub.url, local_dir=tmp_path / "m", token=False))
    assert sha256((out / "model.safetensors").read_bytes()) == MINILM_SHA256
    expected = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    got = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts
    )
    assert got == expected and len(expected) == 13
    tree = {
        e.path: e for e in HfApi(endpoint=hub.url, token=False).list_repo_tree(MINILM_REPO_ID, recursive=True)
    }
    weights = tree["model.safetensors"]
    assert isinstance(weights, RepoFile) and weights.lfs is not None and weights.lfs.sha256 == MINILM_SHA256
    assert hub.repo_files(MINILM_REPO_ID)["model.safetensors"]["sha256"] == MINILM_SHA256
    assert len(commit) == 40


def test_resolve_headers_and_ranges(hub: HubEmulator) -> None:
    data = os.urandom(100_000)
    commit = hub.add_repo_from_files("org/r", {"w.safetensors": data, "small.txt": b"hello"})
    url = f"{hub.url}/org/r/resolve/main/w.safetensors"
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200
        assert head.headers["X-Repo-Commit"] == commit
        assert head.headers["ETag"] == f'"{sha256(data)}"'
        assert head.headers["X-Linked-Etag"] == f'"{sha256(data)}"'
        assert head.headers["X-Linked-Size"] == str(len(data))
        assert head.headers["Content-Length"] == str(len(data))
        assert head.headers["Accept-Ranges"] == "bytes"
        assert not any(k.lower().startswith("x-xet") for k in head.headers)

        r = client.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        r = client.get(url, headers={"Range": "bytes=99990-"})
        assert r.status_code == 206 and r.content == data[99990:]
        r = client.get(url, headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == data[-5:]
        r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
        assert client.get(url).content == data

        small = client.head(f"{hub.url}/org/r/resolve/{commit}/small.txt")
        assert small.headers["ETag"] == f'"{git_blob_id(b"hello")}"'
        assert "X-Linked-Etag" not in small.headers


def test_connections_send_without_nagle(hub: HubEmulator) -> None:
    """Each answer goes out at once (TCP_NODELAY, like real servers), not after the client's
    delayed ACK: keep-alive requests for small files are not held back by the emulator."""
    import socket

    hub.add_repo_from_files("org/n", {"a.txt": b"a" * 3000})
    with httpx.Client() as client:
        for _ in range(2):
            assert client.get(f"{hub.url}/org/n/resolve/main/a.txt").status_code == 200
        conns = list(hub._server._conns)  # type: ignore[union-attr]
        assert conns
        assert all(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in conns)


def test_errors_map_to_huggingface_hub_exceptions(hub: HubEmulator, tmp_path: Path) -> None:
    hub.add_repo_from_files("org/e", {"a.txt": b"a"})
    api = HfApi(endpoint=hub.url, token=False)
    cache = tmp_path / "c"

    with pytest.raises(RepositoryNotFoundError) as repo_err:
        api.model_info("org/missing")
    assert not isinstance(repo_err.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "a.txt", endpoint=hub.url, cache_dir=cache, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("org/e", repo_type="dataset")  # wrong repo type
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/e", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/e", "a.txt", revision="0" * 40, endpoint=hub.url, cache_dir=cache, token=False)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/e", "missing.txt", endpoint=hub.url, cache_dir=cache, token=False)
    with pytest.raises(RevisionNotFoundError):
        list(api.list_repo_tree("org/e", revision="nope"))


def test_gated_and_private_repos(hub: HubEmulator, tmp_path: Path) -> None:
    hub.add_repo_from_files("org/gated", {"w.bin": b"secret weights"}, token="hf_right")
    hub.add_repo_from_files("org/private", {"w.bin": b"x"}, token="hf_right", private=True)
    cache = tmp_path / "c"

    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "w.bin", token=False, endpoint=hub.url, cache_dir=cache)
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "w.bin", token="hf_wrong", endpoint=hub.url, cache_dir=cache)
    statuses = [r["status"] for r in hub.requests if r["file"] == "w.bin"]
    assert statuses == [401, 403]
    path = hf_hub_download("org/gated", "w.bin", token="hf_right", endpoint=hub.url, cache_dir=cache)
    assert Path(path).read_bytes() == b"secret weights"
    assert HfApi(endpoint=hub.url).whoami(token="hf_right")["name"] == "hubemu-user"
    # like the Hub: a gated repo's metadata is public
    assert HfApi(endpoint=hub.url, token=False).model_info("org/gated").gated == "manual"

    with pytest.raises(RepositoryNotFoundError) as err:
        HfApi(endpoint=hub.url, token=False).model_info("org/private")
    assert not isinstance(err.value, GatedRepoError)
    assert HfApi(endpoint=hub.url, token="hf_right").model_info("org/private").private is True


def test_corrupt_flips_one_served_byte_but_keeps_hashes(hub: HubEmulator, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    hub.add_repo_from_files("org/c", {"w.safetensors": data})
    hub.corrupt("org/c", "w.safetensors", offset=12345)
    url = f"{hub.url}/org/c/resolve/main/w.safetensors"
    with httpx.Client() as client:
        served = client.get(url).content
        assert client.head(url).headers["ETag"] == f'"{sha256(data)}"'
        assert client.get(url, headers={"Range": "bytes=12340-12349"}).content[5] == data[12345] ^ 0xFF
    assert len(served) == len(data) and served != data
    assert [i for i in range(len(data)) if served[i] != data[i]] == [12345]

    hub.clear_corruptions()
    path = hf_hub_download("org/c", "w.safetensors", endpoint=hub.url, cache_dir=tmp_path / "c", token=False)
    assert Path(path).read_bytes() == data

    hub.corrupt("org/c", "w.safetensors", offset=0, count=1)  # only the next response
    with httpx.Client() as client:
        assert client.get(url).content[0] == data[0] ^ 0xFF
        assert client.get(url).content == data


def test_throttle_limits_rate_globally_and_per_repo(hub: HubEmulator) -> None:
    data = os.urandom(1_000_000)
    hub.add_repo_from_files("org/slow", {"w.bin": data})
    hub.add_repo_from_files("org/fast", {"w.bin": data})
    hub.set_throttle(1_000_000, repo_id="org/slow")
    with httpx.Client() as client:
        started = time.monotonic()
        assert client.get(f"{hub.url}/org/slow/resolve/main/w.bin").content == data
        slow = time.monotonic() - started
        started = time.monotonic()
        assert client.get(f"{hub.url}/org/fast/resolve/main/w.bin").content == data
        fast = time.monotonic() - started
    assert slow >= 0.75, slow
    assert fast < 0.5, fast

    hub.set_throttle(None, repo_id="org/slow")
    hub.set_throttle(2_000_000)  # global, shared by connections
    with httpx.Client() as client:
        started = time.monotonic()
        client.get(f"{hub.url}/org/fast/resolve/main/w.bin", headers={"Range": "bytes=0-999999"})
        assert time.monotonic() - started >= 0.35


def _timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[bytes, float]:
    """GET on a connection of its own: (body, seconds)."""
    with httpx.Client() as client:
        started = time.monotonic()
        body = client.get(url, headers=headers).content
        return body, time.monotonic() - started


def test_link_caps_each_connection_so_parallel_ranges_go_faster(tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    with HubEmulator(cache_dir=tmp_path / "emu-cache", conn_bps=1_000_000) as hub:
        hub.add_repo_from_files("org/wan", {"w.bin": data})
        url = f"{hub.url}/org/wan/resolve/main/w.bin"
        body, alone = _timed_get(url)
        assert body == data
        assert alone >= 1.4, alone  # 1.5 MB at 1 MB/s on one connection

        halves = ["bytes=0-749999", "bytes=750000-"]
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda r: _timed_get(url, {"Range": r}), halves))
        both = time.monotonic() - started
        assert parts[0][0] + parts[1][0] == data
        assert all(seconds >= 0.7 for _, seconds in parts), parts  # each connection is capped...
        assert both < 1.2, both  # ...on its own: two streams are about twice as fast as one

        hub.set_link()  # plain loopback again
        assert _timed_get(url)[1] < 0.7


def test_link_adds_latency_per_request_and_per_new_connection(tmp_path: Path) -> None:
    with HubEmulator(cache_dir=tmp_path / "emu-cache", latency=0.15, connect_latency=0.3) as hub:
        hub.add_repo_from_files("org/lat", {"config.json": b"{}"})
        url = f"{hub.url}/org/lat/resolve/main/config.json"
        with httpx.Client() as client:
            started = time.monotonic()
            assert client.get(url).content == b"{}"
            first = time.monotonic() - started
            started = time.monotonic()
            assert client.get(f"{hub.url}/api/models/org/lat").status_code == 200
            again = time.monotonic() - started
        assert first >= 0.45, first  # handshake + round trip on a new connection
        assert again >= 0.15, again  # every answer, the API's too, pays a round trip...
        assert again < first - 0.2, (first, again)  # ...but a kept-alive connection no handshake
        assert _timed_get(url)[1] >= 0.45  # a new connection pays the handshake again
        hub.reset_faults()  # the link is not a fault
        assert hub.link.latency == 0.15


def test_cli_link_flags() -> None:
    args = build_parser().parse_args(
        ["--conn-rate", "40MB", "--latency", "30ms", "--connect-latency", "0.06"]
    )
    assert (args.conn_rate, args.latency, args.connect_latency) == (40_000_000, 0.03, 0.06)
    assert parse_duration("1.5s") == 1.5
    with pytest.raises(ValueError):
        parse_duration("30 parsecs")
    link = Link(args.conn_rate, args.latency, args.connect_latency)
    assert link.describe() == "40 MB/s per connection, +30 ms per request, +60 ms per new connection"
    assert Link().describe() == "loopback"
    with pytest.raises(ValueError):
        Link(conn_bps=0)


def test_request_log_records_range_and_never_the_token(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/log", {"w.bin": b"0123456789"}, token="hf_topsecret_value")
    url = f"{hub.url}/org/log/resolve/main/w.bin"
    with httpx.Client() as client:
        r = client.get(url, headers={"Range": "bytes=2-5", "Authorization": "Bearer hf_topsecret_value"})
        assert r.content == b"2345"
        client.get(url)  # no token -> gated

    log = hub.requests
    assert [(e["method"], e["range"], e["status"], e["bytes"], e["auth"]) for e in log] == [
        ("GET", "bytes=2-5", 206, 4, True),
        ("GET", None, 401, log[1]["bytes"], False),
    ]
    assert log[0]["path"] == "/org/log/resolve/main/w.bin" and log[0]["file"] == "w.bin"
    assert "hf_topsecret_value" not in json.dumps(log)

    hub.clear_requests()
    assert hub.requests == []


def test_fail_next_and_truncate_next(hub: HubEmulator) -> None:
    data = os.urandom(50_000)
    hub.add_repo_from_files("org/f", {"w.bin": data, "other.bin": b"ok"})
    hub.fail_next("w.bin", 2, status=500)
    url = f"{hub.url}/org/f/resolve/main/w.bin"
    with httpx.Client() as client:
        assert client.get(f"{hub.url}/org/f/resolve/main/other.bin").status_code == 200
        assert client.get(url).status_code == 500
        assert client.head(url).status_code == 500
        assert client.get(url).status_code == 200

        hub.fail_next("/api/models/org/f", 1, status=503)
        assert client.get(f"{hub.url}/api/models/org/f").status_code == 503
        assert client.get(f"{hub.url}/api/models/org/f").status_code == 200

        hub.fail_next("w.bin", 1, status=429, retry_after=7)
        hub.fail_next("other.bin", 1, status=503, retry_after=None)
        assert client.get(url).headers["retry-after"] == "7"
        assert "retry-after" not in client.get(f"{hub.url}/org/f/resolve/main/other.bin").headers

    hub.truncate_next("w.bin", after_bytes=1000)
    with httpx.Client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert hub.requests[-1]["bytes"] == 1000
    with httpx.Client() as client:
        assert client.get(url, headers={"Range": "bytes=1000-"}).content == data[1000:]


def test_controls_python_api(hub: HubEmulator) -> None:
    first = hub.add_repo_from_files("org/ctl", {"w.bin": b"abcdef"})
    second = hub.add_repo_from_files("org/ctl", {"w.bin": b"ABCDEF"})
    url = f"{hub.url}/org/ctl/resolve/main/w.bin"
    with httpx.Client() as client:
        hub.corrupt("org/ctl", "w.bin", offset=1)
        assert client.get(url).content == bytes([ord("A"), ord("B") ^ 0xFF]) + b"CDEF"
        hub.clear_corruptions()
        hub.fail_next("w.bin", status=503)
        assert client.get(url).status_code == 503
        assert hub.set_branch("org/ctl", "main", first) == first
        assert hub.add_tag("org/ctl", "v2", second) == second
        assert client.get(url).content == b"abcdef"
        assert client.get(f"{hub.url}/org/ctl/resolve/v2/w.bin").content == b"ABCDEF"
        hub.set_throttle(100)
        hub.reset_faults()
        hub.clear_requests()
        assert client.get(url).content == b"abcdef"
        with pytest.raises(KeyError):
            hub.add_tag("org/ctl", "v3", "no-such-revision")
    assert [e["path"] for e in hub.requests] == ["/org/ctl/resolve/main/w.bin"]


def test_lfs_redirect_goes_to_another_origin_without_token(hub: HubEmulator, tmp_path: Path) -> None:
    data = os.urandom(64_000)
    hub.lfs_redirect = True
    hub.add_repo_from_files("org/cdn", {"w.safetensors": data, "c.json": b"{}"}, token="tok")
    out = Path(snapshot_download("org/cdn", endpoint=hub.url, local_dir=tmp_path / "o", token="tok"))
    assert (out / "w.safetensors").read_bytes() == data
    statuses = {
        (r["method"], r["path"].split("/")[1], r["status"], r["auth"]) for r in hub.requests if r["file"]
    }
    assert ("HEAD", "org", 302, True) in statuses
    assert ("GET", "_emulator", 200, False) in statuses  # the CDN GET carries no token


def test_hf_cli_downloads_from_emulator(hub: HubEmulator, hf_env: dict[str, str], tmp_path: Path) -> None:
    files = small_repo()
    hub.add_repo_from_files("org/cli", files)
    dest = tmp_path / "cli-out"
    proc = subprocess.run(
        [str(VENV_BIN / "hf"), "download", "org/cli", "--local-dir", str(dest)],
        env={**os.environ, **hf_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    assert any(r["method"] == "GET" and r["file"] == "weights/model.safetensors" for r in hub.requests)


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "hack"),
        "MODELDEPOT_HUBEMU_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "localdev.hubemu", "--synthetic", "org/syn:3x2KiB", "--synthetic",
         "datasets/org/ds:1x1KB", "--gated", "org/syn=tok", "--ready-file", str(ready)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        url = ready.read_text().strip()
        api = HfApi(endpoint=url, token=False)
        tree = [e for e in api.list_repo_tree("org/syn", recursive=True) if isinstance(e, RepoFile)]
        assert [(e.path, e.size) for e in tree] == [(f"file-000{i}.dat", 2048) for i in range(3)]
        assert api.dataset_info("org/ds", files_metadata=True).siblings[0].size == 1000  # type: ignore[index]
        with httpx.Client() as client:
            assert client.get(f"{url}/org/syn/resolve/main/file-0000.dat").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip() == url


def test_cli_minilm_missing_is_a_clear_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "hack"),
        "MODELDEPOT_MINILM_DIR": str(tmp_path / "none"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "localdev.hubemu", "--minilm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "MiniLM files not found" in proc.stderr and str(tmp_path / "none") in proc.stderr


def test_large_synthetic_files_are_generated_on_disk_once(tmp_path: Path) -> None:
    emu = HubEmulator(cache_dir=tmp_path / "cache", memory_limit=1 << 20, lfs_threshold=2 << 20)
    emu.add_repo_from_files("org/big", {"big.dat": (3 << 20, "seed")})
    generated = list((tmp_path / "cache" / "synthetic").iterdir())
    assert len(generated) == 1 and generated[0].stat().st_size == 3 << 20
    mtime = generated[0].stat().st_mtime_ns
    again = HubEmulator(cache_dir=tmp_path / "cache", memory_limit=1 << 20)
    again.add_repo_from_files("org/big", {"big.dat": (3 << 20, "seed")})
    assert generated[0].stat().st_mtime_ns == mtime
    meta = emu.repo_files("org/big")["big.dat"]
    assert meta["sha256"] == sha256(generated[0].read_bytes()) and meta["lfs"] is True
    with emu:
        assert httpx.get(f"{emu.url}/org/big/resolve/main/big.dat").content == generated[0].read_bytes()


# -- hostile modes (localdev.hubemu.faults) ---------------------------------------------------------


def test_hostile_commit_sha_and_verbatim_names(hub: HubEmulator) -> None:
    commit = hub.add_repo_from_files(
        "org/h", {"ok": b"1", "new\nline": b"2", "../up": b"3"}, check_paths=False
    )
    hub.hostile.set_commit_sha("org/h", "../../victim")
    api = HfApi(endpoint=hub.url, token=False)
    assert api.model_info("org/h").sha == "../../victim"
    names = {
        f.path
        for f in api.list_repo_tree("org/h", revision=commit, recursive=True)
        if isinstance(f, RepoFile)
    }
    assert names == {"ok", "new\nline", "../up"}
    url = hf_hub_url_for(hub, commit, "new\nline")
    assert httpx.get(url).content == b"2"
    hub.reset_faults()
    assert api.model_info("org/h").sha == commit
    with pytest.raises(ValueError):
        hub.add_repo_from_files("org/h", {"../up": b"3"})  # checked by default


def hf_hub_url_for(hub: HubEmulator, commit: str, path: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url("org/h", path, revision=commit, endpoint=hub.url)


def test_hostile_looping_tree_link(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/h", {"a": b"1"})
    hub.hostile.loop_tree("org/h")
    response = httpx.get(f"{hub.url}/api/models/org/h/tree/main?recursive=true")
    assert response.links["next"]["url"] == str(response.request.url)


def test_hostile_trickle_and_silence(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/h", {"w.bin": os.urandom(3000)})
    hub.hostile.trickle("org/h", "w.bin", 10_000, count=1)
    pieces: list[int] = []
    with httpx.stream("GET", f"{hub.url}/org/h/resolve/main/w.bin") as response:
        pieces.extend(len(p) for p in response.iter_raw())
    assert sum(pieces) == 3000 and len(pieces) > 2  # small pieces, not one burst
    hub.hostile.silence("/api/*")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{hub.url}/api/models/org/h", timeout=httpx.Timeout(5, read=0.3))
    assert httpx.get(f"{hub.url}/org/h/resolve/main/w.bin").status_code == 200  # only /api/* is silent
    hub.hostile.unsilence()
    assert httpx.get(f"{hub.url}/api/models/org/h").status_code == 200
