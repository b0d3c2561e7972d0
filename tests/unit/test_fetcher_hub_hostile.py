"""The Hub a tenant names is untrusted: hostile commit ids, file names, listings, silence, tokens.

Every test drives the real huggingface_hub client against the emulator's hostile modes
(hack/localdev/hubemu/faults.py); short settings keep them fast, and no test asserts on wall time
beyond "it finished".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.hf_api import RepoFile

from localdev.hubemu import FileSpec, HubEmulator
from modeldepot import errors
from modeldepot.fetcher.hub import HubClient, _check_listed_file, resolve_token
from modeldepot.fetcher.remote import check_remote_path
from modeldepot.fetcher.retry import RetryNotice

GOOD_OID = "a" * 40
GOOD_SHA = "b" * 64


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    with HubEmulator(tree_page_size=2) as emu:
        yield emu


def client(hub: HubEmulator, **kw: Any) -> HubClient:
    kw.setdefault("max_retries", 1)
    kw.setdefault("sleep", lambda s: None)
    return HubClient(endpoint=hub.url, **kw)


# -- commit ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sha",
    [
        "../../../store/victim-ns/llm/" + "c" * 40,
        "c" * 39,
        "c" * 41,
        "g" * 40,
        "c" * 40 + "\n",
        "",
        None,
        1234,
        ["c" * 40],
    ],
)
def test_invalid_commit_id_is_a_permanent_invalid_spec(hub: HubEmulator, sha: object) -> None:
    hub.add_repo_from_files("org/m", {"a": b"1"})
    hub.hostile.set_commit_sha("org/m", sha)
    with pytest.raises(errors.InvalidSpecError, match="invalid commit id") as exc:
        client(hub).snapshot("org/m")
    assert not exc.value.retryable
    # nothing was listed or downloaded with the hostile id
    assert not [r for r in hub.requests if "/tree/" in r["path"] or "/resolve/" in r["path"]]


def test_upper_case_commit_id_is_lower_cased(hub: HubEmulator) -> None:
    commit = hub.add_repo_from_files("org/m", {"a": b"1"})
    hub.hostile.set_commit_sha("org/m", commit.upper())
    snap = client(hub).snapshot("org/m")
    assert snap.commit == commit
    assert snap.files[0].url.endswith(f"/resolve/{commit}/a")


def test_a_commit_other_than_the_one_asked_for_is_refused(hub: HubEmulator) -> None:
    first = hub.add_repo_from_files("org/m", {"a": b"1"})
    second = hub.add_repo_from_files("org/m", {"a": b"2"})
    hub.hostile.set_commit_sha("org/m", second)
    with pytest.raises(errors.InvalidSpecError, match="another commit"):
        client(hub).resolve("org/m", revision=first)


# -- file names ---------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "nul\x00byte",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "escape\x1b[31m",
    "del\x7f",
    "../escape",
    "a/../../b",
    "./a",
    "a//b",
    "/etc/passwd",
    ".modeldepot/manifest.json",
    "é" * 128,  # one component of 256 UTF-8 bytes
    "/".join(["d"] * 65),  # 65 components
    "/".join(["x" * 200] * 21),  # 4220 bytes
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_file_names_are_a_permanent_invalid_spec(hub: HubEmulator, name: str) -> None:
    files: dict[str, FileSpec] = {"ok.json": b"{}", name: b"x"}
    hub.add_repo_from_files("org/m", files, check_paths=False)
    sleeps: list[float] = []
    with pytest.raises(errors.InvalidSpecError, match="unsafe file path") as exc:
        HubClient(endpoint=hub.url, sleep=sleeps.append).snapshot("org/m")
    assert not exc.value.retryable and not sleeps, "refused at once, never retried"
    assert repr(name)[:40] in exc.value.message  # names the path (repr, truncated)
    assert len(exc.value.message) < 400


def test_limits_are_inclusive() -> None:
    assert check_remote_path("é" * 127 + "e")  # 255 bytes
    assert check_remote_path("/".join(["d"] * 64))
    assert check_remote_path("/".join(["x" * 255] * 16))  # 4095 bytes
    assert check_remote_path("nested/.modeldepot/ok")  # only the top-level one is ours
    assert check_remote_path("\u0085 C1 and emoji \U0001f600 are fine")


def test_unencodable_and_non_string_paths_are_refused() -> None:
    for bad in ("lone\udc80surrogate", None, 7, ""):
        with pytest.raises(errors.InvalidSpecError):
            check_remote_path(bad)


def test_a_name_both_file_and_directory_is_refused(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/m", {"a": b"1", "a/b": b"2"}, check_paths=False)
    with pytest.raises(errors.InvalidSpecError, match="file and"):
        client(hub).snapshot("org/m")


def test_unselected_hostile_names_do_not_matter(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/m", {"ok.json": b"{}", "bad\nname.txt": b"x"}, check_paths=False)
    snap = client(hub).snapshot("org/m", include=["*.json"])
    assert [f.path for f in snap.files] == ["ok.json"]


def _repo_file(**over: Any) -> RepoFile:
    info: dict[str, Any] = {"type": "file", "path": "w.bin", "size": 10, "oid": GOOD_OID}
    info.update(over)
    return RepoFile(**info)


@pytest.mark.parametrize(
    "over",
    [
        {"size": -1},
        {"size": 2**50 + 1},
        {"size": "10"},
        {"size": 1.5},
        {"size": True},
        {"oid": "z" * 40},
        {"oid": "a" * 39},
        {"oid": None},
        {"lfs": {"oid": "b" * 63, "size": 10, "pointerSize": 1}},
        {"lfs": {"oid": "../" + "b" * 61, "size": 10, "pointerSize": 1}},
        {"lfs": {"oid": 5, "size": 10, "pointerSize": 1}},
    ],
)
def test_invalid_sizes_and_hashes_are_refused(over: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidSpecError, match="invalid"):
        _check_listed_file(_repo_file(**over))


def test_valid_listing_entries_are_normalised() -> None:
    lfs = {"oid": GOOD_SHA.upper(), "size": 2**50, "pointerSize": 1}
    assert _check_listed_file(_repo_file(size=2**50, oid=GOOD_OID.upper(), lfs=lfs)) == (
        "w.bin",
        2**50,
        GOOD_OID,
        GOOD_SHA,
    )
    assert _check_listed_file(_repo_file(oid="c" * 64))[2] == "c" * 64  # sha256 git objects


def test_malformed_listing_json_is_invalid_spec(hub: HubEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from localdev.hubemu import content

    hub.add_repo_from_files("org/m", {"a": b"1"})
    real = content.Entry.tree_json

    def without_oid(self: Any) -> dict[str, Any]:
        out = real(self)
        del out["oid"]  # huggingface_hub's RepoFile then raises KeyError
        return out

    monkeypatch.setattr(content.Entry, "tree_json", without_oid)
    with pytest.raises(errors.InvalidSpecError, match="malformed"):
        client(hub).snapshot("org/m")


# -- pagination ---------------------------------------------------------------------------------


def test_self_referencing_next_link_fails_instead_of_looping(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/m", {f"f{i}": b"x" for i in range(5)})
    hub.hostile.loop_tree("org/m")
    with pytest.raises(errors.InvalidSpecError, match="loops") as exc:
        client(hub).snapshot("org/m")
    assert not exc.value.retryable
    assert len([r for r in hub.requests if "/tree/" in r["path"]]) == 1


def test_listing_page_and_entry_limits(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/m", {f"f{i}": b"x" for i in range(5)})  # 3 pages of 2
    assert len(client(hub, max_pages=3, max_entries=5).snapshot("org/m").files) == 5
    with pytest.raises(errors.InvalidSpecError, match="more than 2 pages"):
        client(hub, max_pages=2).snapshot("org/m")
    with pytest.raises(errors.InvalidSpecError, match="more than 4 entries"):
        client(hub, max_entries=4).snapshot("org/m")


# -- silence and deadlines ----------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["/api/*", "/api/models/org/m/tree/*"])
def test_a_silent_endpoint_is_hub_unavailable_within_the_deadline(hub: HubEmulator, pattern: str) -> None:
    hub.add_repo_from_files("org/m", {"a": b"1"})
    hub.hostile.silence(pattern)
    c = client(hub, connect_timeout=1, read_timeout=0.3, metadata_timeout=1.5, max_retries=3)
    with pytest.raises(errors.HubUnavailableError) as exc:
        c.snapshot("org/m")
    assert exc.value.retryable
    hub.hostile.unsilence()
    assert c.snapshot("org/m").files[0].path == "a", "the shared session still works afterwards"


def test_a_failing_listing_is_retried_by_us_visibly_within_the_deadline(hub: HubEmulator) -> None:
    """The listing goes through huggingface_hub's own backoff (sleeps of 1, 2, 4, 8 s, unseen): a
    5xx ends the call at once instead, and our retries, each told, stop at the deadline."""
    hub.add_repo_from_files("org/m", {"a": b"1"})
    hub.fail_next("/api/models/org/m/tree/*", 1000, status=503, retry_after=None)
    heard: list[RetryNotice | None] = []
    c = client(hub, metadata_timeout=1.0, max_retries=1000, backoff_base=0.1, sleep=time.sleep)
    started = time.monotonic()
    with pytest.raises(errors.HubUnavailableError, match=r"HTTP 503|metadata_timeout"):
        c.snapshot("org/m", on_retry=heard.append)
    assert time.monotonic() - started < 2.0
    assert heard and all(n is not None and n.reason == "ServerError" for n in heard)
    tree = [r for r in hub.requests if "/tree/" in r["path"]]
    # every request was one of our attempts (the last one may have met the deadline before it
    # sent anything): none of huggingface_hub's own
    assert len(heard) <= len(tree) <= len(heard) + 1


def test_bounds_apply_only_inside_hub_client_calls(hub: HubEmulator) -> None:
    from huggingface_hub import HfApi

    hub.add_repo_from_files("org/m", {"a": b"1"})
    client(hub)  # installs the session hooks
    assert HfApi(endpoint=hub.url, token=False).model_info("org/m").sha


# -- tokens -------------------------------------------------------------------------------------


def test_token_from_hf_token_path_reaches_metadata_and_downloads(
    hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = "hf_file_token_0123456789"
    hub.add_repo_from_files("org/p", {"a": b"1"})
    hub.set_gated("org/p", token, private=True)
    with pytest.raises(errors.RepoNotFoundError, match="tokenSecretRef"):
        client(hub).snapshot("org/p")
    path = tmp_path / "secret" / "token"
    path.parent.mkdir()
    path.write_text(token + "\n")  # as a Secret key usually is
    monkeypatch.setenv("HF_TOKEN_PATH", str(path))
    caplog.set_level(logging.DEBUG)
    c = client(hub)
    assert c.snapshot("org/p").files[0].path == "a"
    assert c.download_headers()["authorization"] == f"Bearer {token}"
    assert token not in caplog.text
    # HF_TOKEN (laptop use) still wins over the file
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    assert resolve_token() == "hf_env_token"


def test_missing_unreadable_and_malformed_token_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "absent"))
    assert resolve_token() is None
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path))  # a directory
    with pytest.raises(errors.UnauthorizedError, match="cannot read"):
        resolve_token()
    bad = tmp_path / "bad"
    bad.write_text("hf_secret_part\r\nX-Injected: 1")
    monkeypatch.setenv("HF_TOKEN_PATH", str(bad))
    with pytest.raises(errors.UnauthorizedError) as exc:
        resolve_token()
    assert "hf_secret_part" not in str(exc.value)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "empty"))
    assert resolve_token() is None
