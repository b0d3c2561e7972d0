"""End-to-end fetches against the loopback Hub emulator (hack/localdev/hubemu/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot import cli, errors
from modeldepot.fetcher.manifest import Manifest, digest_of_dir
from modeldepot.fetcher.run import FetchRequest, fetch, run
from modeldepot.models import NodeStatus
from modeldepot.settings import FetchSettings

REPO = "org/tiny"
BIG = 3 << 20  # LFS by name pattern (*.safetensors, *.bin)
FILES: dict[str, Any] = {
    "config.json": b'{"hidden": 8}\n',
    "README.md": "# tiny\n" * 100,
    "tokenizer/vocab.txt": b"a\nb\nc\n" * 1000,
    "model.safetensors": (BIG, 1),
    "extra/pytorch_model.bin": (1 << 20, 2),
    "empty.txt": b"",
}


def content(hub: HubEmulator, repo: str, path: str) -> bytes:
    """What the emulator serves for `path` (read through its own HTTP API)."""
    import httpx

    return httpx.get(f"{hub.url}/{repo}/resolve/main/{path}").content


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emu:
        emu.add_repo_from_files(REPO, FILES)
        yield emu


@pytest.fixture
def settings(tmp_path: Path) -> FetchSettings:
    return FetchSettings(
        termination_log=tmp_path / "termination-log", backoff_base=0.01, backoff_max=0.05, max_retries=3
    )


def req(hub: HubEmulator, root: Path, **kw: Any) -> FetchRequest:
    kw.setdefault("repo_id", REPO)
    return FetchRequest(target=root / "models" / "tiny", endpoint=hub.url, root=root, **kw)


def resolves(hub: HubEmulator) -> list[dict[str, Any]]:
    return [r for r in hub.requests if "/resolve/" in r["path"] and r["method"] == "GET"]


def test_fetch_publishes_verified_identical_files(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings
) -> None:
    reports: list[dict[str, Any]] = []
    result = fetch(req(hub, tmp_path, generation=4), settings=settings, sink=reports.append)
    # the empty file needs no request at all
    assert "empty.txt" not in {r["file"] for r in resolves(hub)}
    target = tmp_path / "models" / "tiny"
    assert target.is_symlink()
    for path in FILES:
        assert (target / path).read_bytes() == content(hub, REPO, path), path
    assert result.digest == digest_of_dir(target)
    manifest = Manifest.read(target)
    assert manifest is not None
    assert manifest.digest == result.digest and manifest.commit == result.commit
    assert sorted(f.path for f in manifest.files) == sorted(FILES)
    assert result.file_count == len(FILES)
    assert result.total_bytes == sum(f["size"] for f in hub.repo_files(REPO).values())
    final = reports[-1]
    assert final["phase"] == "Ready" and final["percent"] == 100
    assert final["bytesDone"] == final["bytesTotal"] == result.total_bytes
    assert final["filesDone"] == final["filesTotal"] == len(FILES)
    assert final["resolvedRevision"] == result.commit
    assert final["observedGeneration"] == 4
    assert final["digest"] == result.digest
    assert final["summary"].startswith("100% ")


def test_run_writes_termination_message(hub: HubEmulator, tmp_path: Path, settings: FetchSettings) -> None:
    assert run(req(hub, tmp_path), settings=settings, console=None) == 0
    msg = json.loads(settings.termination_log.read_text())
    assert msg["phase"] == "Ready" and msg["reason"] == ""
    assert msg["digest"] == digest_of_dir(tmp_path / "models" / "tiny")
    assert msg["fileCount"] == len(FILES)
    assert msg["path"] == str(tmp_path / "models" / "tiny")
    assert len(msg["commit"]) == 40


def test_rerun_skips_everything(hub: HubEmulator, tmp_path: Path, settings: FetchSettings) -> None:
    first = fetch(req(hub, tmp_path), settings=settings)
    hub.clear_requests()
    second = fetch(req(hub, tmp_path), settings=settings)
    assert second.digest == first.digest
    assert resolves(hub) == []
    assert second.downloaded_bytes == 0


def test_new_commit_hardlinks_unchanged_files(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings
) -> None:
    first = fetch(req(hub, tmp_path), settings=settings)
    target = tmp_path / "models" / "tiny"
    inode = (target / "model.safetensors").stat().st_ino
    changed = dict(FILES, **{"config.json": b'{"hidden": 16}\n', "extra/pytorch_model.bin": (1 << 20, 3)})
    del changed["README.md"]
    commit2 = hub.add_repo_from_files(REPO, changed)
    hub.clear_requests()
    second = fetch(req(hub, tmp_path), settings=settings)
    assert second.commit == commit2 != first.commit
    assert {r["file"] for r in resolves(hub)} == {"config.json", "extra/pytorch_model.bin"}
    assert (target / "model.safetensors").stat().st_ino == inode
    assert not (target / "README.md").exists()
    assert (target / "config.json").read_bytes() == b'{"hidden": 16}\n'
    assert second.digest == digest_of_dir(target)
    assert second.reused_files == len(changed) - 2
    store = tmp_path / ".modeldepot" / "store" / "models" / "tiny"
    assert [p.name for p in store.iterdir()] == [commit2]


def test_same_commit_new_patterns_builds_a_new_version(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings
) -> None:
    first = fetch(req(hub, tmp_path, include=["*.json"]), settings=settings)
    target = tmp_path / "models" / "tiny"
    assert sorted(os.listdir(target)) == [".modeldepot", "config.json"]
    hub.clear_requests()
    second = fetch(req(hub, tmp_path, include=["*.json", "*.md"]), settings=settings)
    assert second.commit == first.commit
    assert sorted(os.listdir(target)) == [".modeldepot", "README.md", "config.json"]
    assert {r["file"] for r in resolves(hub)} == {"README.md"}
    assert os.readlink(target).endswith(first.commit + ".1")


def test_include_exclude(hub: HubEmulator, tmp_path: Path, settings: FetchSettings) -> None:
    result = fetch(
        req(hub, tmp_path, include=["*.json", "tokenizer/*", "*.bin"], exclude=["extra/*"]), settings=settings
    )
    manifest = Manifest.read(tmp_path / "models" / "tiny")
    assert manifest is not None
    assert [f.path for f in manifest.files] == ["config.json", "tokenizer/vocab.txt"]
    assert result.file_count == 2


def test_no_matching_files(hub: HubEmulator, tmp_path: Path, settings: FetchSettings) -> None:
    assert run(req(hub, tmp_path, include=["*.gguf"]), settings=settings, console=None) == 2
    msg = json.loads(settings.termination_log.read_text())
    assert msg["phase"] == "Failed" and msg["reason"] == "NoMatchingFiles"
    assert not (tmp_path / "models" / "tiny").exists()


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"repo_id": "org/missing"}, "RepoNotFound"),
        ({"revision": "v9"}, "RevisionNotFound"),
        ({"repo_id": "not a repo id!"}, "InvalidSpec"),
    ],
)
def test_hub_errors_are_permanent(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings, kw: dict[str, Any], reason: str
) -> None:
    assert run(req(hub, tmp_path, **kw), settings=settings, console=None) == 2
    assert json.loads(settings.termination_log.read_text())["reason"] == reason


def test_gated_repo_needs_token(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    secret = "hf_secret_token_value"
    hub.set_gated(REPO, secret)
    assert run(req(hub, tmp_path), settings=settings, console=sys.stderr) == 2
    assert json.loads(settings.termination_log.read_text())["reason"] == "Unauthorized"
    monkeypatch.setenv("HF_TOKEN", secret)
    assert run(req(hub, tmp_path), settings=settings, console=sys.stderr) == 0
    assert all(r["auth"] for r in resolves(hub)[-len(FILES) + 1 :])
    out, err = capfd.readouterr()
    assert secret not in out + err + settings.termination_log.read_text()


def test_private_repo_with_wrong_token_is_not_found(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.set_gated(REPO, "right", private=True)
    monkeypatch.setenv("HF_TOKEN", "wrong")
    assert run(req(hub, tmp_path), settings=settings, console=None) == 2
    assert json.loads(settings.termination_log.read_text())["reason"] == "RepoNotFound"


@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])
def test_corrupted_byte_is_a_checksum_mismatch(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings, path: str
) -> None:
    hub.corrupt(REPO, path, offset=5)
    assert run(req(hub, tmp_path), settings=settings, console=None) == 2
    msg = json.loads(settings.termination_log.read_text())
    assert msg["reason"] == "ChecksumMismatch" and path in msg["message"]
    assert not (tmp_path / "models" / "tiny").exists()
    assert not (tmp_path / ".modeldepot" / "store" / "models" / "tiny").exists()
    staged = list((tmp_path / ".modeldepot" / "staging").rglob(path.rsplit("/", 1)[-1]))
    assert staged == []  # the bad bytes are not kept for a resume


def test_transient_errors_are_retried(hub: HubEmulator, tmp_path: Path, settings: FetchSettings) -> None:
    hub.fail_next("model.safetensors", 2, status=503)
    hub.fail_next("config.json", 1, status=429)
    hub.fail_next("/api/models/org/tiny/revision/*", 1, status=500)
    hub.truncate_next("extra/pytorch_model.bin", after_bytes=100_000)
    result = fetch(req(hub, tmp_path), settings=settings)
    assert result.digest == digest_of_dir(tmp_path / "models" / "tiny")
    ranges = [r["range"] for r in resolves(hub) if r["file"] == "extra/pytorch_model.bin"]
    assert ranges[-1] == "bytes=100000-"


def test_persistent_5xx_is_transient_failure(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings
) -> None:
    hub.fail_next("model.safetensors", 50, status=503)
    assert run(req(hub, tmp_path), settings=settings, console=None) == 1
    assert json.loads(settings.termination_log.read_text())["reason"] == "HubUnavailable"
    hub.fail_next("/api/*", 50, status=502)
    assert run(req(hub, tmp_path), settings=settings, console=None) == 1
    assert json.loads(settings.termination_log.read_text())["reason"] == "HubUnavailable"


def test_unreachable_hub(tmp_path: Path, settings: FetchSettings) -> None:
    request = FetchRequest(repo_id=REPO, target=tmp_path / "m", endpoint="http://127.0.0.1:9", root=tmp_path)
    assert run(request, settings=settings, console=None) == 1
    assert json.loads(settings.termination_log.read_text())["reason"] == "HubUnavailable"


def test_interrupt_then_resume_with_range(hub: HubEmulator, tmp_path: Path, settings: FetchSettings) -> None:
    hub.set_throttle(1 << 20)
    cancel = threading.Event()
    box: dict[str, BaseException] = {}

    def work() -> None:
        try:
            fetch(req(hub, tmp_path, include=["model.safetensors"]), settings=settings, cancel=cancel)
        except BaseException as exc:
            box["exc"] = exc

    t = threading.Thread(target=work)
    t.start()
    staged = next_staged(tmp_path, "model.safetensors")
    wait_for_size(staged, 600_000)
    started = time.monotonic()
    cancel.set()
    t.join(10)
    assert time.monotonic() - started < 3
    assert isinstance(box["exc"], errors.InterruptedFetchError)
    have = staged.stat().st_size
    assert 0 < have < BIG
    hub.reset_faults()
    hub.clear_requests()
    result = fetch(req(hub, tmp_path, include=["model.safetensors"]), settings=settings)
    assert [r["range"] for r in resolves(hub)] == [f"bytes={have}-"]
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == content(
        hub, REPO, "model.safetensors"
    )
    assert result.digest == digest_of_dir(tmp_path / "models" / "tiny")


def next_staged(root: Path, name: str, timeout: float = 10) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = (
            list((root / ".modeldepot" / "staging").rglob(name)) if (root / ".modeldepot").exists() else []
        )
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"{name} never appeared in staging")


def wait_for_size(path: Path, size: int, timeout: float = 30) -> None:
    """Until `path` holds at least `size` bytes; fails with the last size seen after `timeout`."""
    deadline = time.monotonic() + timeout
    while (have := path.stat().st_size) < size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} stayed at {have} bytes, wanted {size}")
        time.sleep(0.02)


def test_bad_partial_bytes_are_redownloaded(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings
) -> None:
    hub.corrupt(REPO, "model.safetensors", offset=10, count=1)
    hub.truncate_next("model.safetensors", after_bytes=200_000)
    # first attempt: corrupted bytes, cut at 200 kB, resumed by Range -> mismatch -> from zero
    result = fetch(req(hub, tmp_path, include=["model.safetensors"]), settings=settings)
    ranges = [r["range"] for r in resolves(hub)]
    assert ranges == [None, "bytes=200000-", None]
    assert result.digest == digest_of_dir(tmp_path / "models" / "tiny")


def test_insufficient_storage(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil as real_shutil

    from modeldepot.fetcher import layout

    fake = types.SimpleNamespace(**{n: getattr(real_shutil, n) for n in ("rmtree", "copyfile")})
    fake.disk_usage = lambda p: types.SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    monkeypatch.setattr(layout, "shutil", fake)
    assert run(req(hub, tmp_path), settings=settings, console=None) == 2
    assert json.loads(settings.termination_log.read_text())["reason"] == "InsufficientStorage"
    assert resolves(hub) == []


def test_cli_reports_progress_through_kube(
    hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patches: list[tuple[str, str, dict[str, Any]]] = []
    applied: list[tuple[str, str, NodeStatus]] = []
    fake = types.ModuleType("modeldepot.kube")
    fake.patch_artifact_status = lambda ns, name, patch: patches.append((ns, name, patch))  # type: ignore[attr-defined]
    fake.apply_node_status = lambda ns, name, entry: applied.append((ns, name, entry))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modeldepot.kube", fake)
    monkeypatch.setenv("MODELDEPOT_TERMINATION_LOG", str(tmp_path / "tl"))
    target = tmp_path / "m"
    argv = [
        "fetch",
        REPO,
        "--to",
        str(target),
        "--endpoint",
        hub.url,
        "--report",
        "ns1/art",
        "--generation",
        "2",
    ]
    assert cli.main([*argv, "--node", "node-a"]) == 0
    assert not patches, "a node's progress is applied as its own entry, never merge-patched"
    ns, name, node = applied[-1]
    assert (ns, name) == ("ns1", "art")
    assert node.name == "node-a"
    assert node.phase == "Ready" and node.observed_generation == 2 and node.digest
    assert cli.main(argv) == 0
    assert patches[-1][2]["status"]["progress"]["phase"] == "Ready"
    assert json.loads((tmp_path / "tl").read_text())["phase"] == "Ready"


def test_sigterm_stops_promptly_and_keeps_partial(hub: HubEmulator, tmp_path: Path) -> None:
    hub.set_throttle(2 << 20)
    tl = tmp_path / "tl"
    env = dict(os.environ, MODELDEPOT_TERMINATION_LOG=str(tl), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "modeldepot.cli",
        "fetch",
        REPO,
        "--to",
        str(tmp_path / "m"),
        "--endpoint",
        hub.url,
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        staged = next_staged(tmp_path, "model.safetensors", timeout=30)
        wait_for_size(staged, 300_000)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143
    assert elapsed < 10
    msg = json.loads(tl.read_text())
    assert msg["phase"] == "Failed" and msg["reason"] == "Interrupted"
    assert staged.stat().st_size > 0
    hub.reset_faults()
    hub.clear_requests()
    result = fetch(FetchRequest(repo_id=REPO, target=tmp_path / "m", endpoint=hub.url))
    assert any(r["range"] for r in resolves(hub) if r["file"] == "model.safetensors")
    assert result.digest == digest_of_dir(tmp_path / "m")


def test_cli_cleanup_removes_everything_and_is_idempotent(
    hub: HubEmulator, tmp_path: Path, settings: FetchSettings
) -> None:
    fetch(req(hub, tmp_path), settings=settings)
    other = FetchRequest(repo_id=REPO, target=tmp_path / "models" / "keep", endpoint=hub.url, root=tmp_path)
    fetch(other, settings=settings, cancel=None)
    argv = ["cleanup", "--to", str(tmp_path / "models" / "tiny"), "--root", str(tmp_path)]
    assert cli.main(argv) == 0
    assert not (tmp_path / "models" / "tiny").is_symlink()
    assert not (tmp_path / ".modeldepot" / "store" / "models" / "tiny").exists()
    assert (tmp_path / "models" / "keep" / "config.json").exists()
    assert cli.main(argv) == 0
    assert cli.main(["cleanup", "--to", str(tmp_path / "models" / "keep"), "--root", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path / ".modeldepot" / "store")) == []
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("fault", "reason", "message"),
    [
        ("/api/models/org/tiny/revision/*", "ServerError", "the Hub answered HTTP 503 for org/tiny"),
        ("model.safetensors", "ServerError", "the Hub failed to serve model.safetensors (HTTP 503)"),
    ],
)
def test_a_retry_is_reported_at_once_and_gone_once_it_succeeds(
    hub: HubEmulator, tmp_path: Path, fault: str, reason: str, message: str
) -> None:
    # a report per interval would mean none before the end: every report but the last is news
    settings = FetchSettings(
        termination_log=tmp_path / "tl", backoff_base=0.01, backoff_max=1, max_retries=3, report_interval=60
    )
    hub.fail_next(fault, 1, status=503, retry_after=0.3)
    hub.set_throttle(BIG * 2)  # the download lasts about 0.5 s after the retry
    reports: list[dict[str, Any]] = []
    fetch(req(hub, tmp_path, include=["model.safetensors"]), settings=settings, sink=reports.append)
    assert [("retry" in r, r["phase"]) for r in reports] == [
        (True, "Downloading"),
        (False, "Downloading"),  # the Hub answered, or bytes came after the wait
        (False, "Ready"),
    ]
    retry = reports[0]["retry"]
    assert (retry["reason"], retry["attempt"], retry["maxAttempts"], retry["message"]) == (
        reason,
        2,
        4,
        message,
    )
    assert f"retrying in 1s (attempt 2/4): {message}" in reports[0]["summary"]


def test_a_rate_limited_download_waits_as_long_as_the_hub_says(hub: HubEmulator, tmp_path: Path) -> None:
    settings = FetchSettings(termination_log=tmp_path / "tl", backoff_max=5, report_interval=60)
    hub.fail_next("model.safetensors", 1, status=429, retry_after=1.5)
    reports: list[dict[str, Any]] = []
    started = time.monotonic()
    fetch(req(hub, tmp_path, include=["model.safetensors"]), settings=settings, sink=reports.append)
    assert time.monotonic() - started >= 1.5
    (waiting,) = [r for r in reports if "retry" in r]
    assert waiting["retry"]["reason"] == "RateLimited"
    next_at = datetime.fromisoformat(waiting["retry"]["nextAttemptAt"].replace("Z", "+00:00"))
    written = datetime.fromisoformat(waiting["updatedAt"].replace("Z", "+00:00"))
    assert 1 <= (next_at - written).total_seconds() <= 3
    assert (
        "retrying in 2s (attempt 2/7): the Hub failed to serve model.safetensors (HTTP 429)"
        in waiting["summary"]
    )


def test_the_claims_progress_patch_removes_a_retry_that_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    patches: list[dict[str, Any]] = []
    fake = types.ModuleType("modeldepot.kube")
    fake.patch_artifact_status = lambda ns, name, patch: patches.append(patch)  # type: ignore[attr-defined]
    fake.apply_node_status = lambda ns, name, entry: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modeldepot.kube", fake)
    sink = cli._status_sink("ns1/art", None)
    base = {"phase": "Downloading", "percent": 0.0, "bytesDone": 0, "bytesTotal": 0, "filesDone": 0}
    retry = {
        "reason": "HubUnreachable",
        "attempt": 2,
        "maxAttempts": 7,
        "nextAttemptAt": "2026-05-01T12:00:08Z",
        "message": "cannot reach the Hub: ConnectError",
    }
    sink(
        {
            **base,
            "retry": retry,
            "summary": "retrying in 8s (attempt 2/7): cannot reach the Hub: ConnectError",
        }
    )
    sink({**base, "summary": "Resolving files"})
    assert patches[0]["status"]["progress"]["retry"] == retry
    second = patches[1]["status"]["progress"]
    # a JSON merge patch keeps what it does not name: the retry (and a stale ETA) are named null
    assert second["retry"] is None and second["etaSeconds"] is None
    assert second["summary"] == "Resolving files"
