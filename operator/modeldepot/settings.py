"""Runtime settings read from the environment (pydantic-settings, prefix `MODELDEPOT_`).

`OperatorSettings` configures the kopf operator; `FetchSettings` tunes the fetcher (`modeldepot
fetch`). Command-line flags override the fetcher settings where both exist.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Settings of `modeldepot operator`."""

    model_config = SettingsConfigDict(env_prefix="MODELDEPOT_", extra="ignore")

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty: the whole cluster."""
    fetcher_image: str = "ghcr.io/modeldepot/modeldepot:0.1.0"
    """Image of fetch and cleanup Jobs unless a ModelArtifact sets spec.downloader.image."""
    fetcher_image_pull_policy: str | None = None
    fetcher_env: dict[str, str] = Field(default_factory=dict)
    """Extra `MODELDEPOT_*` settings passed to every fetcher (JSON object in the environment)."""
    metrics_port: int = 8080
    health_port: int = 8081
    resync_seconds: float = Field(default=30.0, gt=0)
    """Safety-net reconciliation interval (node changes, lost events)."""
    cancel_timeout_seconds: float = Field(default=60.0, ge=0)
    """How long deletion waits for download pods to stop before releasing pods of vanished nodes."""
    cleanup_timeout_seconds: float = Field(default=120.0, ge=0)
    """How long deletion waits for cleanup Jobs before giving up with a warning event."""
    failed_retry_seconds: float = Field(default=300.0, ge=0)
    """A download that failed for a transient reason (Hub unavailable, pod killed, timeout) is
    retried this long after it failed; 0 disables. Permanent failures wait for a spec change."""
    operator_namespace: str = "modeldepot-system"
    """The operator's own namespace (the chart sets it from the pod). Node-local fetch and cleanup
    Jobs run here, never in a tenant's namespace; it must allow privileged pods (hostPath)."""

    # Admin policy (docs/security.md): what a ModelArtifact author may ask for. The chart's
    # ValidatingAdmissionPolicy enforces the same rules at apply time.
    node_local_enabled: bool = True
    """Whether nodeLocal storage may be used at all."""
    node_local_namespaces: list[str] = Field(default_factory=list)
    """Namespaces whose artifacts may use nodeLocal storage; empty: every namespace."""
    node_local_roots: list[str] = Field(default_factory=lambda: ["/var/lib/modeldepot"])
    """Host directories nodeLocal paths must equal or lie beneath."""
    allowed_toleration_keys: list[str] = Field(default_factory=lambda: ["nvidia.com/gpu", "amd.com/gpu"])
    """Taint keys a nodeLocal artifact may tolerate; "*" allows any key, including a keyless
    `operator: Exists` that tolerates every taint."""
    allowed_endpoints: list[str] = Field(default_factory=lambda: ["https://huggingface.co"])
    """Hub endpoints (or mirrors) a spec may name, and so where tokens may be sent: an entry matches
    itself and URLs below it ("<entry>/..."); "*" allows any. A spec without endpoint uses the
    fetcher's default, which the admin chose."""
    allowed_images: list[str] = Field(default_factory=list)
    """Images `spec.downloader.image` may name (exact, or a prefix ending in "*"); empty: overriding
    the image is not allowed."""


class FetchSettings(BaseSettings):
    """Settings of `modeldepot fetch` (env `MODELDEPOT_<FIELD>`)."""

    model_config = SettingsConfigDict(env_prefix="MODELDEPOT_", extra="ignore")

    concurrency: int = Field(default=8, ge=1, le=64)
    """Files downloaded in parallel."""
    chunk_size: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    """Buffer size: bytes one stream gathers before a write, and the hasher's step. A large file
    holds about 6 x this (one batch filling, four queued for the hasher, one being hashed); several
    streams share it (each batches `chunk_size / streams`, at least 128 KiB). 1 MiB measured fastest
    on loopback (512 KiB, 2 MiB and 4 MiB were slower; 4 MiB also ~20 MB more peak RSS)."""
    streams: int = Field(default=8, ge=1, le=32)
    """Most ranged streams (connections) fetching one large file; 1: one stream per file. More than
    one is used only when they prove faster (a CDN's per-connection cap), never on a fast link where
    the CPU is the limit. 8 x 40 MB/s per connection measured 4.6x one stream; 16 only 5% more."""
    streams_min_size: int = Field(default=64 * 1024 * 1024, ge=0)
    """Files of at least this many bytes may use several streams; smaller ones use one (deciding
    takes ~0.3 s of probing, worth it from tens of MB at CDN speeds)."""
    part_size: int = Field(default=64 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest range one request of a multi-stream download asks for (streams take parts in order)."""
    report_interval: float = Field(default=2.0, gt=0)
    """Minimum seconds between two status progress reports."""
    log_interval: float = Field(default=5.0, gt=0)
    """Seconds between two plain progress lines when stderr is not a terminal."""
    termination_log: Path = Path("/dev/termination-log")
    """Where the JSON result is written (the pod's terminationMessagePath); ignored if unwritable."""
    storage_root: Path | None = None
    """Storage root holding `.modeldepot/`; default: `/data` if the target is under it, else its parent."""
    max_retries: int = Field(default=6, ge=0)
    """In-process retries of a transient error per file (and per Hub API call)."""
    backoff_base: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=20.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to open a connection to the Hub (metadata calls and downloads)."""
    read_timeout: float = Field(default=60.0, gt=0)
    """Seconds one socket read may wait for data (metadata calls and downloads)."""
    metadata_timeout: float = Field(default=120.0, gt=0)
    """Deadline of one metadata call (resolve, the whole file listing), its retries included;
    on expiry the fetch fails with HubUnavailable (transient)."""
    max_tree_pages: int = Field(default=1000, ge=1)
    """Most pages of a file listing; more (or a page repeated) is InvalidSpec (permanent)."""
    max_tree_entries: int = Field(default=1_000_000, ge=1)
    """Most entries (files and folders) of a file listing; more is InvalidSpec (permanent)."""
    min_bytes_per_second: float = Field(default=64 * 1024, ge=0)
    """Throughput floor of the downloads (0: none): a stream slower than its share of it
    (floor / streams running) over `stall_window` is cut and resumed by Range, as a retry."""
    stall_window: float = Field(default=30.0, gt=0)
    """Seconds over which a download stream's throughput is measured against the floor."""
    fsync: bool = True
    """fsync each verified file and the published directories (durable across node crashes)."""
    stop_grace: float = Field(default=5.0, ge=0)
    """Seconds to wait for in-flight transfers to notice a stop request before giving up on them."""
