"""What the Hub says about a repository, validated: the endpoint is untrusted input.

Pure (no I/O, no `huggingface_hub`): `hub.py` asks the Hub and hands each answer here. The endpoint
is named by a tenant (docs/internals.md, "Fetcher invocation"), so a commit id must be 40 hex
characters (and the very commit asked for, when one was), file names safe relative paths below
the model directory (`check_remote_path`), listed only once and never both as file and directory,
sizes integers in 0..`MAX_FILE_SIZE`, blob ids and LFS sha256 hex of the right length. Anything
else is a permanent `InvalidSpecError`. `RemoteFile` and `RepoSnapshot` are the validated result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from modeldepot import errors

REPO_TYPES = ("model", "dataset")

MAX_FILE_SIZE = 2**50
"""Largest file size the fetcher believes (1 PiB); a bigger one is a hostile or broken listing."""
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_PATH_DEPTH = 64

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clip(text: str, limit: int = 200) -> str:
    """`text`, cut to `limit` characters (a hostile answer must not flood a message)."""
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository at the resolved commit."""

    path: str
    size: int
    blob_id: str
    """git object id: sha1 of `b"blob <size>\\0" + content`."""
    sha256: str | None
    """LFS sha256 when the file is stored in LFS/Xet, else None (verify against `blob_id`)."""
    url: str

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class RepoSnapshot:
    """What to fetch: the repo, the commit the revision resolved to and the selected files."""

    repo_id: str
    repo_type: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def check_repo_type(repo_type: str) -> None:
    if repo_type not in REPO_TYPES:
        raise errors.InvalidSpecError(f"unsupported repo type {repo_type!r}; expected one of {REPO_TYPES}")


def check_commit(sha: object, what: str) -> str:
    """The commit id the Hub returned, lower-cased, if it is exactly 40 hex characters."""
    if not isinstance(sha, str) or not _HEX40.fullmatch(sha):
        raise errors.InvalidSpecError(f"the Hub returned an invalid commit id for {what}: {clip(repr(sha))}")
    return sha.lower()


def check_resolved(sha: object, repo_id: str, revision: str) -> str:
    """The commit `revision` resolved to: valid, and the very commit asked for if it is a full id."""
    commit = check_commit(sha, f"{repo_id}@{revision}")
    if _HEX40.fullmatch(revision) and commit != revision.lower():
        raise errors.InvalidSpecError(
            f"the Hub answered commit {commit} for {repo_id}@{revision}, which names another commit"
        )
    return commit


def check_remote_path(path: object) -> str:
    """A file path from the Hub, if it is safe to create below the model directory.

    Refused (permanent `InvalidSpecError`): not a string, empty, absolute, a `""`/`.`/`..`
    component, a first component `.modeldepot`, NUL or any other C0 control character or DEL, not
    encodable as UTF-8, a component over 255 UTF-8 bytes, over 4096 bytes or 64 components.
    """

    def refuse(why: str) -> errors.InvalidSpecError:
        return errors.InvalidSpecError(f"refusing unsafe file path from the Hub ({why}): {clip(repr(path))}")

    if not isinstance(path, str):
        raise refuse("not a string")
    if not path:
        raise refuse("empty")
    if _CONTROL.search(path):
        raise refuse("control character")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise refuse("not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise refuse(f"longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise refuse("absolute")
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise refuse(f"deeper than {MAX_PATH_DEPTH} components")
    if any(p in ("", ".", "..") for p in parts):
        raise refuse("empty, '.' or '..' component")
    if parts[0] == ".modeldepot":
        raise refuse("reserved .modeldepot directory")
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        raise refuse(f"a component longer than {MAX_NAME_BYTES} bytes")
    return path


def check_listed_file(
    path: object, size: object, blob_id: object, sha256: object
) -> tuple[str, int, str, str | None]:
    """(path, size, blob id, LFS sha256) of a listed file, each validated (hex lower-cased).

    `sha256` is None for a file not stored in LFS/Xet.
    """
    path = check_remote_path(path)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise errors.InvalidSpecError(
            f"the Hub listed an invalid size for {clip(repr(path))}: {clip(repr(size))}"
        )
    if not isinstance(blob_id, str) or not (_HEX40.fullmatch(blob_id) or _HEX64.fullmatch(blob_id)):
        raise errors.InvalidSpecError(
            f"the Hub listed an invalid blob id for {clip(repr(path))}: {clip(repr(blob_id))}"
        )
    if sha256 is not None and (not isinstance(sha256, str) or not _HEX64.fullmatch(sha256)):
        raise errors.InvalidSpecError(
            f"the Hub listed an invalid sha256 for {clip(repr(path))}: {clip(repr(sha256))}"
        )
    return path, size, blob_id.lower(), None if sha256 is None else sha256.lower()


def check_distinct(paths: Iterable[str]) -> None:
    """No path twice, and no file where another file needs a directory (`a` and `a/b`)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for path in paths:
        if path in files or path in dirs:
            raise errors.InvalidSpecError(f"the Hub lists {clip(repr(path))} twice or as file and directory")
        files.add(path)
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                raise errors.InvalidSpecError(
                    f"the Hub lists {clip(repr(parent))} both as a file and as a directory"
                )
            dirs.add(parent)


def snapshot_of(
    repo_id: str,
    repo_type: str,
    revision: str,
    commit: str,
    listed: Iterable[tuple[object, object, object, object]],
    url_of: Callable[[str], str],
) -> RepoSnapshot:
    """The snapshot of the selected files, each (path, size, blob id, LFS sha256) as listed.

    Every entry is validated and no path may repeat; files are sorted by the UTF-8 bytes of their
    path, and `url_of(path)` gives each its download URL.
    """
    checked = [check_listed_file(*entry) for entry in listed]
    check_distinct(p for p, *_ in checked)
    files = sorted(
        (
            RemoteFile(path=path, size=size, blob_id=blob_id, sha256=sha256, url=url_of(path))
            for path, size, blob_id, sha256 in checked
        ),
        key=lambda f: f.path.encode(),
    )
    return RepoSnapshot(
        repo_id=repo_id, repo_type=repo_type, revision=revision, commit=commit, files=tuple(files)
    )
