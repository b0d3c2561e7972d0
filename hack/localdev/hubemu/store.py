"""The emulated Hub's repos: commits, branches, tags and access settings.

Repo content and git metadata mirror the Hub: each commit has a deterministic 40-hex sha (sha1 of
repo, parent, message and the file manifest); branches (`main` at least) and tags point at
commits and can be moved; older commits stay addressable by sha. Per file (see `content.Entry`):
`size`, `oid` (the git blob id: sha1 of `b"blob {size}\\0" + content`; for LFS files, like on the
Hub, the blob id of the LFS *pointer* file) and, for LFS files, `lfs: {oid: sha256, size,
pointerSize}`.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from localdev.hubemu.content import ContentMaker, Entry, FileSpec

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_REPO_KEYWORDS = frozenset({"revision", "tree", "paths-info", "refs", "commits", "resolve"})

RepoKey = tuple[str, str]


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def repo_key(repo_type: str, repo_id: str) -> RepoKey:
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type must be 'model' or 'dataset', not {repo_type!r}")
    return (repo_type, repo_id)


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    date: datetime
    files: dict[str, Entry]

    def dirs(self) -> set[str]:
        out: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def tree_oid(self, directory: str) -> str:
        prefix = directory + "/"
        h = hashlib.sha1(f"tree\0{directory}\0".encode())
        for path in sorted(p for p in self.files if p.startswith(prefix)):
            h.update(f"{path}\0{self.files[path].oid}\n".encode())
        return h.hexdigest()

    def last_commit_json(self) -> dict[str, Any]:
        return {"id": self.sha, "title": self.message, "date": iso(self.date)}


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    gated: bool = False
    private: bool = False
    created: datetime = EPOCH

    @property
    def key(self) -> RepoKey:
        return (self.repo_type, self.repo_id)

    def resolve(self, revision: str) -> Commit | None:
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                return self.commits[refs[revision[len(prefix) :]]]
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        return self.commits.get(revision.lower()) if _HEX40.match(revision.lower()) else None

    def set_access(self, token: str, private: bool) -> None:
        self.token, self.private, self.gated = token, private, not private


def clean_path(path: str) -> str:
    clean = path.replace("\\", "/").strip("/")
    if not clean or any(part in ("", ".", "..") for part in clean.split("/")):
        raise ValueError(f"bad repo path {path!r}")
    return clean


class RepoStore:
    """Thread-safe set of repos; the request handler reads it, tests write it."""

    def __init__(self, content: ContentMaker) -> None:
        self.content = content
        self._lock = threading.Lock()
        self._repos: dict[RepoKey, Repo] = {}

    def add_repo_from_dir(
        self,
        repo_id: str,
        path: str | Path,
        *,
        repo_type: str,
        revision: str,
        token: str | None,
        message: str | None,
    ) -> str:
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"not a directory: {root}")
        files: dict[str, FileSpec] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in (".git", ".cache"))
            for name in filenames:
                full = Path(dirpath) / name
                files[full.relative_to(root).as_posix()] = full
        return self.add_repo_from_files(
            repo_id,
            files,
            repo_type=repo_type,
            revision=revision,
            token=token,
            private=False,
            message=message or f"Upload {root.name}",
            check_paths=True,
        )

    def add_repo_from_files(
        self,
        repo_id: str,
        files: Mapping[str, FileSpec],
        *,
        repo_type: str,
        revision: str,
        token: str | None,
        private: bool,
        message: str | None,
        check_paths: bool,
    ) -> str:
        key = repo_key(repo_type, repo_id)
        clean = clean_path if check_paths else (lambda p: p)
        entries = {clean(p): self.content.make_entry(clean(p), spec) for p, spec in files.items()}
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                repo = Repo(repo_type, repo_id)
                self._repos[key] = repo
            if token is not None:
                repo.set_access(token, private)
            parent = repo.branches.get(revision)
            msg = message or ("Initial commit" if parent is None else f"Update {revision}")
            h = hashlib.sha1(f"{repo_type}\0{repo_id}\0{parent or ''}\0{msg}\0".encode())
            for path in sorted(entries):
                h.update(f"{path}\0{entries[path].oid}\n".encode())
            sha = h.hexdigest()
            if sha not in repo.commits:
                date = EPOCH + timedelta(minutes=len(repo.commits))
                repo.commits[sha] = Commit(sha, parent, msg, date, entries)
            repo.branches[revision] = sha
            return sha

    def set_ref(self, repo_id: str, repo_type: str, name: str, revision: str, *, tags: bool) -> str:
        with self._lock:
            repo = self._get(repo_id, repo_type)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"unknown revision {revision!r} of {repo_id}")
            (repo.tags if tags else repo.branches)[name] = commit.sha
            return commit.sha

    def set_gated(self, repo_id: str, token: str | None, *, repo_type: str, private: bool) -> None:
        with self._lock:
            repo = self._get(repo_id, repo_type)
            if token is None:
                repo.token, repo.gated, repo.private = None, False, False
            else:
                repo.set_access(token, private)

    def delete_repo(self, repo_id: str, *, repo_type: str) -> None:
        with self._lock:
            self._repos.pop(repo_key(repo_type, repo_id), None)

    def repo_files(self, repo_id: str, revision: str, *, repo_type: str) -> dict[str, Any]:
        with self._lock:
            commit = self._get(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return {
                p: {"size": e.size, "oid": e.oid, "sha256": e.sha256, "lfs": e.lfs}
                for p, e in sorted(commit.files.items())
            }

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def commit(self, repo_type: str, repo_id: str, sha: str) -> Commit | None:
        """A commit by its exact sha (what a CDN URL names), or None."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            return repo.commits.get(sha) if repo else None

    def find_repo_id(self, repo_type: str, segs: list[str]) -> tuple[str, list[str]]:
        """Split URL segments into a repo id (`name` or `ns/name`) and the rest."""
        with self._lock:
            if len(segs) >= 2 and (repo_type, f"{segs[0]}/{segs[1]}") in self._repos:
                return f"{segs[0]}/{segs[1]}", segs[2:]
            if segs and (repo_type, segs[0]) in self._repos:
                return segs[0], segs[1:]
        if len(segs) >= 2 and segs[1] not in _REPO_KEYWORDS:
            return f"{segs[0]}/{segs[1]}", segs[2:]
        return (segs[0] if segs else ""), segs[1:]

    def _get(self, repo_id: str, repo_type: str) -> Repo:
        repo = self._repos.get(repo_key(repo_type, repo_id))
        if repo is None:
            raise KeyError(f"unknown {repo_type} repo {repo_id!r}")
        return repo
