"""Adoption: files already at the target (copied by hand, or left by `deletionPolicy: Retain`) are
verified in place, byte for byte, and taken under management without a download."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot import errors
from modeldepot.fetcher.manifest import digest_of_dir
from modeldepot.fetcher.owners import Owner
from modeldepot.fetcher.run import FetchRequest, FetchResult, fetch
from modeldepot.fetcher.safefs import Dir
from modeldepot.settings import FetchSettings

REPO = "org/tiny"
BIG = 3 << 20
FILES: dict[str, Any] = {
    "config.json": b'{"hidden": 8}\n',
    "tokenizer/vocab.txt": b"a\nb\nc\n" * 1000,
    "model.safetensors": (BIG, 1),
    "empty.txt": b"",
}
ALICE = Owner("team-a", "tiny", "uid-a")


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
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def settings(tmp_path: Path) -> FetchSettings:
    return FetchSettings(
        termination_log=tmp_path / "termination-log", backoff_base=0.01, backoff_max=0.05, max_retries=3
    )


def served(hub: HubEmulator, path: str) -> bytes:
    import httpx

    return httpx.get(f"{hub.url}/{REPO}/resolve/main/{path}").content


def fetched_files(hub: HubEmulator) -> set[str]:
    return {r["file"] for r in hub.requests if "/resolve/" in r["path"] and r["method"] == "GET"}


def copy_by_hand(hub: HubEmulator, target: Path, files: dict[str, bytes] | None = None) -> None:
    for path in FILES:
        dest = target / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(files[path] if files and path in files else served(hub, path))
    hub.clear_requests()


def do_fetch(
    hub: HubEmulator, root: Path, settings: FetchSettings, owner: Owner = ALICE, **kw: Any
) -> FetchResult:
    request = FetchRequest(repo_id=REPO, target=root / "m", endpoint=hub.url, root=root, owner=owner, **kw)
    return fetch(request, settings=settings)


def test_a_directory_copied_by_hand_is_adopted_without_a_download(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    target = root / "m"
    copy_by_hand(hub, target)
    inode = (target / "model.safetensors").stat().st_ino
    reports: list[dict[str, Any]] = []
    request = FetchRequest(repo_id=REPO, target=target, endpoint=hub.url, root=root, owner=ALICE)
    result = fetch(request, settings=settings, sink=reports.append)
    assert fetched_files(hub) == set()
    assert result.adopted_bytes == result.total_bytes and result.downloaded_bytes == 0
    assert result.to_dict()["adoptedBytes"] == result.total_bytes
    assert reports[-1]["bytesAdopted"] == result.total_bytes
    assert target.is_symlink()  # now a managed, published version
    assert (target / "model.safetensors").stat().st_ino == inode  # not copied either
    assert result.digest == digest_of_dir(target)
    # and the next artifact on the root finds it in the store
    hub.clear_requests()
    other = Owner("team-b", "tiny", "uid-b")
    again = fetch(
        FetchRequest(repo_id=REPO, target=root / "n", endpoint=hub.url, root=root, owner=other),
        settings=settings,
    )
    assert fetched_files(hub) == set() and again.reused_bytes == again.total_bytes


def test_a_file_that_does_not_verify_is_downloaded_and_replaced(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    target = root / "m"
    good = served(hub, "model.safetensors")
    bad = bytes([good[0] ^ 1]) + good[1:]  # same size, one bit flipped
    copy_by_hand(hub, target, {"model.safetensors": bad, "config.json": b'{"hidden": 9}\n'})
    result = do_fetch(hub, root, settings)
    assert fetched_files(hub) == {"model.safetensors", "config.json"}
    assert result.adopted_bytes == result.total_bytes - len(good) - len(FILES["config.json"])
    assert (target / "model.safetensors").read_bytes() == good
    assert (target / "config.json").read_bytes() == FILES["config.json"]
    assert result.digest == digest_of_dir(target)


def test_a_directory_holding_other_files_is_refused_before_anything_is_hashed(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    target = root / "m"
    copy_by_hand(hub, target)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(errors.PathConflictError, match=r"notes\.txt"):
        do_fetch(hub, root, settings)
    assert fetched_files(hub) == set()
    assert (target / "notes.txt").read_text() == "mine" and not target.is_symlink()


def test_a_symlink_in_the_directory_is_refused_not_followed(
    hub: HubEmulator, root: Path, settings: FetchSettings, tmp_path: Path
) -> None:
    target = root / "m"
    copy_by_hand(hub, target)
    secret = tmp_path / "secret"
    secret.write_bytes(served(hub, "model.safetensors"))
    (target / "model.safetensors").unlink()
    (target / "model.safetensors").symlink_to(secret)
    with pytest.raises(errors.PathConflictError, match=r"model\.safetensors"):
        do_fetch(hub, root, settings)
    assert secret.stat().st_nlink == 1


def test_a_copy_left_by_retain_is_verified_and_adopted(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    first = do_fetch(hub, root, settings)
    hub.clear_requests()
    recreated = Owner(ALICE.namespace, ALICE.name, "uid-a2")  # deleted with Retain, applied again
    again = do_fetch(hub, root, settings, owner=recreated)
    assert fetched_files(hub) == set()
    assert again.digest == first.digest and again.adopted_bytes == again.total_bytes


def test_a_tampered_copy_left_by_retain_is_not_adopted(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, settings)
    weights = root / "m" / "model.safetensors"
    weights.chmod(0o644)
    with weights.open("r+b") as fh:
        fh.write(b"EVIL")
    hub.clear_requests()
    recreated = Owner(ALICE.namespace, ALICE.name, "uid-a2")
    again = do_fetch(hub, root, settings, owner=recreated)
    assert "model.safetensors" in fetched_files(hub)
    assert (root / "m" / "model.safetensors").read_bytes() == served(hub, "model.safetensors")
    assert again.digest == digest_of_dir(root / "m")


def test_files_that_may_not_be_linked_are_copied_and_still_adopted(
    hub: HubEmulator, root: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another owner's files under fs.protected_hardlinks (or another filesystem) refuse a link."""
    target = root / "m"
    copy_by_hand(hub, target)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(Dir, "link", refuse)
    result = do_fetch(hub, root, settings)
    assert fetched_files(hub) == set()
    assert result.adopted_bytes == result.total_bytes
    assert target.is_symlink() and result.digest == digest_of_dir(target)


def test_a_directory_the_fetcher_cannot_remove_is_a_clear_conflict(
    hub: HubEmulator, root: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_by_hand(hub, root / "m")
    real = Dir.rmtree

    def rmtree(self: Dir, rel: Any, *, missing_ok: bool = True) -> None:
        if str(rel) == "m":
            raise PermissionError(errno.EACCES, "Permission denied")
        real(self, rel, missing_ok=missing_ok)

    monkeypatch.setattr(Dir, "rmtree", rmtree)
    with pytest.raises(errors.PathConflictError, match=r"cannot be replaced.*uid"):
        do_fetch(hub, root, settings)
