"""Pure reconcile decisions, one file per step: `observe` (Jobs and pod results as inputs), `nodes`
(which nodes are targets, retiring the rest), `plan` (the pipeline that decides what to do) and
`status` (conditions, progress, the phase). No I/O: the reconciler gathers the inputs through
`ClusterApi` and applies the Plan.
"""

from .nodes import (
    LISTED_NODES,
    REPORTING_NODES,
    Fleet,
    NodeRecord,
    NodeRecords,
    Retirement,
    fleet,
    matching_nodes,
    node_matches,
    pinned_commit,
    retire_nodes,
    tolerates,
    with_records,
)
from .observe import (
    JobState,
    config_error,
    is_transient,
    job_duration,
    job_snapshot,
    pod_result,
    pods_needed,
    retry_news,
)
from .plan import JobRequest, Plan, decide_target, plan
from .status import READY, RECONCILING, STALLED, TargetState, condition, deleting_status

__all__ = [
    "LISTED_NODES",
    "READY",
    "RECONCILING",
    "REPORTING_NODES",
    "STALLED",
    "Fleet",
    "JobRequest",
    "JobState",
    "NodeRecord",
    "NodeRecords",
    "Plan",
    "Retirement",
    "TargetState",
    "condition",
    "config_error",
    "decide_target",
    "deleting_status",
    "fleet",
    "is_transient",
    "job_duration",
    "job_snapshot",
    "matching_nodes",
    "node_matches",
    "pinned_commit",
    "plan",
    "pod_result",
    "pods_needed",
    "retire_nodes",
    "retry_news",
    "tolerates",
    "with_records",
]
