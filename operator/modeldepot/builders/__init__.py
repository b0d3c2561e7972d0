"""Pure manifest builders: the Kubernetes objects the operator creates, as plain dicts.

`names` (names, labels, selectors, ownership), `pods` (containers, volumes, security, the fetcher
CLI), `jobs` (fetch and cleanup Jobs), `identity` (each artifact's fetcher ServiceAccount, Role,
RoleBinding and token copy; the claim it may create). No I/O: `kube.py` applies what these
return. Where Jobs run and why is in docs/security.md.
"""

from .identity import claim, fetcher_role, fetcher_role_binding, fetcher_service_account, token_secret_copy
from .jobs import (
    CLEANUP_BACKOFF_LIMIT,
    CLEANUP_DEADLINE_SECONDS,
    CLEANUP_TTL_SECONDS,
    PERMANENT_EXIT_CODE,
    cleanup_job,
    fetch_job,
)
from .names import (
    ANNOTATION_ARTIFACT,
    ANNOTATION_ARTIFACT_NAMESPACE,
    ANNOTATION_NODE,
    DEFAULT_OPERATOR_NAMESPACE,
    MAX_NAME,
    JobDefaults,
    artifact_selector,
    cleanup_job_name,
    common_labels,
    fetch_job_name,
    fetcher_identity_name,
    job_namespace,
    label_value,
    owner_reference,
)
from .pods import (
    CLEANUP_CONTAINER,
    COPIED_TOKEN_KEY,
    DATA_MOUNT,
    DEFAULT_RESOURCES,
    FETCH_CONTAINER,
    PREPARE_CONTAINER,
    RUN_AS,
    TERMINATION_LOG,
    TOKEN_DIR,
    TOKEN_FILE,
    data_path,
    fetch_args,
    owner_arg,
)

__all__ = [
    "ANNOTATION_ARTIFACT",
    "ANNOTATION_ARTIFACT_NAMESPACE",
    "ANNOTATION_NODE",
    "CLEANUP_BACKOFF_LIMIT",
    "CLEANUP_CONTAINER",
    "CLEANUP_DEADLINE_SECONDS",
    "CLEANUP_TTL_SECONDS",
    "COPIED_TOKEN_KEY",
    "DATA_MOUNT",
    "DEFAULT_OPERATOR_NAMESPACE",
    "DEFAULT_RESOURCES",
    "FETCH_CONTAINER",
    "MAX_NAME",
    "PERMANENT_EXIT_CODE",
    "PREPARE_CONTAINER",
    "RUN_AS",
    "TERMINATION_LOG",
    "TOKEN_DIR",
    "TOKEN_FILE",
    "JobDefaults",
    "artifact_selector",
    "claim",
    "cleanup_job",
    "cleanup_job_name",
    "common_labels",
    "data_path",
    "fetch_args",
    "fetch_job",
    "fetch_job_name",
    "fetcher_identity_name",
    "fetcher_role",
    "fetcher_role_binding",
    "fetcher_service_account",
    "job_namespace",
    "label_value",
    "owner_arg",
    "owner_reference",
    "token_secret_copy",
]
