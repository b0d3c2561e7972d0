"""Ownership of artifact paths on a shared storage root, and symlinks other tenants plant there.

Each test plays two artifacts (owners) against one root: neither may use, trust or delete what the
other made, and nothing outside the root is ever written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot import cli, errors
from modeldepot.fetcher.layout import Layout
from modeldepot.fetcher.manifest import Manifest, digest_of_dir
from modeldepot.fetcher.owners import LOCAL_OWNER, Owner, record_name, related
from modeldepot.fetcher.run import FetchRequest, FetchResult, fetch, run
from modeldepot.settings import FetchSettings

REPO = "org/tiny"
FILES: dict[str, Any] = {"config.json": b'{"a": 1}\n', "model.safetensors": (1 << 16, 1)}
ALICE = Owner("team-a", "model", "uid-a1")
ALICE_AGAIN = Owner("team-a", "model", "uid-a2")  # the same artifact, re-created
BOB = Owner("team-b", "model", "uid-b1")

Snapshot = dict[str, tuple[str, int, str]]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MODELDEPOT_TERMINATION_LOG", str(tmp_path / "termination-log"))


@pytest.fixture
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emu:
        emu.add_repo_from_files(REPO, FILES)
        yield emu


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"not yours")
    return out


@pytest.fixture
def settings(tmp_path: Path) -> FetchSettings:
    return FetchSettings(termination_log=tmp_path / "termination-log", backoff_base=0.01, max_retries=1)


def do_fetch(hub: HubEmulator, root: Path, path: str, owner: Owner, settings: FetchSettings) -> FetchResult:
    request = FetchRequest(repo_id=REPO, target=root / path, endpoint=hub.url, root=root, owner=owner)
    return fetch(request, settings=settings)


def run_reason(hub: HubEmulator, root: Path, path: str, owner: Owner, settings: FetchSettings) -> str:
    """Run like the Job; the termination message's reason ("" when Ready)."""
    request = FetchRequest(repo_id=REPO, target=root / path, endpoint=hub.url, root=root, owner=owner)
    code = run(request, settings=settings, console=None)
    reason: str = json.loads(settings.termination_log.read_text())["reason"]
    assert (code == 0) == (reason == "")
    if reason == "PathConflict":
        assert code == 2  # permanent
    return reason


def cleanup(root: Path, path: str, owner: Owner | None) -> int:
    argv = ["cleanup", "--to", str(root / path), "--root", str(root)]
    if owner is not None:
        argv += ["--owner", f"{owner.namespace}/{owner.name}/{owner.uid}"]
    return cli.main(argv)


def record(root: Path, path: str) -> dict[str, Any] | None:
    f = root / ".modeldepot" / "owners" / record_name(path)
    return json.loads(f.read_text()) if f.exists() else None


def snapshot(top: Path) -> Snapshot:
    """Every entry below `top`: kind, mtime and content (files) or value (symlinks)."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in ["", *dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            data = os.readlink(p) if kind == "link" else p.read_bytes().hex() if kind == "file" else ""
            found[str(p.relative_to(top))] = (kind, st.st_mtime_ns, data)
    return found


def state(root: Path, path: str) -> tuple[Snapshot, Snapshot, str, Manifest | None]:
    """What must not change for the artifact at `path`: store, published files, digest, manifest."""
    store = root / ".modeldepot" / "store" / path
    return snapshot(store), snapshot(root / path), digest_of_dir(root / path), Manifest.read(root / path)


# -- claims -------------------------------------------------------------------------------------------


def test_the_owner_record(hub: HubEmulator, root: Path, settings: FetchSettings) -> None:
    result = do_fetch(hub, root, "ns/m", ALICE, settings)
    assert record(root, "ns/m") == {
        "path": "ns/m",
        "namespace": "team-a",
        "name": "model",
        "uid": "uid-a1",
        "versions": [result.commit],
    }
    assert (root / ".modeldepot" / "owners.lock").is_file()


def test_equal_paths(hub: HubEmulator, root: Path, settings: FetchSettings) -> None:
    do_fetch(hub, root, "m", ALICE, settings)
    before = state(root, "m")
    assert run_reason(hub, root, "m", BOB, settings) == "PathConflict"
    msg = json.loads(settings.termination_log.read_text())["message"]
    assert "path m already belongs to ModelArtifact team-a/model" in msg
    assert state(root, "m") == before
    assert record(root, "m")["uid"] == "uid-a1"  # type: ignore[index]


@pytest.mark.parametrize(("first", "second"), [("n", "n/0123abcd"), ("n/0123abcd", "n")])
def test_nested_paths_either_order(
    hub: HubEmulator, root: Path, settings: FetchSettings, first: str, second: str
) -> None:
    do_fetch(hub, root, first, ALICE, settings)
    before = state(root, first), snapshot(root / ".modeldepot" / "staging")
    assert run_reason(hub, root, second, BOB, settings) == "PathConflict"
    msg = json.loads(settings.termination_log.read_text())["message"]
    assert ("lies inside" if len(second) > len(first) else "contains") in msg
    assert (state(root, first), snapshot(root / ".modeldepot" / "staging")) == before
    assert record(root, second) is None


def _claim(root: Path, path: str, owner: Owner, barrier: threading.Barrier, outcome: dict[str, str]) -> None:
    with Layout(root / path, root=root, owner=owner) as lay:
        barrier.wait()
        try:
            lay.claim()
            outcome[path] = "ok"
        except errors.PathConflictError:
            outcome[path] = "conflict"


def test_concurrent_claims_of_nested_paths_one_wins(root: Path) -> None:
    for attempt in range(10):
        barrier = threading.Barrier(2)
        outcome: dict[str, str] = {}
        a, b = f"n{attempt}", f"n{attempt}/0123abcd"
        threads = [
            threading.Thread(target=_claim, args=(root, path, owner, barrier, outcome))
            for path, owner in ((a, ALICE), (b, BOB))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(outcome.values()) == ["conflict", "ok"], outcome
        assert (record(root, a) is None) != (record(root, b) is None)


def test_related_paths_compare_whole_components() -> None:
    assert related("n", "n/x") and related("n/x", "n") and related("n", "n")
    assert not related("n", "nx") and not related("a/b", "a/c")


def test_a_common_prefix_is_no_conflict(hub: HubEmulator, root: Path, settings: FetchSettings) -> None:
    do_fetch(hub, root, "n", LOCAL_OWNER, settings)
    do_fetch(hub, root, "nx", BOB, settings)
    assert record(root, "n") is not None and record(root, "nx") is not None


def test_the_0123abcd_attack(hub: HubEmulator, root: Path, settings: FetchSettings) -> None:
    """Artifact paths `n` and `n/0123abcd`: `store/n/0123abcd` looks like a version of `n`.

    Before the owner records, republishing `n` deleted the other artifact's store and cleaning `n`
    deleted the rest. Now `n` is refused, and even with the other artifact's record gone (data of
    an older release), `n` never deletes what it did not create.
    """
    victim = do_fetch(hub, root, "n/0123abcd", BOB, settings)
    before = state(root, "n/0123abcd")
    assert run_reason(hub, root, "n", ALICE, settings) == "PathConflict"
    assert cleanup(root, "n", ALICE) == 0
    assert state(root, "n/0123abcd") == before

    (root / ".modeldepot" / "owners" / record_name("n/0123abcd")).unlink()  # as if made before records
    hub.add_repo_from_files(REPO, dict(FILES, **{"config.json": b"{}"}))
    # `n` is claimed now, but it is a directory holding someone else's link: not replaceable
    assert run_reason(hub, root, "n", ALICE, settings) == "PathConflict"
    assert run_reason(hub, root, "n", ALICE, settings) == "PathConflict"  # "republish"
    assert cleanup(root, "n", ALICE) == 0
    assert state(root, "n/0123abcd") == before
    assert digest_of_dir(root / "n" / "0123abcd") == victim.digest
    assert record(root, "n") is None  # the cleanup removed our record, and only that


def test_recreated_artifact_takes_over(hub: HubEmulator, root: Path, settings: FetchSettings) -> None:
    first = do_fetch(hub, root, "m", ALICE, settings)
    hub.clear_requests()
    again = do_fetch(hub, root, "m", ALICE_AGAIN, settings)
    assert again.digest == first.digest and again.downloaded_bytes == 0  # its versions are trusted
    assert [r for r in hub.requests if "/resolve/" in r["path"]] == []
    assert record(root, "m")["uid"] == "uid-a2"  # type: ignore[index]
    # a late cleanup of the old incarnation removes nothing of the new one
    assert cleanup(root, "m", ALICE) == 0
    assert digest_of_dir(root / "m") == first.digest
    assert cleanup(root, "m", ALICE_AGAIN) == 0
    assert not (root / "m").is_symlink() and record(root, "m") is None
    assert os.listdir(root / ".modeldepot" / "store") == []


def test_cleanup_of_a_foreign_path_is_a_noop(
    hub: HubEmulator, root: Path, settings: FetchSettings, caplog: pytest.LogCaptureFixture
) -> None:
    do_fetch(hub, root, "m", ALICE, settings)
    before = state(root, "m")
    with caplog.at_level(logging.WARNING):
        assert cleanup(root, "m", BOB) == 0
        assert cleanup(root, "m", None) == 0  # a laptop cleanup is yet another owner
    assert "belongs to team-a/model (uid uid-a1)" in caplog.text
    assert state(root, "m") == before
    assert record(root, "m") is not None


def test_cleanup_keeps_a_target_that_is_not_our_link(
    hub: HubEmulator, root: Path, settings: FetchSettings, outside: Path
) -> None:
    do_fetch(hub, root, "m", ALICE, settings)
    (root / "m").unlink()
    (root / "m").symlink_to(outside)
    before = snapshot(outside)
    assert cleanup(root, "m", ALICE) == 0
    assert os.readlink(root / "m") == str(outside)
    assert snapshot(outside) == before
    assert not (root / ".modeldepot" / "store" / "m").exists()


def test_only_recorded_versions_are_trusted_for_reuse(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    first = do_fetch(hub, root, "m", ALICE, settings)
    # another tenant plants a version with a poisoned file and a manifest vouching for it, and points
    # the link at it: the next fetch must not hard-link that file as "already verified"
    store = root / ".modeldepot" / "store" / "m"
    fake = "f" * 40
    (store / first.commit).rename(store / fake)
    (store / fake / "model.safetensors").write_bytes(b"x" * (1 << 16))
    (root / "m").unlink()
    (root / "m").symlink_to(f".modeldepot/store/m/{fake}")
    commit2 = hub.add_repo_from_files(REPO, dict(FILES, **{"config.json": b"{}"}))
    result = do_fetch(hub, root, "m", ALICE, settings)
    assert result.commit == commit2 and result.reused_files == 0
    assert result.digest == digest_of_dir(root / "m")
    assert (store / fake).is_dir()  # not ours to delete either
    assert record(root, "m")["versions"] == [commit2]  # type: ignore[index]


# -- planted symlinks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "m",  # the target
        ".modeldepot",
        ".modeldepot/owners",
        ".modeldepot/store/m",
        ".modeldepot/store",
        ".modeldepot/staging/m",
        ".modeldepot/staging",
    ],
)
def test_a_planted_symlink_is_a_path_conflict(
    hub: HubEmulator, root: Path, settings: FetchSettings, outside: Path, planted: str
) -> None:
    (root / planted).parent.mkdir(parents=True, exist_ok=True)
    (root / planted).symlink_to(outside)
    before = snapshot(outside)
    assert run_reason(hub, root, "m", ALICE, settings) == "PathConflict"
    assert "symlink" in json.loads(settings.termination_log.read_text())["message"]
    assert snapshot(outside) == before
    assert (root / planted).is_symlink()
    # cleanup cannot even read the records through a symlink (PathConflict, exit 2); else it works
    assert cleanup(root, "m", ALICE) == (2 if planted in (".modeldepot", ".modeldepot/owners") else 0)
    assert snapshot(outside) == before
    assert (root / planted).is_symlink()


def test_a_planted_symlink_below_the_target_parent(
    hub: HubEmulator, root: Path, settings: FetchSettings, outside: Path
) -> None:
    (root / "ns").symlink_to(outside)
    before = snapshot(outside)
    assert run_reason(hub, root, "ns/m", ALICE, settings) == "PathConflict"
    assert snapshot(outside) == before


def test_a_planted_symlink_inside_staging(
    hub: HubEmulator, root: Path, settings: FetchSettings, outside: Path
) -> None:
    commit = hub.add_repo_from_files(REPO, FILES)
    lay = Layout(root / "m", root=root, owner=ALICE)
    lay.claim()
    lay.prepare_staging(commit, keep=set())  # an earlier, interrupted run of ours
    lay.close()
    staged = root / ".modeldepot" / "staging" / "m" / commit
    (staged / "model.safetensors").symlink_to(outside / "keep.txt")
    (staged / "unplanned").symlink_to(outside / "keep.txt")
    before = snapshot(outside)
    assert run_reason(hub, root, "m", ALICE, settings) == "PathConflict"
    assert not (staged / "unplanned").is_symlink()  # removed, never followed
    assert snapshot(outside) == before


def test_a_planted_version_dir_is_neither_used_nor_deleted(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    commit = hub.add_repo_from_files(REPO, FILES)
    planted = root / ".modeldepot" / "store" / "m" / commit
    planted.mkdir(parents=True)
    (planted / "theirs").write_bytes(b"theirs")
    assert run_reason(hub, root, "m", ALICE, settings) == "PathConflict"
    assert (planted / "theirs").read_bytes() == b"theirs"
    assert cleanup(root, "m", ALICE) == 0
    assert (planted / "theirs").read_bytes() == b"theirs"


# -- the CLI contract -------------------------------------------------------------------------------


def test_cli_owner_option(hub: HubEmulator, root: Path) -> None:
    argv = ["fetch", REPO, "--to", str(root / "m"), "--root", str(root), "--endpoint", hub.url]
    assert cli.main([*argv, "--owner", "team-a/model/uid-a1"]) == 0
    assert record(root, "m")["namespace"] == "team-a"  # type: ignore[index]
    assert cli.main(argv) == 2  # without --owner: the local owner, another artifact
    assert cleanup(root, "m", ALICE) == 0
    assert cli.main(argv) == 0
    assert record(root, "m")["name"] == "local"  # type: ignore[index]


@pytest.mark.parametrize("bad", ["x", "ns/name", "ns/name/uid/extra", "ns//uid", "ns/name/"])
def test_cli_rejects_a_malformed_owner(bad: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["cleanup", "--to", str(root / "m"), "--owner", bad])
    assert exc.value.code == 2
    assert "NAMESPACE/NAME/UID" in capsys.readouterr().err
    with pytest.raises(errors.InvalidSpecError):
        Owner.parse(bad)
    assert Owner.parse("/local/local") == Owner("", "local", "local")
