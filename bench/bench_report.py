"""The bench's figures: medians per case and tool, the ratios and issue 10's targets, the table and the JSON.

Pure: it takes `RunResult`s and returns text and dicts. The ratios are of medians and always say
which way they go (docs/benchmark.md, "JSON keys", lists the stable keys):

- `speedup_vs_hf` = hf's wall / ours (> 1: modeldepot is faster; 1.5 means it takes 1/1.5 of hf's time);
- `fraction_of_curl` = curl's wall / ours = our MB/s / curl's (1.0: as fast as `curl -o` to disk);
- `rss_vs_hf` = our peak RSS / hf's (<= 1: we use no more memory);
- `cpu_vs_hf` = our CPU seconds / hf's.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench_clients import TOOLS, RunResult

# `bench/results/latest.json` layout version: bump it when a documented key changes meaning.
FORMAT = "modeldepot-bench/2"
OURS = "modeldepot"
# The tool names as the per-case JSON objects key them (`rss_mb.ours`, `rss_mb.hf`, ...).
ROLE = {"modeldepot": "ours", "hf": "hf", "curl": "curl"}

# Issue 10's targets per case: the lower bounds on the ratios; every case also wants rss_vs_hf <= 1.
MIN_TARGETS: dict[str, dict[str, float]] = {
    "large": {"speedup_vs_hf": 1.5, "fraction_of_curl": 0.8},
    "wan": {"speedup_vs_hf": 3.0},
    "small": {"speedup_vs_hf": 1.5},
    "minilm": {"speedup_vs_hf": 1.2},
}
MAX_TARGETS: dict[str, float] = {"rss_vs_hf": 1.0}


@dataclass(frozen=True)
class Case:
    name: str
    repo: str
    description: str
    link: str = "loopback"  # what the emulated link adds (`localdev.hubemu.Link.describe()`)
    curl: bool = False  # run curl too (single-file cases: the "physical limit" column)


@dataclass(frozen=True)
class Summary:
    """Medians of one tool's verified runs on one case."""

    case: str
    tool: str
    runs: int
    wall_s: float
    mb_per_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    server_cpu_s: float
    wall_s_min: float
    wall_s_max: float
    bytes: int
    files: int


def summarize(runs: Sequence[RunResult]) -> Summary:
    first = runs[0]
    med = statistics.median
    return Summary(
        case=first.case,
        tool=first.tool,
        runs=len(runs),
        wall_s=med(r.wall_s for r in runs),
        mb_per_s=med(r.mb_per_s for r in runs),
        cpu_s=med(r.cpu_s for r in runs),
        user_s=med(r.user_s for r in runs),
        sys_s=med(r.sys_s for r in runs),
        max_rss_mb=med(r.max_rss_mb for r in runs),
        server_cpu_s=med(r.server_cpu_s for r in runs),
        wall_s_min=min(r.wall_s for r in runs),
        wall_s_max=max(r.wall_s for r in runs),
        bytes=first.bytes,
        files=first.files,
    )


def summaries_of(results: Sequence[RunResult]) -> dict[tuple[str, str], Summary]:
    """(case, tool) -> medians over that tool's verified runs (failed runs never count)."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        if r.ok:
            groups.setdefault((r.case, r.tool), []).append(r)
    return {key: summarize(runs) for key, runs in groups.items()}


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else round(num / den, 3)


def _at_least(value: float | None, bound: float) -> dict[str, Any]:
    return {"min": bound, "value": value, "met": None if value is None else value >= bound}


def _at_most(value: float | None, bound: float) -> dict[str, Any]:
    return {"max": bound, "value": value, "met": None if value is None else value <= bound}


def case_figures(case: Case, summaries: Mapping[tuple[str, str], Summary]) -> dict[str, Any]:
    """`cases.<name>` of latest.json: medians per tool, the ratios, and each target met or not."""
    by_role = {ROLE[t]: summaries.get((case.name, t)) for t in TOOLS}

    def per_role(attr: str) -> dict[str, float | None]:
        return {role: None if s is None else round(getattr(s, attr), 3) for role, s in by_role.items()}

    wall, rss, cpu = per_role("wall_s"), per_role("max_rss_mb"), per_role("cpu_s")
    ratios = {
        "speedup_vs_hf": _ratio(wall["hf"], wall["ours"]),
        "fraction_of_curl": _ratio(wall["curl"], wall["ours"]),
        "rss_vs_hf": _ratio(rss["ours"], rss["hf"]),
        "cpu_vs_hf": _ratio(cpu["ours"], cpu["hf"]),
    }
    targets = {k: _at_least(ratios[k], v) for k, v in MIN_TARGETS.get(case.name, {}).items()}
    targets |= {k: _at_most(ratios[k], v) for k, v in MAX_TARGETS.items()}
    some = next((s for s in by_role.values() if s is not None), None)
    return {
        "description": case.description,
        "repo": case.repo,
        "link": case.link,
        "bytes": None if some is None else some.bytes,
        "files": None if some is None else some.files,
        "wall_s": wall,
        "mb_per_s": per_role("mb_per_s"),
        "cpu_s": cpu,
        "rss_mb": rss,
        **ratios,
        "targets": targets,
    }


def all_met(figures: Mapping[str, Mapping[str, Any]]) -> bool | None:
    """True if every target of every case is met, False if one is not, None if one could not be measured."""
    verdicts = [t["met"] for f in figures.values() for t in f["targets"].values()]
    if False in verdicts:
        return False
    return None if None in verdicts else True


def _verdict(target: Mapping[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[target["met"]]


def _against(target: Mapping[str, Any] | None, unit: str = "") -> str:
    return "" if target is None else f" (target >= {target['min']}{unit}: {_verdict(target)})"


def ratio_line(name: str, f: Mapping[str, Any]) -> str:
    """One line per case: the ratios, each beside its target and whether it is met."""
    t = f["targets"]
    parts = []
    if f["speedup_vs_hf"] is not None:
        parts.append(f"{f['speedup_vs_hf']:.2f}x as fast as hf{_against(t.get('speedup_vs_hf'), 'x')}")
    if f["fraction_of_curl"] is not None:
        parts.append(f"{f['fraction_of_curl']:.2f} of curl->disk{_against(t.get('fraction_of_curl'))}")
    rss = ", ".join(f"{role} {mb:.0f} MB" for role, mb in f["rss_mb"].items() if mb is not None)
    parts.append(f"peak RSS {rss} (target ours <= hf: {_verdict(t['rss_vs_hf'])})")
    if f["cpu_vs_hf"] is not None:
        parts.append(f"CPU {f['cpu_vs_hf']:.2f}x hf's")
    return f"- {name}: " + "; ".join(parts)


def table(cases: Sequence[Case], summaries: Mapping[tuple[str, str], Summary]) -> str:
    lines = [
        "| case | tool | MB/s | wall s | CPU s (user+sys) | peak RSS MB | emulator CPU s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for tool in TOOLS:
            if (s := summaries.get((case.name, tool))) is not None:
                lines.append(
                    f"| {case.name} ({case.description}) | {tool} | {s.mb_per_s:.0f} | {s.wall_s:.2f}"
                    f" ({s.wall_s_min:.2f}-{s.wall_s_max:.2f}) | {s.cpu_s:.2f} ({s.user_s:.2f}+{s.sys_s:.2f})"
                    f" | {s.max_rss_mb:.0f} | {s.server_cpu_s:.2f} |"
                )
    figures = {c.name: case_figures(c, summaries) for c in cases}
    links = [f"{c.name}: {c.link}" for c in cases if c.link != "loopback"]
    notes = [
        "",
        "Medians over the runs (wall: min-max). MB = 10^6 bytes of repository content / wall time"
        " from spawn to exit (start-up and listing included). CPU and RSS are the client process's"
        " (os.wait4 in bench/launch.py, so RSS is the client's own); the emulator is a separate process."
        + (f" Link: {'; '.join(links)}." if links else ""),
        "Not the same work: modeldepot hashes every file while writing it and verifies sha256 (LFS)"
        " or the git blob id (others), stages, fsyncs and atomically publishes; hf download checks only"
        " sizes/ETags and hashes nothing it downloads; curl (one stream per file, `-o`) verifies nothing"
        " and does not fsync. The bench verifies every tool's files after each run.",
        "",
        "Ratios: 'as fast as hf' = hf wall / ours (> 1: modeldepot faster); 'of curl->disk' = curl wall /"
        " ours (1.0 = curl's speed); targets from issue 10.",
        *(ratio_line(name, f) for name, f in figures.items()),
    ]
    return "\n".join(lines + notes)
