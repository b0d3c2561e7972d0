"""The content-addressed store of a storage root (fetcher/store.py): dedup across artifacts and
revisions, reference counting, concurrency, and the abuse a root shared with tenants invites."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot.fetcher.layout import Layout
from modeldepot.fetcher.manifest import FileEntry, Manifest, digest_of_dir
from modeldepot.fetcher.owners import Owner
from modeldepot.fetcher.run import FetchRequest, FetchResult, fetch
from modeldepot.fetcher.safefs import Dir
from modeldepot.fetcher.store import BlobStore
from modeldepot.settings import FetchSettings

REPO = "org/tiny"
BIG = 3 << 20
FILES: dict[str, Any] = {
    "config.json": b'{"hidden": 8}\n',
    "tokenizer/vocab.txt": b"a\nb\nc\n" * 1000,
    "model.safetensors": (BIG, 1),
    "extra/pytorch_model.bin": (1 << 20, 2),
    "empty.txt": b"",
}
ALICE = Owner("team-a", "tiny", "uid-a")
BOB = Owner("team-b", "tiny", "uid-b")


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


def do_fetch(
    hub: HubEmulator,
    root: Path,
    path: str,
    owner: Owner,
    settings: FetchSettings,
    *,
    reports: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> FetchResult:
    request = FetchRequest(repo_id=REPO, target=root / path, endpoint=hub.url, root=root, owner=owner, **kw)
    return fetch(request, settings=settings, sink=reports.append if reports is not None else None)


def fetched_files(hub: HubEmulator) -> set[str]:
    return {r["file"] for r in hub.requests if "/resolve/" in r["path"] and r["method"] == "GET"}


def blobs(root: Path) -> dict[str, Path]:
    d = root / ".modeldepot" / "blobs" / "sha256"
    return {p.name: p for p in d.iterdir()} if d.is_dir() else {}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served(hub: HubEmulator, path: str) -> bytes:
    import httpx

    return httpx.get(f"{hub.url}/{REPO}/resolve/main/{path}").content


# -- dedup ----------------------------------------------------------------------------------------


def test_second_artifact_on_the_root_transfers_nothing(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    first = do_fetch(hub, root, "a/tiny", ALICE, settings)
    assert first.downloaded_bytes == first.total_bytes and first.reused_bytes == 0
    hub.clear_requests()
    reports: list[dict[str, Any]] = []
    second = do_fetch(hub, root, "b/tiny", BOB, settings, reports=reports)
    assert fetched_files(hub) == set()  # not one file byte from the Hub
    assert second.digest == first.digest == digest_of_dir(root / "b/tiny")
    assert second.downloaded_bytes == 0 and second.reused_bytes == second.total_bytes
    assert second.reused_files == len(FILES)
    assert reports[-1]["bytesReused"] == second.total_bytes and "bytesAdopted" not in reports[-1]
    for path in FILES:
        a, b = (root / "a/tiny" / path).stat(), (root / "b/tiny" / path).stat()
        assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev), path  # one copy on disk
        assert stat.S_IMODE(b.st_mode) == 0o444, path  # frozen: nobody writes a blob by accident
    store = blobs(root)
    assert set(store) == {sha(root / "a/tiny" / p) for p in FILES}
    for name, p in store.items():
        assert sha(p) == name


def test_termination_message_says_reused_and_transferred(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    second = do_fetch(hub, root, "b/tiny", BOB, settings)
    msg = second.to_dict()
    assert msg["transferredBytes"] == 0 and msg["reusedBytes"] == second.total_bytes
    assert msg["adoptedBytes"] == 0


def test_new_revision_elsewhere_transfers_only_changed_files(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    changed = dict(FILES, **{"config.json": b'{"hidden": 16}\n', "model.safetensors": (BIG, 7)})
    hub.add_repo_from_files(REPO, changed)
    hub.clear_requests()
    second = do_fetch(hub, root, "b/tiny", BOB, settings)
    assert fetched_files(hub) == {"config.json", "model.safetensors"}
    assert second.downloaded_bytes == BIG + len(b'{"hidden": 16}\n')
    assert second.reused_bytes == second.total_bytes - second.downloaded_bytes


def test_a_copy_published_before_the_store_existed_joins_it(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    for blob in blobs(root).values():  # as an older release left the root: no blobs
        blob.unlink()
    for entry in (root / ".modeldepot/blobs/git").iterdir():
        entry.unlink()
    again = do_fetch(hub, root, "a/tiny", ALICE, settings)  # nothing to fetch: it files the blobs
    assert again.downloaded_bytes == 0 and set(blobs(root)) == {sha(root / "a/tiny" / p) for p in FILES}
    hub.clear_requests()
    second = do_fetch(hub, root, "b/tiny", BOB, settings)
    assert fetched_files(hub) == set() and second.reused_bytes == second.total_bytes


def test_without_write_access_to_the_store_the_fetch_still_works(
    hub: HubEmulator, root: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: BlobStore, kind: str, *, create: bool = False) -> Dir:
        raise PermissionError(13, "Permission denied", kind)

    monkeypatch.setattr(BlobStore, "_open", refuse)
    result = do_fetch(hub, root, "a/tiny", ALICE, settings)
    assert result.digest == digest_of_dir(root / "a/tiny")
    second = do_fetch(hub, root, "b/tiny", BOB, settings)
    assert second.digest == result.digest and second.reused_bytes == 0


def test_blobs_are_counted_by_manifests_and_go_with_the_last(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    do_fetch(hub, root, "b/tiny", BOB, settings)
    shared = set(blobs(root))
    with Layout(root / "a/tiny", root=root, owner=ALICE) as lay:
        assert lay.remove_all()
    assert set(blobs(root)) == shared  # Bob's manifest still names every one
    assert digest_of_dir(root / "b/tiny") == Manifest.read(root / "b/tiny").digest  # type: ignore[union-attr]
    with Layout(root / "b/tiny", root=root, owner=BOB) as lay:
        assert lay.remove_all()
    assert blobs(root) == {}


def test_a_new_revision_drops_the_blobs_only_the_old_one_named(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    old = sha(root / "a/tiny/model.safetensors")
    hub.add_repo_from_files(REPO, dict(FILES, **{"model.safetensors": (BIG, 9)}))
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    now = sha(root / "a/tiny/model.safetensors")
    assert now != old and now in blobs(root) and old not in blobs(root)
    assert set(blobs(root)) == {sha(root / "a/tiny" / p) for p in FILES}


def test_collect_keeps_a_blob_another_tree_still_links(tmp_path: Path) -> None:
    with Dir.open_root(tmp_path, create=True) as top, top.open_dir("meta", create=True) as meta:
        staging = top.open_dir("staging", create=True)
        with staging:
            (tmp_path / "staging/f").write_bytes(b"x" * 10)
            h = hashlib.sha256(b"x" * 10).hexdigest()
            store = BlobStore(meta)
            assert store.ingest(staging, [FileEntry("f", 10, h)], {}) == 1
            assert store.collect(set()) == (0, 0)  # a fetch in flight links it
            (tmp_path / "staging/f").unlink()
            assert store.collect({h}) == (0, 0)  # a manifest names it
            assert store.collect(set()) == (1, 10)
            assert not (tmp_path / "meta/blobs/sha256" / h).exists()


def test_two_ingests_of_the_same_content_race_safely(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    h = hashlib.sha256(data).hexdigest()
    for attempt in range(20):
        base = tmp_path / str(attempt)
        for n in range(2):
            (base / f"s{n}").mkdir(parents=True)
            (base / f"s{n}/f").write_bytes(data)
        barrier = threading.Barrier(2)
        added: list[int] = []

        def ingest(
            n: int, base: Path = base, barrier: threading.Barrier = barrier, added: list[int] = added
        ) -> None:
            with (
                Dir.open_root(base, create=True) as top,
                top.open_dir("meta", create=True) as meta,
                top.open_dir(f"s{n}") as staging,
            ):
                barrier.wait()
                added.append(BlobStore(meta).ingest(staging, [FileEntry("f", len(data), h)], {}))

        threads = [threading.Thread(target=ingest, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(added) == [0, 1]
        blob = base / "meta/blobs/sha256" / h
        assert sha(blob) == h and blob.stat().st_nlink == 2  # exactly one of the two is the blob


def test_concurrent_fetches_of_one_model_on_one_root(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    results: dict[str, FetchResult] = {}

    def run(path: str, owner: Owner) -> None:
        results[path] = do_fetch(hub, root, path, owner, settings)

    threads = [threading.Thread(target=run, args=a) for a in (("a/tiny", ALICE), ("b/tiny", BOB))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["a/tiny"].digest == results["b/tiny"].digest
    for path in ("a/tiny", "b/tiny"):
        assert digest_of_dir(root / path) == results[path].digest
    for name, p in blobs(root).items():
        assert sha(p) == name


# -- abuse ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("node_local", [False, True])
def test_a_planted_blob_with_wrong_bytes_is_not_reused(
    hub: HubEmulator, root: Path, settings: FetchSettings, node_local: bool
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    with Layout(root / "a/tiny", root=root, owner=ALICE) as lay:
        assert lay.remove_all()
    # the store is empty again; a tenant plants the name of the model's weights, wrong bytes
    name = hashlib.sha256(served(hub, "model.safetensors")).hexdigest()
    d = root / ".modeldepot/blobs/sha256"
    (d / name).write_bytes(b"\0" * BIG)
    hub.clear_requests()
    second = do_fetch(hub, root, "b/tiny", BOB, settings, node_local=node_local)
    assert "model.safetensors" in fetched_files(hub)
    assert (root / "b/tiny/model.safetensors").read_bytes() == served(hub, "model.safetensors")
    assert second.digest == digest_of_dir(root / "b/tiny")
    assert sha(d / name) == name  # the planted file is gone; the verified one is the blob now


def test_a_planted_small_file_under_the_git_index_is_not_reused(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    # point config.json's git blob id at the blob of another file of the same size
    index = root / ".modeldepot/blobs/git"
    (entry,) = [p for p in index.iterdir() if p.read_text() == sha(root / "a/tiny/config.json")]
    other = b'{"hidden": 9}\n'
    planted = hashlib.sha256(other).hexdigest()
    (root / ".modeldepot/blobs/sha256" / planted).write_bytes(other)
    entry.write_text(planted)
    hub.clear_requests()
    do_fetch(hub, root, "b/tiny", BOB, settings)
    assert "config.json" in fetched_files(hub)
    assert (root / "b/tiny/config.json").read_bytes() == FILES["config.json"]


def test_a_symlink_planted_in_the_store_is_not_followed(
    hub: HubEmulator, root: Path, settings: FetchSettings, tmp_path: Path
) -> None:
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    with Layout(root / "a/tiny", root=root, owner=ALICE) as lay:
        assert lay.remove_all()
    outside = tmp_path / "outside"
    outside.write_bytes(served(hub, "model.safetensors"))  # even the right bytes: never through a link
    name = hashlib.sha256(outside.read_bytes()).hexdigest()
    (root / ".modeldepot/blobs/sha256" / name).symlink_to(outside)
    hub.clear_requests()
    do_fetch(hub, root, "b/tiny", BOB, settings, node_local=True)
    assert "model.safetensors" in fetched_files(hub)
    published = root / "b/tiny/model.safetensors"
    assert not published.is_symlink() and published.stat().st_ino != outside.stat().st_ino
    assert outside.stat().st_nlink == 1
    assert not (root / ".modeldepot/blobs/sha256" / name).is_symlink()


def test_a_symlinked_store_directory_is_not_used(
    hub: HubEmulator, root: Path, settings: FetchSettings, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / ".modeldepot").mkdir()
    (root / ".modeldepot/blobs").symlink_to(elsewhere)
    result = do_fetch(hub, root, "a/tiny", ALICE, settings)
    assert result.digest == digest_of_dir(root / "a/tiny")
    assert list(elsewhere.iterdir()) == []  # nothing written through the link


def test_a_modified_hard_linked_file_does_not_poison_another_artifact(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    """On a claim (tenant pods may write it) every reused blob is re-hashed, whatever its mode."""
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    mine = root / "a/tiny/model.safetensors"  # the same inode as the blob
    mine.chmod(0o644)
    with mine.open("r+b") as fh:
        fh.write(b"EVIL")
    mine.chmod(0o444)  # and cover the tracks
    hub.clear_requests()
    second = do_fetch(hub, root, "b/tiny", BOB, settings)
    theirs = root / "b/tiny/model.safetensors"
    assert "model.safetensors" in fetched_files(hub)
    assert theirs.read_bytes() == served(hub, "model.safetensors")
    assert theirs.stat().st_ino != mine.stat().st_ino
    assert second.digest == digest_of_dir(root / "b/tiny")


def test_on_a_node_local_root_a_writable_blob_is_rehashed(
    hub: HubEmulator, root: Path, settings: FetchSettings
) -> None:
    """Node-local roots are written by fetchers only, so a frozen blob (ours, 0444) is trusted
    there; one that anybody may write is re-hashed like on a claim."""
    do_fetch(hub, root, "a/tiny", ALICE, settings)
    mine = root / "a/tiny/model.safetensors"
    mine.chmod(0o644)
    with mine.open("r+b") as fh:
        fh.write(b"EVIL")
    hub.clear_requests()
    do_fetch(hub, root, "b/tiny", BOB, settings, node_local=True)
    assert "model.safetensors" in fetched_files(hub)
    assert (root / "b/tiny/model.safetensors").read_bytes() == served(hub, "model.safetensors")


def test_a_bad_blob_leaves_a_partial_download_in_place(tmp_path: Path) -> None:
    good = os.urandom(4096)
    h = hashlib.sha256(good).hexdigest()
    (tmp_path / "meta/blobs/sha256").mkdir(parents=True)
    (tmp_path / "meta/blobs/sha256" / h).write_bytes(b"\0" * 4096)  # planted: right name and size
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging/f").write_bytes(good[:1000])  # an interrupted download, to be resumed
    with (
        Dir.open_root(tmp_path) as top,
        top.open_dir("meta") as meta,
        top.open_dir("staging") as staging,
    ):
        assert BlobStore(meta).reuse(staging, "f", size=4096, sha256=h, blob_id="0" * 40) is None
    assert (tmp_path / "staging/f").read_bytes() == good[:1000]
    assert not (tmp_path / "meta/blobs/sha256" / h).exists()  # dropped from the store
    assert not list((tmp_path / "staging/.modeldepot/reusing").iterdir())
