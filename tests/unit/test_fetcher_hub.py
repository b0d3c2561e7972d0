"""Hub client: resolve, listing with blob ids and LFS sha256, filtering, URLs and error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.hubemu import FileSpec, HubEmulator
from modeldepot import errors
from modeldepot.fetcher.hub import HubClient
from modeldepot.fetcher.remote import check_remote_path
from modeldepot.fetcher.retry import RetryNotice


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubEmulator(tree_page_size=2) as emu:
        yield emu


def test_snapshot_lists_every_file_at_the_commit(hub: HubEmulator) -> None:
    files: dict[str, FileSpec] = {
        "a.json": b"{}",
        "d/b.txt": b"b",
        "d/e/w.safetensors": (12345, 1),
        "z.bin": (100, 2),
    }
    commit = hub.add_repo_from_files("org/m", files)
    hub.add_repo_from_files("org/m", {"other": b"x"})  # main moves on; the old commit stays addressable
    snap = HubClient(endpoint=hub.url).snapshot("org/m", revision=commit)
    assert snap.commit == commit
    advertised = hub.repo_files("org/m", commit)
    assert [f.path for f in snap.files] == sorted(files)  # paginated tree, recursive
    for f in snap.files:
        assert f.size == advertised[f.path]["size"]
        assert f.blob_id == advertised[f.path]["oid"]
        assert f.sha256 == (advertised[f.path]["sha256"] if advertised[f.path]["lfs"] else None)
        assert f.url == f"{hub.url}/org/m/resolve/{commit}/{f.path}"
    assert snap.total_bytes == sum(v["size"] for v in advertised.values())


def test_branch_and_tag_resolve_to_commits(hub: HubEmulator) -> None:
    c1 = hub.add_repo_from_files("org/m", {"a": b"1"})
    hub.add_tag("org/m", "v1")
    c2 = hub.add_repo_from_files("org/m", {"a": b"2"})
    client = HubClient(endpoint=hub.url)
    assert client.resolve("org/m") == c2
    assert client.resolve("org/m", revision="v1") == c1
    assert client.resolve("org/m", revision=c1) == c1


def test_dataset_repo(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/ds", {"data/train.parquet": (1000, 1)}, repo_type="dataset")
    snap = HubClient(endpoint=hub.url).snapshot("org/ds", repo_type="dataset")
    assert snap.files[0].url.startswith(f"{hub.url}/datasets/org/ds/resolve/")
    with pytest.raises(errors.RepoNotFoundError):
        HubClient(endpoint=hub.url).snapshot("org/ds")  # it is not a model


def test_include_exclude_use_hub_globs(hub: HubEmulator) -> None:
    hub.add_repo_from_files(
        "org/m", {"a.json": b"1", "onnx/m.onnx": b"2", "m.safetensors": b"3", "README.md": b"4"}
    )
    client = HubClient(endpoint=hub.url)
    snap = client.snapshot("org/m", include=["*.json", "*.safetensors", "onnx/*"], exclude=["onnx/*"])
    assert [f.path for f in snap.files] == ["a.json", "m.safetensors"]
    with pytest.raises(errors.NoMatchingFilesError) as exc:
        client.snapshot("org/m", include=["*.gguf"])
    assert exc.value.reason == "NoMatchingFiles" and not exc.value.retryable


@pytest.mark.parametrize(
    ("repo", "revision", "error"),
    [
        ("org/nope", "main", errors.RepoNotFoundError),
        ("org/m", "nope", errors.RevisionNotFoundError),
        ("bad//id", "main", errors.InvalidSpecError),
    ],
)
def test_error_mapping(
    hub: HubEmulator, repo: str, revision: str, error: type[errors.ModelDepotError]
) -> None:
    hub.add_repo_from_files("org/m", {"a": b"1"})
    with pytest.raises(error):
        HubClient(endpoint=hub.url).snapshot(repo, revision=revision)


def test_5xx_is_retried_then_hub_unavailable(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/m", {"a": b"1"})
    sleeps: list[float] = []
    client = HubClient(endpoint=hub.url, max_retries=2, sleep=sleeps.append)
    hub.fail_next("/api/models/org/m/*", 2, status=503)
    assert client.snapshot("org/m").files[0].path == "a"
    assert len(sleeps) == 2
    hub.fail_next("/api/models/org/m/*", 10, status=500)
    with pytest.raises(errors.HubUnavailableError) as exc:
        client.snapshot("org/m")
    assert exc.value.retryable


def test_each_metadata_retry_is_told_with_its_reason_and_wait(hub: HubEmulator) -> None:
    hub.add_repo_from_files("org/m", {"a": b"1"})
    sleeps: list[float] = []
    heard: list[RetryNotice | None] = []
    client = HubClient(endpoint=hub.url, max_retries=3, backoff_max=10, sleep=sleeps.append)
    hub.fail_next("/api/models/org/m/revision/*", 1, status=429, retry_after=3)
    hub.fail_next("/api/models/org/m/tree/*", 1, status=502, retry_after=None)
    assert client.snapshot("org/m", on_retry=heard.append).files[0].path == "a"
    assert sleeps[0] == 3.0  # the 429's Retry-After, read before huggingface_hub could sleep on it
    assert 0.25 <= sleeps[1] <= 0.5  # no Retry-After: the backoff
    assert heard == [
        RetryNotice("RateLimited", 2, 4, 3.0, "the Hub answered HTTP 429 for org/m"),
        None,  # resolved: the retry is over
        RetryNotice("ServerError", 2, 4, sleeps[1], "the Hub answered HTTP 502 for org/m"),
        None,
    ]
    hub.fail_next("/api/models/org/m/revision/*", 1, status=429, retry_after=3600)
    heard.clear()
    client.resolve("org/m", on_retry=heard.append)
    assert sleeps[-1] == 10.0 and heard[0] is not None and heard[0].delay == 10.0  # capped by backoff_max


def test_an_unreachable_hub_is_retried_as_hub_unreachable() -> None:
    heard: list[RetryNotice | None] = []
    client = HubClient(endpoint="http://127.0.0.1:9", max_retries=2, sleep=lambda s: None)
    with pytest.raises(errors.HubUnavailableError, match="cannot reach the Hub"):
        client.resolve("org/m", on_retry=heard.append)
    assert [(n.reason, n.attempt, n.max_attempts) for n in heard if n is not None] == [
        ("HubUnreachable", 2, 3),
        ("HubUnreachable", 3, 3),
    ]
    assert heard[0] is not None and heard[0].message.startswith("cannot reach the Hub: ConnectError")


def test_invalid_repo_type() -> None:
    with pytest.raises(errors.InvalidSpecError):
        HubClient(endpoint="http://127.0.0.1:9").resolve("org/m", repo_type="space")


@pytest.mark.parametrize("path", ["/abs", "a/../b", ".modeldepot/x", "a//b", "./a"])
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(errors.InvalidSpecError):
        check_remote_path(path)


def test_download_headers_carry_token_only_when_set(
    hub: HubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = HubClient(endpoint=hub.url)
    assert "authorization" not in {k.lower() for k in client.download_headers()}
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    headers = {k.lower(): v for k, v in client.download_headers().items()}
    assert headers["authorization"] == "Bearer hf_abc"
    assert headers["accept-encoding"] == "identity"
    assert "modeldepot" in headers["user-agent"]


def test_downloads_share_the_hub_clients_verifying_tls_context(
    hub: HubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One CA load per fetch: the downloads' client uses huggingface_hub's TLS context, which
    verifies certificates and host names; a context that does not verify is never shared."""
    import ssl

    import httpx2
    import huggingface_hub

    from modeldepot.fetcher import hub as hub_module
    from modeldepot.fetcher.transfer import Transfer

    hub.add_repo_from_files("org/m", {"a": b"1"})
    client = HubClient(endpoint=hub.url)
    client.snapshot("org/m")
    context = client.tls_context()
    assert context is huggingface_hub.get_session()._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with Transfer(headers={}, tls=context) as t:
        assert t._rx.client._transport._pool._ssl_context is context  # type: ignore[attr-defined]
    with Transfer(headers={}) as t:  # none given: httpx2's own, verifying
        own = t._rx.client._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert own is not context and own.verify_mode == ssl.CERT_REQUIRED and own.check_hostname

    monkeypatch.setattr(hub_module, "get_session", lambda: httpx2.Client(verify=False))
    assert client.tls_context() is None
    monkeypatch.setattr(hub_module, "get_session", lambda: object())  # httpx2's insides changed
    assert client.tls_context() is None
