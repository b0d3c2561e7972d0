"""The Hub's HTTP answers as data: JSON bodies and errors, built from the store (no I/O).

Errors, as `huggingface_hub.utils.hf_raise_for_status` maps them: unknown or private repo without a
valid token -> 401 (no `Authorization`) / 404 with `X-Error-Code: RepoNotFound`
(`RepositoryNotFoundError`); unknown revision -> 404 `RevisionNotFound`; missing file -> 404
`EntryNotFound` (`RemoteEntryNotFoundError`); gated repo: metadata and listings stay public like on
the Hub, file downloads without the token -> 401 `GatedRepo`, with another token -> 403 `GatedRepo`
(`GatedRepoError`, a subclass of `RepositoryNotFoundError`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from localdev.hubemu.store import Commit, Repo, iso


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def check_access(
    repo: Repo | None, repo_type: str, repo_id: str, auth: str | None, *, download: bool, url: str
) -> Repo:
    """The repo, or raise the HTTP error the Hub would answer for this caller (`url`: the Hub's)."""
    token = auth[7:].strip() if auth and auth.lower().startswith("bearer ") else None
    not_found = HttpError(401 if auth is None else 404, "Repository not found", "RepoNotFound")
    if repo is None:
        raise not_found
    if repo.token is not None and token != repo.token:
        if repo.private:
            raise not_found
        if download:
            kind = "model" if repo_type == "model" else "dataset"
            if token is None:
                raise HttpError(
                    401,
                    f"Access to {kind} {repo_id} is restricted. You must have access to it and be"
                    " authenticated to access it. Please log in.",
                    "GatedRepo",
                )
            raise HttpError(
                403,
                f"Access to {kind} {repo_id} is restricted and you are not in the authorized list."
                f" Visit {url}/{repo_id} to ask for access.",
                "GatedRepo",
            )
    return repo


def commit_of(repo: Repo, revision: str) -> Commit:
    commit = repo.resolve(revision)
    if commit is None:
        raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
    return commit


def flag_getter(query: dict[str, list[str]]) -> Callable[[str], bool]:
    def flag(name: str) -> bool:
        values = query.get(name) or query.get(f"{name}[]") or []
        return bool(values) and values[0].lower() in ("1", "true", "yes")

    return flag


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end-exclusive) for a single `bytes=` range; (-1, -1) to ignore it; None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return (-1, -1)
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return (-1, -1)
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else None
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        return (-1, -1)
    if start >= size or end <= start:
        return None
    return (start, end)


def whoami_json(auth: str | None) -> dict[str, Any]:
    """Any bearer token is a valid read token of one user (the emulator has no accounts)."""
    auth = auth or ""
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        raise HttpError(401, "Invalid credentials in Authorization header")
    token_info = {"displayName": "hubemu", "role": "read"}
    return {
        "type": "user",
        "id": "0" * 24,
        "name": "hubemu-user",
        "fullname": "Hub Emulator User",
        "orgs": [],
        "auth": {"type": "access_token", "accessToken": token_info},
    }


def info_json(repo: Repo, commit: Commit, blobs: bool, sha: Any) -> dict[str, Any]:
    """`model_info`/`dataset_info`; `sha` is what to report as the commit (hostile modes lie)."""
    author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": author,
        "sha": sha,
        "lastModified": iso(commit.date),
        "createdAt": iso(repo.created),
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [commit.files[p].sibling_json(blobs) for p in sorted(commit.files)],
        "usedStorage": sum(e.size for e in commit.files.values()),
    }
    if repo.repo_type == "model":
        info["modelId"] = repo.repo_id
    else:
        info["description"] = ""
    return info


def tree_entries(commit: Commit, base: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
    dirs = commit.dirs()
    if base and base not in dirs:
        raise HttpError(404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
    prefix = f"{base}/" if base else ""
    items: list[dict[str, Any]] = []
    for d in sorted(dirs):
        if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
            items.append({"type": "directory", "oid": commit.tree_oid(d), "size": 0, "path": d})
    for p in sorted(commit.files):
        if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
            items.append(commit.files[p].tree_json())
    if recursive:
        items.sort(key=lambda x: str(x["path"]))  # else: like the Hub, folders first, then files
    if expand:
        for item in items:
            item["lastCommit"] = commit.last_commit_json()
    return items


def paths_info_json(commit: Commit, content_type: str, body: bytes) -> list[dict[str, Any]]:
    """`get_paths_info` from a form or JSON body."""
    paths: list[str]
    expand = False
    if "json" in content_type.lower():
        data = json.loads(body or b"{}")
        raw = data.get("paths", [])
        paths = [raw] if isinstance(raw, str) else list(raw)
        expand = bool(data.get("expand"))
    else:
        form = parse_qs(body.decode(), keep_blank_values=True)
        paths = form.get("paths", [])
        expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
    dirs = commit.dirs()
    out: list[dict[str, Any]] = []
    for raw_path in paths:
        p = raw_path.strip("/")
        item: dict[str, Any] | None = None
        if p in commit.files:
            item = commit.files[p].tree_json()
        elif p in dirs:
            item = {"type": "directory", "oid": commit.tree_oid(p), "size": 0, "path": p}
        if item is not None:
            if expand:
                item["lastCommit"] = commit.last_commit_json()
            out.append(item)
    return out


def refs_json(repo: Repo) -> dict[str, Any]:
    def refs(items: dict[str, str], kind: str) -> list[dict[str, str]]:
        return [
            {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(items.items())
        ]

    return {
        "branches": refs(repo.branches, "heads"),
        "converts": [],
        "tags": refs(repo.tags, "tags"),
        "pullRequests": [],
    }


def commits_json(repo: Repo, commit: Commit) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    current: Commit | None = commit
    while current is not None:
        out.append(
            {
                "id": current.sha,
                "title": current.message,
                "message": "",
                "authors": [{"user": "hubemu"}],
                "date": iso(current.date),
            }
        )
        current = repo.commits.get(current.parent) if current.parent else None
    return out
