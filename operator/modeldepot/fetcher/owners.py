"""Which ModelArtifact owns which artifact path of a storage root (docs/internals.md "On-disk layout").

```
ROOT/.modeldepot/owners.lock                  flock'ed while records are read or changed
ROOT/.modeldepot/owners/<sha256 of P>.json    {"path": P, "namespace", "name", "uid", "versions": [...]}
```
A fetch claims its path `P` before writing anything: refused (`PathConflictError`) when `P` is equal
to, inside, or contains the path of a record of another artifact (namespace/name). The same
namespace/name with another uid is the artifact re-created (e.g. after `deletionPolicy: Retain`) and
takes the record over. `versions` names every version directory (`<commit>`, `<commit>.1`) the
owner created under `store/P` and `staging/P`: only those are ever deleted or trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modeldepot import errors
from modeldepot.fetcher.safefs import Dir

log = logging.getLogger(__name__)

OWNERS_DIR = "owners"
LOCK_NAME = "owners.lock"
_VERSION_RE = re.compile(r"^[0-9a-fA-F]{7,64}(\.1)?$")


def is_version_name(name: str) -> bool:
    """`<commit>` or `<commit>.1`: the only names a record may list as versions."""
    return _VERSION_RE.match(name) is not None


@dataclass(frozen=True)
class Owner:
    """The ModelArtifact a fetch or cleanup works for (`--owner NAMESPACE/NAME/UID`)."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def parse(cls, text: str) -> Owner:
        parts = text.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise errors.InvalidSpecError(f"--owner must be NAMESPACE/NAME/UID, got {text!r}")
        return cls(*parts)

    def same_artifact(self, other: Owner) -> bool:
        """Same namespace and name (the uid changes when the artifact is re-created)."""
        return (self.namespace, self.name) == (other.namespace, other.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid})"


LOCAL_OWNER = Owner("", "local", "local")
"""A run without `--owner` (a laptop)."""


@dataclass
class OwnerRecord:
    path: str
    owner: Owner
    versions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "namespace": self.owner.namespace,
            "name": self.owner.name,
            "uid": self.owner.uid,
            "versions": list(self.versions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OwnerRecord:
        owner = Owner(str(data["namespace"]), str(data["name"]), str(data["uid"]))
        versions = [str(v) for v in data.get("versions", [])]
        if not all(is_version_name(v) for v in versions):
            raise ValueError(f"invalid version names in {versions!r}")
        return cls(path=str(data["path"]), owner=owner, versions=versions)


def record_name(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest() + ".json"


def related(a: str, b: str) -> bool:
    """`a` equals, contains or lies inside `b` (whole components: `n` contains `n/x`, not `nx`)."""
    pa, pb = PurePosixPath(a).parts, PurePosixPath(b).parts
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


class Registry:
    """The owner records of one storage root; `meta` is the open `ROOT/.modeldepot`."""

    def __init__(self, meta: Dir) -> None:
        self._meta = meta

    @contextlib.contextmanager
    def locked(self) -> Iterator[LockedRegistry]:
        """Exclusive access to the records (across processes and pods: `flock`)."""
        with self._meta.flock(LOCK_NAME), self._meta.open_dir(OWNERS_DIR, create=True) as owners:
            yield LockedRegistry(owners)


class LockedRegistry:
    """Reads and writes records; only valid inside `Registry.locked()`."""

    def __init__(self, owners: Dir) -> None:
        self._dir = owners

    def _read(self, file_name: str) -> OwnerRecord | None:
        try:
            record = OwnerRecord.from_dict(json.loads(self._dir.read_bytes(file_name)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, errors.PathConflictError) as exc:
            log.warning("ignoring unreadable owner record %s/%s: %s", self._dir.path, file_name, exc)
            return None
        if record_name(record.path) != file_name:
            log.warning("ignoring owner record %s/%s: it names another path", self._dir.path, file_name)
            return None
        return record

    def get(self, path: str) -> OwnerRecord | None:
        return self._read(record_name(path))

    def records(self) -> list[OwnerRecord]:
        found = []
        for name in sorted(self._dir.listdir()):
            if name.endswith(".json") and (record := self._read(name)) is not None:
                found.append(record)
        return found

    def conflict(self, path: str, owner: Owner) -> OwnerRecord | None:
        """A record of another artifact whose path is, contains or lies inside `path`."""
        for record in self.records():
            if related(record.path, path) and not record.owner.same_artifact(owner):
                return record
        return None

    def put(self, record: OwnerRecord) -> None:
        data = json.dumps(record.to_dict(), indent=2, ensure_ascii=False) + "\n"
        self._dir.write_atomic(record_name(record.path), data.encode("utf-8"), fsync=True)
        self._dir.fsync()

    def delete(self, path: str) -> None:
        self._dir.unlink(record_name(path), missing_ok=True)


def describe_conflict(path: str, record: OwnerRecord) -> str:
    """Why `path` cannot be used, for the PathConflict message."""
    owner = f"ModelArtifact {record.owner.namespace}/{record.owner.name}"
    if record.path == path:
        return f"path {path} already belongs to {owner}"
    if related(path, record.path) and len(PurePosixPath(path).parts) > len(PurePosixPath(record.path).parts):
        return f"path {path} lies inside {record.path}, which belongs to {owner}"
    return f"path {path} contains {record.path}, which belongs to {owner}"
