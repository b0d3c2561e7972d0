"""Run Argo CD's Lua health check of ModelArtifact (docs/argocd-health.lua) from Python.

Argo CD evaluates `resource.customizations.health.<group>_<kind>` scripts with gopher-lua (Lua 5.1)
and a global `obj` holding the live object (JSON null fields are absent); the script returns a table
`{status = "Healthy"|"Progressing"|"Degraded"|"Suspended"|"Missing"|"Unknown", message = "..."}`.
`load_health_check()` reproduces that with lupa's Lua 5.1 runtime, so unit tests and integration
tests (feeding statuses the operator really wrote) can check the script.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_SCRIPT = REPO_ROOT / "docs" / "argocd-health.lua"
ARGOCD_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})


@dataclass(frozen=True)
class Health:
    """What an Argo CD health script returned."""

    status: str
    message: str


def _runtime() -> Any:
    try:
        from lupa import lua51  # gopher-lua implements Lua 5.1

        return lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False)
    except ImportError:  # pragma: no cover - lupa builds without the 5.1 module
        import lupa

        return lupa.LuaRuntime(unpack_returned_tuples=False, register_eval=False)


def _to_lua(runtime: Any, value: Any) -> Any:
    """JSON value -> Lua value the way Argo CD converts it (objects and arrays become tables)."""
    if isinstance(value, Mapping):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items() if v is not None})
    if isinstance(value, list | tuple):
        return runtime.table_from([_to_lua(runtime, v) for v in value if v is not None])
    return value


def load_health_check(path: Path = HEALTH_SCRIPT) -> Callable[[Mapping[str, Any]], Health]:
    """Compile the health script once; the returned function evaluates it for one object."""
    source = path.read_text()
    runtime = _runtime()
    # Argo CD runs the script as a chunk with `obj` as a global; wrapping it in a function taking
    # `obj` gives every call a fresh binding without sharing globals between objects.
    chunk = runtime.eval(f"function(obj)\n{source}\nend")

    def check(obj: Mapping[str, Any]) -> Health:
        result = chunk(_to_lua(runtime, obj))
        if result is None:
            raise ValueError("the health script returned nothing")
        status = result["status"]
        message = result["message"]
        if status not in ARGOCD_STATUSES:
            raise ValueError(f"the health script returned an unknown status {status!r}")
        return Health(str(status), "" if message is None else str(message))

    return check
