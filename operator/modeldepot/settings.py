"""Runtime settings read from the environment (prefix `MODELDEPOT_`).

`OperatorSettings` (pydantic-settings) configures the kopf operator; `FetchSettings` tunes the
fetcher (`modeldepot fetch`) and is defined in `fetcher/settings.py` without pydantic, so that the
fetcher starts fast; it is re-exported here. Command-line flags override the fetcher settings
where both exist.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modeldepot.fetcher.settings import FetchSettings

__all__ = ["FetchSettings", "OperatorSettings"]


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
