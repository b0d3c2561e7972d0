"""HTTP routing and responses of the Hub emulator (`ThreadingHTTPServer`, one thread a connection).

It speaks the subset of the Hub's HTTP API that downloads need (see the package docstring for the
routes), reading repos from `HubEmulator.store`, taking faults from `HubEmulator.faults` and
`HubEmulator.hostile`, and logging each request in `HubEmulator.request_log`. JSON bodies come from
`api.py`; this module does the HTTP: dispatch, ranges, throttled/corrupted/truncated/trickled
bodies, the LFS redirect and the "CDN" that answers it. The emulated link (`link.py`: per-connection
rate cap, latency) is applied here, per connection and per request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from localdev.hubemu import api
from localdev.hubemu.api import HttpError
from localdev.hubemu.content import Entry
from localdev.hubemu.faults import Bucket, send_trickle
from localdev.hubemu.link import ConnectionPace
from localdev.hubemu.store import Repo, RepoKey

if TYPE_CHECKING:
    from localdev.hubemu.emulator import HubEmulator

CDN_PREFIX = "/_emulator/cdn/"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: HubEmulator) -> None:
        self.emulator = emulator
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        """Hang up idle keep-alive connections so their handler threads end with the server."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubemu/1.0"
    # TCP_NODELAY, as real servers and CDNs set it: the headers and the body are two writes, and
    # with Nagle the body's last segment waited for the client's delayed ACK (~40 ms per answer on
    # a kept-alive connection), which made a many-small-files download measure that, not the client.
    disable_nagle_algorithm = True
    server: Server

    _pace: ConnectionPace  # this connection's rate bucket and latency (`link.py`)
    # per-request state used by the log
    _status: int
    _sent: int
    _repo: str | None
    _file: str | None

    def setup(self) -> None:
        super().setup()
        self._pace = ConnectionPace()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator keeps its own structured log

    @property
    def emu(self) -> HubEmulator:
        return self.server.emulator

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        self._status, self._sent, self._repo, self._file = 0, 0, None, None
        split = urlsplit(self.path)
        url_path = unquote(split.path)
        body = self._read_body()
        entry = self.emu.request_log.begin(
            {
                "time": time.time(),
                "method": method,
                "path": url_path,
                "query": split.query,
                "range": self.headers.get("Range"),
                "status": 0,
                "bytes": 0,
                "auth": self.headers.get("Authorization") is not None,
                "repo": None,
                "file": None,
                "duration": None,
            }
        )
        if self.emu.hostile.is_silent(url_path):
            # hostile: read the request, never answer (the log entry ends now, status 0)
            self.emu.request_log.end(entry, duration=round(time.monotonic() - started, 6))
            self.emu.hostile.hold()
            self.close_connection = True
            return
        self._pace.wait_before_answer(self.emu.link)
        try:
            self._route(method, split.path, parse_qs(split.query), body)
        except HttpError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not look like a hung server to the client
            self.close_connection = True
            if self._status == 0:
                self._send_error(HttpError(500, f"emulator error: {exc!r}"))
            print(f"hubemu: error serving {method} {self.path}: {exc!r}", file=sys.stderr)
        self.emu.request_log.end(
            entry,
            status=self._status,
            bytes=self._sent,
            repo=self._repo,
            file=self._file,
            duration=round(time.monotonic() - started, 6),
        )

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _route(self, method: str, raw_path: str, query: dict[str, list[str]], body: bytes) -> None:
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        if raw_path.startswith(CDN_PREFIX):
            return self._cdn(method, query)
        if segs == ["api", "whoami-v2"] and method == "GET":
            return self._send_json(api.whoami_json(self.headers.get("Authorization")))
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in ("models", "datasets"):
            return self._api(method, segs[1][:-1], segs[2:], query, body)
        repo_type = "model"
        if segs and segs[0] == "datasets":
            repo_type, segs = "dataset", segs[1:]
        # `ns/name/resolve/REV/PATH` or, for legacy un-namespaced repos, `name/resolve/REV/PATH`
        at = 2 if len(segs) >= 5 and segs[2] == "resolve" else 1
        if len(segs) >= at + 3 and segs[at] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(
                method, repo_type, "/".join(segs[:at]), segs[at + 1], "/".join(segs[at + 2 :])
            )
        raise HttpError(404, f"Not found: {raw_path}")

    def _access(self, repo_type: str, repo_id: str, *, download: bool) -> Repo:
        repo = self.emu.store.get(repo_type, repo_id)
        auth = self.headers.get("Authorization")
        return api.check_access(repo, repo_type, repo_id, auth, download=download, url=self.emu.url)

    def _api(
        self, method: str, repo_type: str, segs: list[str], query: dict[str, list[str]], body: bytes
    ) -> None:
        repo_id, rest = self.emu.store.find_repo_id(repo_type, segs)
        self._repo = repo_id
        self._inject_failure(method, repo_type, repo_id, None)
        repo = self._access(repo_type, repo_id, download=False)
        flag = api.flag_getter(query)
        if method == "GET" and (not rest or (len(rest) == 2 and rest[0] == "revision")):
            commit = api.commit_of(repo, rest[1] if rest else "main")
            sha = self.emu.hostile.commit_sha(repo.key, commit.sha)
            return self._send_json(api.info_json(repo, commit, flag("blobs"), sha))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            return self._tree(repo, rest[1], "/".join(rest[2:]), flag("recursive"), flag("expand"), query)
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            commit = api.commit_of(repo, rest[1])
            ctype = self.headers.get("Content-Type") or ""
            return self._send_json(api.paths_info_json(commit, ctype, body))
        if method == "GET" and rest == ["refs"]:
            return self._send_json(api.refs_json(repo))
        if method == "GET" and len(rest) == 2 and rest[0] == "commits":
            return self._send_json(api.commits_json(repo, api.commit_of(repo, rest[1])))
        raise HttpError(404, f"Not found: {self.path}")

    def _inject_failure(self, method: str, repo_type: str, repo_id: str, file: str | None) -> None:
        url_path = unquote(urlsplit(self.path).path)
        fault = self.emu.faults.take(method, url_path, (repo_type, repo_id), file, truncation=False)
        if fault is not None:
            headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            raise HttpError(fault.status, f"Injected failure ({fault.status})", headers=headers)

    def _tree(
        self, repo: Repo, revision: str, base: str, recursive: bool, expand: bool, query: dict[str, list[str]]
    ) -> None:
        items = api.tree_entries(api.commit_of(repo, revision), base, recursive, expand)
        cursor = int((query.get("cursor") or ["0"])[0] or 0)
        limit = int((query.get("limit") or [str(self.emu.tree_page_size)])[0])
        page = items[cursor : cursor + limit]
        headers: dict[str, str] = {}
        host = self.headers.get("Host") or f"{self.emu.host}:{self.emu.port}"
        if cursor + limit < len(items):
            params = {k: v[0] for k, v in query.items() if k != "cursor"}
            params["cursor"] = str(cursor + limit)
            link = f"http://{host}{urlsplit(self.path).path}?{urlencode(params)}"
            headers["Link"] = f'<{link}>; rel="next"'
        loop = self.emu.hostile.next_link(repo.key, f"http://{host}{self.path}")
        if loop is not None:
            headers["Link"] = f'<{loop}>; rel="next"'
        self._send_json(page, headers=headers)

    # ------------------------------------------------------------------ file bytes

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        self._repo, self._file = repo_id, path
        self._inject_failure(method, repo_type, repo_id, path)
        repo = self._access(repo_type, repo_id, download=True)
        commit = api.commit_of(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HttpError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.etag}"'}
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        if entry.lfs and self.emu.lfs_redirect:
            params = urlencode({"type": repo_type, "repo": repo_id, "commit": commit.sha, "path": path})
            location = f"http://{self.emu.cdn_host}:{self.emu.port}{CDN_PREFIX}{entry.sha256}?{params}"
            self._status = 302
            self.send_response(302)
            for k, v in {**headers, "Location": location, "Content-Length": "0"}.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self._serve_bytes(method, (repo_type, repo_id), entry, headers)

    def _cdn(self, method: str, query: dict[str, list[str]]) -> None:
        """The "CDN" target of LFS redirects: no auth (the URL is the credential), plain file headers."""
        if method not in ("GET", "HEAD"):
            raise HttpError(405, "Method not allowed")
        q = {k: v[0] for k, v in query.items()}
        repo_type, repo_id, path = q.get("type", "model"), q.get("repo", ""), q.get("path", "")
        self._repo, self._file = repo_id, path
        self._inject_failure(method, repo_type, repo_id, path)
        commit = self.emu.store.commit(repo_type, repo_id, q.get("commit", ""))
        entry = commit.files.get(path) if commit else None
        if entry is None:
            raise HttpError(404, "Not found")
        disposition = f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}; filename=\"{path}\";"
        headers = {"ETag": f'"{entry.sha256}"', "Content-Disposition": disposition}
        self._serve_bytes(method, (repo_type, repo_id), entry, headers)

    def _serve_bytes(self, method: str, repo_key: RepoKey, entry: Entry, headers: dict[str, str]) -> None:
        size = entry.size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            parsed = api.parse_range(rng, size)
            if parsed is None:
                raise HttpError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
            if parsed != (-1, -1):
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        headers["Accept-Ranges"] = "bytes"
        headers.setdefault("Content-Type", "application/octet-stream")
        self._status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD" or end <= start:
            return
        limit = end
        url_path = unquote(urlsplit(self.path).path)
        truncation = self.emu.faults.take(method, url_path, repo_key, entry.path, truncation=True)
        if truncation is not None:
            limit = min(end, start + truncation.after_bytes)
        corrupt = self.emu.faults.take_corruptions(repo_key, entry.path, start, limit)
        trickle = self.emu.hostile.take_trickle(repo_key, entry.path) if method == "GET" else None
        file = entry.disk.open("rb") if entry.disk is not None else None
        try:
            if trickle is not None:
                send_trickle(
                    lambda data: self._send_bytes(data, None),
                    lambda a, b: entry.read(file, a, b),
                    start,
                    limit,
                    trickle,
                )
            else:
                self._stream(entry, file, repo_key, start, limit, corrupt)
        finally:
            if file is not None:
                file.close()
        if limit < end:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(
        self, entry: Entry, file: Any, repo_key: RepoKey, start: int, end: int, corrupt: list[int]
    ) -> None:
        pos = start
        for bad in [*corrupt, end]:
            if bad > pos:
                self._send_span(entry, file, repo_key, pos, bad)
            if bad < end:
                byte = entry.read(file, bad, bad + 1)
                self._send_bytes(bytes([byte[0] ^ 0xFF]), repo_key)
            pos = bad + 1

    def _send_span(self, entry: Entry, file: Any, repo_key: RepoKey, start: int, end: int) -> None:
        pos = start
        while pos < end:
            buckets = self._buckets(repo_key)
            n = end - pos
            if buckets:
                slowest = min(b.bps for b in buckets)
                n = min(n, max(4096, min(256 << 10, int(slowest / 20))))
                delay = max(b.reserve(n) for b in buckets)
                if delay > 0:
                    time.sleep(delay)
            if entry.data is not None:
                self._send_bytes(memoryview(entry.data)[pos : pos + n], None)
            else:
                sent = self.connection.sendfile(file, pos, n)
                self._sent += sent
                if sent < n:
                    raise BrokenPipeError("client went away")
            pos += n

    def _buckets(self, repo_key: RepoKey) -> list[Bucket]:
        """The rate limits on this body: the throttles (shared) and this connection's cap."""
        buckets = self.emu.faults.buckets_for(repo_key)
        own = self._pace.bucket(self.emu.link)
        return buckets if own is None else [*buckets, own]

    def _send_bytes(self, data: bytes | memoryview, repo_key: RepoKey | None) -> None:
        if repo_key is not None:
            for bucket in self._buckets(repo_key):
                time.sleep(bucket.reserve(len(data)))
        self.connection.sendall(data)
        self._sent += len(data)

    # ------------------------------------------------------------------ responses

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
            self._sent += len(payload)

    def _send_error(self, err: HttpError) -> None:
        headers = dict(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message
        self._send_json({"error": err.message}, status=err.status, headers=headers)
