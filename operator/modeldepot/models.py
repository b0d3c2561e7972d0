"""Pydantic models of the ModelArtifact resource (spec, status, Job results) and pure formatting helpers.

This module is the Python twin of ``crds/modelartifacts.yaml``: field names (camelCase aliases), defaults
and bounds are identical to the CRD's, and ``tests/unit/test_crd.py`` checks that they stay so. It also
holds the names fixed by docs/internals.md, and the one place status writes are serialized: the
operator's merge patch (`status_merge_patch`), the entries every writer applies (`node_apply`), the
fetcher's progress (`progress_merge_patch`). Pure: no I/O, no Kubernetes client.

Why one module of ~400 lines: it is the CRD's twin field for field (test_crd.py compares the two as a
whole), and a status field and the way it is written change together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .vocabulary import Phase

GROUP = "modeldepot.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelArtifact"
PLURAL = "modelartifacts"
SINGULAR = "modelartifact"
SHORT_NAME = "ma"
FINALIZER = "modeldepot.dev/cleanup"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_ARTIFACT = "modeldepot.dev/artifact"
LABEL_GENERATION = "modeldepot.dev/generation"
LABEL_NODE = "modeldepot.dev/node"
MANAGED_BY = "modeldepot"
FETCHER_APP = "modeldepot-fetcher"
CLEANUP_APP = "modeldepot-cleanup"

DEFAULT_NODE_ROOT = "/var/lib/modeldepot"
META_DIR_NAME = ".modeldepot"
LABEL_ARTIFACT_NAMESPACE = "modeldepot.dev/artifact-namespace"

AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
ConditionStatus = Literal["True", "False", "Unknown"]


class _Model(BaseModel):
    """Base: camelCase aliases, accepts snake_case too, ignores fields a newer CRD may add."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def to_api(self) -> dict[str, Any]:
        """The object as the Kubernetes API stores it: camelCase, fields without a value left out
        (the CRD has no nullable field)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------------------------- spec


class SecretKeyRef(_Model):
    """A key of a Secret in the artifact's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    key: Annotated[str, Field(min_length=1, max_length=253)] = "token"


class HuggingFaceSource(_Model):
    """A repository on the Hugging Face Hub (or a mirror)."""

    repo: Annotated[str, Field(min_length=3, max_length=193)]
    repo_type: Annotated[Literal["model", "dataset"], Field(alias="type")] = "model"
    revision: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")] = "main"
    include: list[Annotated[str, Field(min_length=1)]] | None = None
    exclude: list[Annotated[str, Field(min_length=1)]] | None = None
    token_secret_ref: SecretKeyRef | None = None
    endpoint: Annotated[str, Field(pattern=r"^https?://")] | None = None


class Source(_Model):
    """Where the files come from; exactly one kind is set."""

    hugging_face: HuggingFaceSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if self.hugging_face is None:
            raise ValueError("exactly one source kind must be set (huggingFace)")
        return self


def _default_access_modes() -> list[AccessMode]:
    return ["ReadWriteOnce"]


class ClaimTemplate(_Model):
    """What the operator needs to create (and own) the claim."""

    storage_class_name: str | None = None
    size: int | str
    access_modes: list[AccessMode] = Field(default_factory=_default_access_modes)


class PersistentVolumeClaimStorage(_Model):
    """Files go into a directory of a PersistentVolumeClaim."""

    claim_name: Annotated[str, Field(min_length=1, max_length=253)]
    path: str | None = None
    create: ClaimTemplate | None = None


class Toleration(_Model):
    """The core/v1 Toleration fields."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class NodeLocalStorage(_Model):
    """Files go onto the local disk of every matching node."""

    path: str = DEFAULT_NODE_ROOT
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None


class Storage(_Model):
    """Where the files go; exactly one kind is set."""

    persistent_volume_claim: PersistentVolumeClaimStorage | None = None
    node_local: NodeLocalStorage | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.persistent_volume_claim is None) == (self.node_local is None):
            raise ValueError("exactly one of persistentVolumeClaim, nodeLocal must be set")
        return self


class ResourceRequirements(_Model):
    """Compute resources of the download container (core/v1 requests/limits)."""

    requests: dict[str, int | str] | None = None
    limits: dict[str, int | str] | None = None


class Downloader(_Model):
    """Knobs of the download Jobs."""

    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: ResourceRequirements | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    streams: Annotated[int | None, Field(ge=1, le=32)] = None
    streams_min_size: Annotated[int | None, Field(ge=0)] = None
    chunk_size: Annotated[int | None, Field(ge=64 * 1024, le=64 * 1024 * 1024)] = None
    backoff_limit: Annotated[int, Field(ge=0, le=20)] = 4
    active_deadline_seconds: Annotated[int, Field(ge=60)] = 21600


class ModelArtifactSpec(_Model):
    """The desired state of a ModelArtifact."""

    source: Source
    storage: Storage
    deletion_policy: Literal["Delete", "Retain"] = "Delete"
    suspend: bool = False
    downloader: Downloader = Field(default_factory=Downloader)


# ------------------------------------------------------------------------------------------- status


class Condition(_Model):
    """A Kubernetes API convention condition."""

    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class RetryStatus(_Model):
    """A retry the download waits for (``progress.retry``): present from the retry's start until it
    succeeds."""

    reason: str
    attempt: int
    max_attempts: int
    next_attempt_at: str
    message: str


class Progress(_Model):
    """Live download progress, as the fetcher patches it (and the operator aggregates it)."""

    phase: Phase | None = None
    percent: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    files_done: int | None = None
    files_total: int | None = None
    bytes_per_second: float | None = None
    eta_seconds: float | None = None
    summary: str | None = None
    resolved_revision: str | None = None
    observed_generation: int | None = None
    updated_at: str | None = None
    retry: RetryStatus | None = None
    bytes_reused: int | None = None
    bytes_adopted: int | None = None


class NodeStatus(Progress):
    """One entry of ``status.nodes`` (nodeLocal): a node's progress plus its verified digest or
    failure. It has one writer identity, the node's field manager (`node_field_manager`): the fetch
    pod on that node while it downloads, the operator otherwise."""

    name: str
    digest: str | None = None
    reason: str | None = None
    message: str | None = None


class FleetStatus(_Model):
    """``status.fleet`` (nodeLocal): how many target nodes are in each phase, and how many of the
    nodes that need attention `status.nodes` lists (the rest are only counted here). Which nodes
    hold a verified copy is recorded outside the artifact (`records`, docs/internals.md)."""

    matched: int | None = None
    ready: int | None = None
    downloading: int | None = None
    pending: int | None = None
    queued: int | None = None
    failed: int | None = None
    suspended: int | None = None
    listed: int | None = None
    unlisted: int | None = None
    records: str | None = None


class FileClassCount(_Model):
    """Files of one class (weights, config, tokenizer, other) and their bytes."""

    files: int | None = None
    bytes: int | None = None


class ModelSummary(_Model):
    """``status.model``: what the verified files are (the fetcher's `modelinfo`; display only)."""

    format: str | None = None
    formats: list[str] = Field(default_factory=list)
    precision: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    files: dict[str, FileClassCount] = Field(default_factory=dict)
    summary: str | None = None


class ModelArtifactStatus(_Model):
    """The observed state of a ModelArtifact."""

    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    progress: Progress | None = None
    nodes: list[NodeStatus] = Field(default_factory=list)
    resolved_revision: str | None = None
    revision: str | None = None
    digest: str | None = None
    total_bytes: int | None = None
    size: str | None = None
    file_count: int | None = None
    path: str | None = None
    ready_nodes: int | None = None
    target_nodes: int | None = None
    fleet: FleetStatus | None = None
    model: ModelSummary | None = None

    @field_validator("nodes", mode="before")
    @classmethod
    def _legacy_node_map(cls, value: Any) -> Any:
        """status.nodes was a map keyed by node name before it became a list of named entries;
        such a status reads as the same entries (the reconciler then removes the map)."""
        if isinstance(value, Mapping):
            return [{**dict(entry), "name": node} for node, entry in value.items()]
        return value

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, if present."""
        return next((c for c in self.conditions if c.type == type_), None)

    def node(self, name: str) -> NodeStatus | None:
        """The status.nodes entry of that node, if present."""
        return next((n for n in self.nodes if n.name == name), None)


# ------------------------------------------------------------------------------ writing the status
# Two writers share the status subresource. The operator merge-patches everything but `nodes`;
# each `nodes` entry is server-side applied by its node's field manager. A list in a JSON merge
# patch replaces the whole list, so a merge patch naming `nodes` would erase the entries that fetch
# pods on other nodes apply concurrently; an apply merges by the list-map key `name` instead.

NODE_FIELD_MANAGER_PREFIX = "modeldepot-node/"
_FIELD_MANAGER_MAX_LENGTH = 128  # the API server's limit; node names may be up to 253


def status_merge_patch(status: ModelArtifactStatus) -> dict[str, Any]:
    """The operator's status write as the body of a JSON merge patch of ``status``: camelCase; a
    field set to None is removed, a field never set is left as it is (in `progress`, the numbers a
    fetcher keeps current). Never `nodes` (see above)."""
    if "nodes" in status.model_fields_set:
        raise ValueError("status.nodes is applied per node (node_apply), never merge-patched")
    return status.model_dump(by_alias=True, exclude_unset=True, mode="json")


_COME_AND_GO = ("eta_seconds", "retry")
"""Progress fields a fetcher's report may have one time and not the next."""


def progress_merge_patch(progress: Progress) -> dict[str, Any]:
    """A fetcher's write of ``status.progress`` (claim storage) as the body of a JSON merge patch:
    its fields, and null for those of `_COME_AND_GO` it has no value for, so a retry that succeeded
    (or an ETA no longer known) is removed rather than left as the last report had it."""
    return progress.to_api() | {
        Progress.model_fields[name].alias or name: None
        for name in _COME_AND_GO
        if getattr(progress, name) is None
    }


def node_field_manager(node: str) -> str:
    """The field manager owning ``status.nodes[name=node]``: ``modeldepot-node/<node>``, with a long
    node name shortened to fit (a prefix and a hash of the whole name)."""
    manager = NODE_FIELD_MANAGER_PREFIX + node
    if len(manager) <= _FIELD_MANAGER_MAX_LENGTH:
        return manager
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    return f"{manager[: _FIELD_MANAGER_MAX_LENGTH - 9]}-{digest}"


def node_apply(namespace: str, name: str, entry: NodeStatus | None) -> dict[str, Any]:
    """The server-side apply configuration of one node's entry for `node_field_manager`: the whole
    entry as stored (a field the manager set before and omits now is removed), or, for None, no
    entry at all, which removes that node's entry and nothing else."""
    status: dict[str, Any] = {"nodes": [entry.to_api()]} if entry is not None else {}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    }


# ----------------------------------------------------------------------------------------- resource


class ObjectMeta(_Model):
    """The metadata fields the operator uses."""

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    labels: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None
    creation_timestamp: str | None = None


class ModelArtifact(_Model):
    """A whole ModelArtifact object."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: ModelArtifactSpec
    status: ModelArtifactStatus = Field(default_factory=ModelArtifactStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ModelArtifact:
        """Parse a kopf body (or any mapping of the object). Raises pydantic.ValidationError."""
        return cls.model_validate(_plain(body))

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def generation(self) -> int:
        return self.metadata.generation

    @property
    def hugging_face(self) -> HuggingFaceSource:
        """The Hub source (the only kind today; the validator guarantees it is set)."""
        hf = self.spec.source.hugging_face
        assert hf is not None
        return hf

    @property
    def is_node_local(self) -> bool:
        return self.spec.storage.node_local is not None

    @property
    def published_path(self) -> str:
        """``P`` of docs/internals.md: the path of the files relative to the storage root."""
        pvc = self.spec.storage.persistent_volume_claim
        if pvc is not None:
            return pvc.path or self.name
        return f"{self.namespace}/{self.name}"

    @property
    def display_path(self) -> str:
        """Where the files are, for humans: ``pvc/<claim>:<P>`` or ``node:<root>/<P>``."""
        pvc = self.spec.storage.persistent_volume_claim
        if pvc is not None:
            return f"pvc/{pvc.claim_name}:{self.published_path}"
        local = self.spec.storage.node_local
        assert local is not None
        return f"node:{local.path.rstrip('/')}/{self.published_path}"


def _plain(obj: Any) -> Any:
    """Deep-copy kopf's mapping views into plain dicts and lists that pydantic accepts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def validation_message(exc: ValidationError) -> str:
    """A one-line, human message for a spec the CRD schema let through but the models reject."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- Job results


class JobResult(_Model):
    """The fetcher's JSON result in the pod's termination message (docs/internals.md)."""

    phase: Literal[Phase.READY, Phase.FAILED]
    reason: str | None = None
    message: str | None = None
    commit: str | None = None
    digest: str | None = None
    total_bytes: int | None = None
    file_count: int | None = None
    path: str | None = None
    transferred_bytes: int | None = None
    reused_bytes: int | None = None
    adopted_bytes: int | None = None
    model: ModelSummary | None = None


def parse_termination_message(text: str | None) -> JobResult | None:
    """Parse a termination message; None when it is absent or not our JSON (e.g. a log tail)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return JobResult.model_validate(data)
    except ValidationError:
        return None
