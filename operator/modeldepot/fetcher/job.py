"""The fetch Job's interface: what it is asked (`FetchRequest`) and what it answers (`FetchResult`).

The answer is written as the termination message (docs/internals.md "Fetcher invocation"):
compact UTF-8 JSON of at most `TERMINATION_MESSAGE_BYTES`, below the kubelet's 4096, with the
message and then the path shortened on character boundaries if needed, the other fields never.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldepot.fetcher.owners import LOCAL_OWNER, Owner
from modeldepot.vocabulary import Phase

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024  # characters of a failure message in status and the termination message
TERMINATION_MESSAGE_BYTES = 3800
"""Budget of the encoded termination message: the kubelet keeps at most 4096 bytes of it."""


@dataclass
class FetchRequest:
    """What `modeldepot fetch` was asked to do."""

    repo_id: str
    target: Path
    revision: str = "main"
    repo_type: str = "model"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    endpoint: str | None = None
    concurrency: int | None = None
    generation: int | None = None
    root: Path | None = None
    owner: Owner = LOCAL_OWNER
    """The ModelArtifact this fetch works for (`--owner`): only its own paths and versions are used."""
    node_local: bool = False
    """The root is a node-local directory only fetchers write (`--node`): the store trusts the
    blobs it froze there without re-hashing them (docs/security.md "The content-addressed store")."""


@dataclass
class FetchResult:
    """The termination message (docs/internals.md)."""

    phase: Phase
    path: str
    reason: str = ""
    message: str = ""
    commit: str = ""
    digest: str = ""
    total_bytes: int = 0
    file_count: int = 0
    downloaded_bytes: int = 0
    """Bytes transferred from the Hub by this run."""
    reused_files: int = 0
    """Files taken from the published copy or the root's store instead of being transferred."""
    reused_bytes: int = 0
    """Bytes of `reused_files`."""
    adopted_bytes: int = 0
    """Bytes verified in place in a directory the artifact took under management (adoption)."""
    model: dict[str, Any] = field(default_factory=dict)
    """What the model is (`modelinfo.ModelInfo.to_dict`): format, precision, parameters, classes."""

    def to_dict(self) -> dict[str, Any]:
        """The termination message as a dict; encoded it fits `TERMINATION_MESSAGE_BYTES`."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data

    def _fields(self, message: str, path: str) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "reason": self.reason,
            "message": message,
            "commit": self.commit,
            "digest": self.digest,
            "totalBytes": self.total_bytes,
            "fileCount": self.file_count,
            "transferredBytes": self.downloaded_bytes,
            "reusedBytes": self.reused_bytes,
            "adoptedBytes": self.adopted_bytes,
            **({"model": self.model} if self.model else {}),
            "path": path,
        }

    def to_json(self, limit: int = TERMINATION_MESSAGE_BYTES) -> str:
        """Compact JSON of at most `limit` UTF-8 bytes.

        phase, reason, commit, digest, totalBytes, fileCount, the byte counts and the model are always complete; the message
        (at most `MAX_MESSAGE` characters) and then the path are shortened, on character
        boundaries and marked with "…", only as far as needed.
        """
        message = _printable(self.message[:MAX_MESSAGE] + ("…" if len(self.message) > MAX_MESSAGE else ""))
        path = _printable(self.path)
        fixed = _json_bytes(self._fields("", ""))
        room = max(0, limit - fixed)
        m, p = _json_bytes(message) - 2, _json_bytes(path) - 2
        if m + p > room:
            # the path identifies the result: it keeps at least half the room, the message the rest
            p_room = min(p, max(room // 2, room - m))
            path = _fit(path, p_room)
            message = _fit(message, room - (_json_bytes(path) - 2))
        return json.dumps(self._fields(message, path), ensure_ascii=False, separators=(",", ":"))


def _printable(text: str) -> str:
    """`text` as valid UTF-8 text (lone surrogates, e.g. of undecodable file names, escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _fit(text: str, room: int) -> str:
    """The longest prefix of `text` (plus "…" if cut) whose JSON string body has <= `room` bytes."""
    if _json_bytes(text) - 2 <= room:
        return text
    lo, hi = 0, len(text)  # binary search on characters: never splits a UTF-8 sequence
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_bytes(text[:mid] + "…") - 2 <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…" if _json_bytes(text[:lo] + "…") - 2 <= room else ""


def write_termination_message(path: Path, result: FetchResult) -> None:
    """Best effort: outside a pod the path usually does not exist or is not writable.

    The kubelet keeps at most 4096 bytes of it (more is cut, and a cut JSON loses the result), so
    `FetchResult.to_json` keeps it within `TERMINATION_MESSAGE_BYTES`.
    """
    try:
        with path.open("wb") as fh:
            fh.write(result.to_json().encode("utf-8"))
    except OSError as exc:
        log.debug("termination message not written to %s: %s", path, exc)
