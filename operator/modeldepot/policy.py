"""Admin policy and path ownership: what a ModelArtifact may ask for, decided before any Job exists.

The cluster admin is trusted (Helm values → `OperatorSettings`); ModelArtifact authors are not. The
chart's ValidatingAdmissionPolicy enforces `violations()`'s rules at apply time; the operator checks
them again before every Job it creates, so an object admitted under an older policy (or with the
admission policy switched off) still gets no Job (reason `PolicyViolation`).

`conflicting_claim()` keeps artifacts out of each other's directories: two artifacts on one claim,
or on node-local roots, must not write to equal or nested paths; the artifact created later gets
`PathConflict` and never a Job. The fetcher's owner records enforce the same on disk.

Pure: no I/O.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from .models import META_DIR_NAME, ModelArtifact
from .settings import OperatorSettings


@dataclass(frozen=True)
class Policy:
    """The admin's rules for ModelArtifact authors (docs/security.md)."""

    node_local_enabled: bool = True
    node_local_namespaces: tuple[str, ...] = ()
    node_local_roots: tuple[str, ...] = ("/var/lib/modeldepot",)
    allowed_toleration_keys: tuple[str, ...] = ("nvidia.com/gpu", "amd.com/gpu")
    allowed_endpoints: tuple[str, ...] = ("https://huggingface.co",)
    allowed_images: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> Policy:
        return cls(
            node_local_enabled=settings.node_local_enabled,
            node_local_namespaces=tuple(settings.node_local_namespaces),
            node_local_roots=tuple(settings.node_local_roots),
            allowed_toleration_keys=tuple(settings.allowed_toleration_keys),
            allowed_endpoints=tuple(settings.allowed_endpoints),
            allowed_images=tuple(settings.allowed_images),
        )


def path_beneath(path: str, root: str) -> bool:
    """Whether the absolute `path` equals `root` or lies below it (string form, both normalized)."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def endpoint_allowed(url: str, allowed: Iterable[str]) -> bool:
    """`url` is an allowed entry or below it (`<entry>/...`); `*` allows any.

    Prefix matching includes the `/`, so `https://huggingface.co.evil.example` or
    `https://huggingface.co@evil.example` never match `https://huggingface.co`.
    """
    url = url.rstrip("/")
    for entry in allowed:
        if entry == "*":
            return True
        entry = entry.rstrip("/")
        if url == entry or url.startswith(entry + "/"):
            return True
    return False


def image_allowed(image: str, allowed: Iterable[str]) -> bool:
    """`image` equals an entry, or starts with an entry ending in `*` (without the `*`)."""
    for entry in allowed:
        if entry.endswith("*") and image.startswith(entry[:-1]):
            return True
        if image == entry:
            return True
    return False


def violations(artifact: ModelArtifact, policy: Policy) -> list[str]:
    """Human messages, one per rule the spec breaks, each naming the Helm value that governs it."""
    found: list[str] = []
    hf = artifact.hugging_face
    if hf.endpoint is not None and not endpoint_allowed(hf.endpoint, policy.allowed_endpoints):
        found.append(
            f"endpoint {hf.endpoint!r} is not allowed (policy.allowedEndpoints: "
            f"{list(policy.allowed_endpoints)})"
        )
    image = artifact.spec.downloader.image
    if image is not None and not image_allowed(image, policy.allowed_images):
        allowed = list(policy.allowed_images) or "none: overriding the image is off"
        found.append(f"downloader image {image!r} is not allowed (policy.allowedImages: {allowed})")
    local = artifact.spec.storage.node_local
    if local is None:
        return found
    if not policy.node_local_enabled:
        found.append("nodeLocal storage is disabled (policy.nodeLocal.enabled: false)")
    elif policy.node_local_namespaces and artifact.namespace not in policy.node_local_namespaces:
        found.append(
            f"nodeLocal storage is not allowed in namespace {artifact.namespace} "
            f"(policy.nodeLocal.namespaces: {list(policy.node_local_namespaces)})"
        )
    if not any(path_beneath(local.path, root) for root in policy.node_local_roots):
        found.append(
            f"nodeLocal path {local.path!r} is not one of, or beneath, policy.nodeLocal.roots "
            f"{list(policy.node_local_roots)}"
        )
    keys = set(policy.allowed_toleration_keys)
    for toleration in local.tolerations or ():
        if "*" in keys:
            break
        if not toleration.key:
            found.append(
                "a toleration without a key tolerates every taint (control-plane nodes included); "
                'policy.nodeLocal.tolerationKeys must contain "*" to allow it'
            )
        elif toleration.key not in keys:
            found.append(
                f"toleration key {toleration.key!r} is not allowed (policy.nodeLocal.tolerationKeys: "
                f"{sorted(keys)})"
            )
    return found


# ---------------------------------------------------------------------------------- path ownership


@dataclass(frozen=True)
class PathClaim:
    """The directories one artifact writes on one storage, for conflict checks between artifacts.

    `storage` names what is shared: `pvc/<namespace>/<claim>`, or `node` for every node-local
    root (roots may nest). `paths` are absolute-style paths on that storage; `shared` paths (a
    root's metadata directory) may be equal between artifacts but must not nest in anything else.
    """

    namespace: str
    name: str
    uid: str
    created: str
    storage: str
    paths: tuple[str, ...]
    shared: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}"


def path_claim(artifact: ModelArtifact) -> PathClaim:
    """What `artifact` writes: its published path, and for node-local its root's metadata too."""
    meta = artifact.metadata
    pvc = artifact.spec.storage.persistent_volume_claim
    if pvc is not None:
        return PathClaim(
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            created=meta.creation_timestamp or "",
            storage=f"pvc/{meta.namespace}/{pvc.claim_name}",
            paths=("/" + artifact.published_path,),
        )
    local = artifact.spec.storage.node_local
    assert local is not None
    root = posixpath.normpath(local.path)
    return PathClaim(
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        created=meta.creation_timestamp or "",
        storage="node",
        paths=(posixpath.join(root, artifact.published_path),),
        shared=(posixpath.join(root, META_DIR_NAME),),
    )


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _overlap(a: PathClaim, b: PathClaim) -> bool:
    if a.storage != b.storage:
        return False
    for pa in a.paths:
        if any(_nested(pa, pb) for pb in b.paths + b.shared):
            return True
    for sa in a.shared:
        if any(_nested(sa, pb) for pb in b.paths):
            return True
        if any(sa != sb and _nested(sa, sb) for sb in b.shared):
            return True
    return False


def _older(a: PathClaim, b: PathClaim) -> bool:
    return (a.created, a.uid) < (b.created, b.uid)


def conflicting_claim(mine: PathClaim, others: Iterable[PathClaim]) -> PathClaim | None:
    """The older artifact whose paths are equal to or nest with `mine`'s, if any.

    The artifact created first keeps its path (ties broken by uid), so exactly one of two
    conflicting artifacts is refused, whatever order the operator sees them in.
    """
    for other in sorted(others, key=lambda c: (c.created, c.uid)):
        if other.uid == mine.uid or (other.namespace, other.name) == (mine.namespace, mine.name):
            continue
        if _overlap(mine, other) and _older(other, mine):
            return other
    return None


def conflict_message(mine: PathClaim, other: PathClaim) -> str:
    where = mine.storage.replace("pvc/", "claim ", 1) if mine.storage != "node" else "node-local storage"
    return (
        f"path {mine.paths[0]} on {where} is, contains or lies inside the path {other.paths[0]} of "
        f"ModelArtifact {other.display} (created first); choose another path"
    )
