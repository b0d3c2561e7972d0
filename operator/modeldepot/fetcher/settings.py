"""Settings of `modeldepot fetch` (`FetchSettings`, env `MODELDEPOT_<FIELD>`), in the standard library only.

Not pydantic-settings, as `OperatorSettings` is: importing pydantic and pydantic-settings cost
the fetcher ~0.13 s of start-up and ~9 MB of peak RSS per run (measured), which for a repo of small
files or a small model is a large share of the whole fetch. The rules are those of the pydantic
version it replaces: a keyword argument wins over the environment, the environment over the
default; names are matched case-insensitively, other `MODELDEPOT_*` variables are ignored; every
value is converted to the field's type and checked against its bounds (`bounds(name)`, also what
the CRD's schema must admit), and a bad one is a `ValueError` naming the field.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

ENV_PREFIX = "MODELDEPOT_"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _setting(
    default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> Any:
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    return dataclasses.field(default=default, metadata=bounds)


@dataclasses.dataclass(init=False)
class FetchSettings:
    """Settings of `modeldepot fetch` (env `MODELDEPOT_<FIELD>`).

    `FetchSettings(**overrides)`: the overrides (command-line flags) win over the environment.
    """

    concurrency: int = _setting(8, ge=1, le=64)
    """Files downloaded in parallel."""
    chunk_size: int = _setting(1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    """Buffer size: bytes one stream gathers before a write, and the hasher's step. A large file
    holds about 6 x this (one batch filling, four queued for the hasher, one being hashed); several
    streams share it (each batches `chunk_size / streams`, at least 128 KiB). 1 MiB measured fastest
    on loopback (512 KiB, 2 MiB and 4 MiB were slower; 4 MiB also ~20 MB more peak RSS)."""
    streams: int = _setting(8, ge=1, le=32)
    """Most ranged streams (connections) fetching one large file; 1: one stream per file. More than
    one is used only when they prove faster (a CDN's per-connection cap), never on a fast link where
    the CPU is the limit. 8 x 40 MB/s per connection measured 4.6x one stream; 16 only 5% more."""
    streams_min_size: int = _setting(64 * 1024 * 1024, ge=0)
    """Files of at least this many bytes may use several streams; smaller ones use one (deciding
    takes ~0.3 s of probing, worth it from tens of MB at CDN speeds)."""
    part_size: int = _setting(64 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest range one request of a multi-stream download asks for (streams take parts in order)."""
    report_interval: float = _setting(2.0, gt=0)
    """Minimum seconds between two status progress reports."""
    log_interval: float = _setting(5.0, gt=0)
    """Seconds between two plain progress lines when stderr is not a terminal."""
    termination_log: Path = dataclasses.field(default=Path("/dev/termination-log"))
    """Where the JSON result is written (the pod's terminationMessagePath); ignored if unwritable."""
    storage_root: Path | None = dataclasses.field(default=None)
    """Storage root holding `.modeldepot/`; default: `/data` if the target is under it, else its parent."""
    max_retries: int = _setting(6, ge=0)
    """In-process retries of a transient error per file (and per Hub API call)."""
    backoff_base: float = _setting(0.5, gt=0)
    backoff_max: float = _setting(20.0, gt=0)
    connect_timeout: float = _setting(10.0, gt=0)
    """Seconds to open a connection to the Hub (metadata calls and downloads)."""
    read_timeout: float = _setting(60.0, gt=0)
    """Seconds one socket read may wait for data (metadata calls and downloads)."""
    metadata_timeout: float = _setting(120.0, gt=0)
    """Deadline of one metadata call (resolve, the whole file listing), its retries included;
    on expiry the fetch fails with HubUnavailable (transient)."""
    max_tree_pages: int = _setting(1000, ge=1)
    """Most pages of a file listing; more (or a page repeated) is InvalidSpec (permanent)."""
    max_tree_entries: int = _setting(1_000_000, ge=1)
    """Most entries (files and folders) of a file listing; more is InvalidSpec (permanent)."""
    min_bytes_per_second: float = _setting(64 * 1024, ge=0)
    """Throughput floor of the downloads (0: none): a stream slower than its share of it
    (floor / streams running) over `stall_window` is cut and resumed by Range, as a retry."""
    stall_window: float = _setting(30.0, gt=0)
    """Seconds over which a download stream's throughput is measured against the floor."""
    fsync: bool = _setting(True)
    """fsync each verified file and the published directories (durable across node crashes)."""
    stop_grace: float = _setting(5.0, ge=0)
    """Seconds to wait for in-flight transfers to notice a stop request before giving up on them."""

    def __init__(self, **overrides: Any) -> None:
        fields = {f.name: f for f in dataclasses.fields(self)}
        if unknown := sorted(set(overrides) - set(fields)):
            raise TypeError(f"FetchSettings has no setting {', '.join(unknown)}")
        env = {
            k[len(ENV_PREFIX) :].lower(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)
        }
        for name, f in fields.items():
            if name in overrides:
                value, source = overrides[name], name
            elif name in env:
                value, source = env[name], ENV_PREFIX + name.upper()
            else:
                value, source = f.default, name
            setattr(self, name, _checked(name, source, _convert(f.default, name, value, source)))

    @staticmethod
    def bounds(name: str) -> dict[str, float]:
        """The bounds of a setting: `ge` (at least), `gt` (more than), `le` (at most), if any."""
        for f in dataclasses.fields(FetchSettings):
            if f.name == name:
                return dict(f.metadata)
        raise KeyError(name)


def _kind(default: Any, name: str) -> type:
    return Path if name == "storage_root" or isinstance(default, Path) else type(default)


def _convert(default: Any, name: str, value: Any, source: str) -> Any:
    """`value` as the type of the setting's default (a string from the environment, or a flag)."""
    kind = _kind(default, name)
    if value is None:
        if default is None:
            return None
        raise ValueError(f"{source}: a value is required")
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(value if isinstance(value, int) else str(value).strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value if isinstance(value, (int, float)) else str(value).strip())
        if kind is Path:
            if isinstance(value, str) and not value.strip() and default is None:
                return None
            if not isinstance(value, (str, os.PathLike)):
                raise ValueError
            return Path(value)
    except (ValueError, TypeError):
        pass
    raise ValueError(f"{source}: {kind.__name__} expected, got {str(value)[:80]!r}")


def _checked(name: str, source: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, Path)):
        return value
    bounds = FetchSettings.bounds(name)
    if value != value:  # NaN passes no bound but compares false with all of them
        raise ValueError(f"{source}: a number expected, got {value}")
    if "ge" in bounds and value < bounds["ge"]:
        raise ValueError(f"{source}: must be at least {bounds['ge']}, got {value}")
    if "gt" in bounds and value <= bounds["gt"]:
        raise ValueError(f"{source}: must be more than {bounds['gt']}, got {value}")
    if "le" in bounds and value > bounds["le"]:
        raise ValueError(f"{source}: must be at most {bounds['le']}, got {value}")
    return value
