"""`HubEmulator`: the emulated Hub's test-facing API, and its server's lifecycle.

It owns one of each part -- `store` (repos), `faults` and `hostile` (what goes wrong), `link`
(per-connection rate cap and latency), `request_log` -- and the HTTP server whose handler (`handler.py`) reads them. The methods below
are the controls tests use; they delegate to those parts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from localdev.hubemu.content import (
    DEFAULT_LFS_PATTERNS,
    DEFAULT_LFS_THRESHOLD,
    DEFAULT_MEMORY_LIMIT,
    ContentMaker,
    FileSpec,
)
from localdev.hubemu.faults import Faults, HostileHub
from localdev.hubemu.handler import Server
from localdev.hubemu.link import Link
from localdev.hubemu.requestlog import RequestLog
from localdev.hubemu.store import RepoStore, repo_key


class HubEmulator:
    """In-process Hugging Face Hub emulator; see the package docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cache_dir: str | Path | None = None,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        tree_page_size: int = 1000,
        lfs_redirect: bool = False,
        cdn_host: str | None = None,
        throttle_bps: float | None = None,
        conn_bps: float | None = None,
        latency: float = 0.0,
        connect_latency: float = 0.0,
        log_limit: int = 100_000,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._port = port
        self.tree_page_size = tree_page_size
        self.lfs_redirect = lfs_redirect
        self.cdn_host = cdn_host or ("localhost" if host == "127.0.0.1" else host)
        self.store = RepoStore(ContentMaker(cache_dir, lfs_threshold, lfs_patterns, memory_limit))
        """The repos (`store.RepoStore`)."""
        self.faults = Faults()
        """Throttles, corruptions, pending failures and truncations (`faults.Faults`)."""
        self.hostile = HostileHub()
        """Hostile modes (`faults.HostileHub`): lying commit ids, looping pagination, trickle, silence."""
        self.link = Link(conn_bps, latency, connect_latency)
        """The emulated link (`link.Link`): each connection's rate cap, per-request and per-connection latency."""
        self.request_log = RequestLog(log_limit, verbose=verbose)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        if throttle_bps:
            self.set_throttle(throttle_bps)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HubEmulator:
        if self._server is not None:
            return self
        server = Server((self.host, self._port), self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="hubemu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.hostile.unsilence()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ repos

    def add_repo_from_dir(
        self,
        repo_id: str,
        path: str | Path,
        *,
        repo_type: str = "model",
        revision: str = "main",
        token: str | None = None,
        message: str | None = None,
    ) -> str:
        """Commit the files under `path` (without `.git/` and `.cache/`) to branch `revision`."""
        return self.store.add_repo_from_dir(
            repo_id, path, repo_type=repo_type, revision=revision, token=token, message=message
        )

    def add_repo_from_files(
        self,
        repo_id: str,
        files: Mapping[str, FileSpec],
        *,
        repo_type: str = "model",
        revision: str = "main",
        token: str | None = None,
        private: bool = False,
        message: str | None = None,
        check_paths: bool = True,
    ) -> str:
        """Create the repo if needed and commit exactly `files` on branch `revision`; return the sha.

        A later call with the same repo adds a new commit (child of the branch's head) whose tree
        is `files` (a full replacement, not a merge). `token` makes the repo gated (or private,
        with `private=True`) for that token. `check_paths=False` keeps names verbatim (hostile
        names: control characters, `..`, absolute, very long) instead of refusing them.
        """
        return self.store.add_repo_from_files(
            repo_id,
            files,
            repo_type=repo_type,
            revision=revision,
            token=token,
            private=private,
            message=message,
            check_paths=check_paths,
        )

    def add_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Point tag `tag` at what `revision` resolves to; return the commit sha."""
        return self.store.set_ref(repo_id, repo_type, tag, revision, tags=True)

    def set_branch(self, repo_id: str, branch: str, revision: str, *, repo_type: str = "model") -> str:
        """Create or move branch `branch` to what `revision` resolves to (e.g. move `main` back)."""
        return self.store.set_ref(repo_id, repo_type, branch, revision, tags=False)

    def set_gated(
        self, repo_id: str, token: str | None, *, repo_type: str = "model", private: bool = False
    ) -> None:
        """Require `token` for downloads (gated) or for everything (private); None opens the repo."""
        self.store.set_gated(repo_id, token, repo_type=repo_type, private=private)

    def delete_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        self.store.delete_repo(repo_id, repo_type=repo_type)

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, Any]:
        """What the emulator advertises for each file: {path: {size, oid, sha256, lfs}}."""
        return self.store.repo_files(repo_id, revision, repo_type=repo_type)

    # ------------------------------------------------------------------ faults and log

    def set_throttle(
        self, bps: float | None, *, repo_id: str | None = None, repo_type: str = "model"
    ) -> None:
        """Limit body bytes/s, summed over all connections (globally or for one repo); None lifts it."""
        self.faults.set_throttle(bps, None if repo_id is None else repo_key(repo_type, repo_id))

    def set_link(
        self, *, conn_bps: float | None = None, latency: float = 0.0, connect_latency: float = 0.0
    ) -> None:
        """Shape the link like a CDN edge (`link.py`); `set_link()` restores plain loopback.

        Each connection is capped at `conn_bps` body bytes/s (None: no cap), every answer waits
        `latency` seconds and a new connection's first answer `connect_latency` more. Not a fault:
        `reset_faults` keeps it. Connections already open take the new values at their next body.
        """
        self.link = Link(conn_bps, latency, connect_latency)

    def corrupt(
        self,
        repo_id: str,
        path: str,
        *,
        offset: int = 0,
        repo_type: str = "model",
        count: int | None = None,
    ) -> None:
        """Flip byte `offset` of `path` in served bodies (every revision); hashes stay the original.

        `count` limits it to the next N responses whose range covers the offset.
        """
        self.faults.corrupt(repo_key(repo_type, repo_id), path, offset, count)

    def clear_corruptions(self) -> None:
        self.faults.clear_corruptions()

    def fail_next(
        self,
        path: str,
        count: int = 1,
        *,
        status: int = 503,
        repo_id: str | None = None,
        repo_type: str = "model",
        methods: Iterable[str] | None = None,
        retry_after: float | None = 0,
    ) -> None:
        """Answer the next `count` matching requests with `status` and `Retry-After: <retry_after>`
        (None: no such header).

        `path` is a glob over the in-repo file path of resolve requests (`"*.safetensors"`) or, if
        it starts with `/`, over the URL path (`"/api/models/org/*"`).
        """
        after = None if retry_after is None else f"{retry_after:g}"
        self.faults.add(path, count, repo_id, repo_type, methods, status=status, retry_after=after)

    def truncate_next(
        self,
        path: str,
        after_bytes: int,
        count: int = 1,
        *,
        repo_id: str | None = None,
        repo_type: str = "model",
    ) -> None:
        """Make the next `count` matching GETs send only `after_bytes` body bytes, then hang up."""
        self.faults.add(path, count, repo_id, repo_type, ["GET"], after_bytes=after_bytes, status=0)

    def reset_faults(self) -> None:
        """Lift throttles, corruptions, pending failures/truncations and hostile modes."""
        self.faults.reset()
        self.hostile.reset()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Request log (oldest first): time, method, path, query, range, status, bytes, auth, repo, file.

        Waits (up to 2 s) for requests already being handled to finish, so that a response the
        caller has just received is logged with its final status and byte count.
        """
        return self.request_log.entries()

    def clear_requests(self) -> None:
        self.request_log.clear()
