"""The bench's clients and one measured run: `modeldepot fetch`, `hf download`, and `curl -o` as the floor.

- `modeldepot`: `modeldepot fetch REPO --to TMP/model ...` from the venv (hashes and verifies every
  file, stages, fsyncs and publishes atomically);
- `hf`: `hf download REPO --local-dir TMP/model` from the venv (huggingface_hub's CLI, a project
  dependency; checks sizes/ETags, hashes nothing it downloads);
- `curl`: `curl -sS --fail -L --create-dirs -o TMP/model/PATH URL ...`, one process, one file after
  the other on one connection, a single stream per file: the "physical limit" of one stream to
  disk. It verifies nothing and does not fsync.

`run_once` starts one into a fresh temp directory through `launch.py` (which measures wall time from
fork to exit, CPU and the client's own peak RSS with `os.wait4`; see there why not from here),
records the Hub's CPU during the run, then `verify`s the directory against the Hub's file list (set
of files, sizes, sha256 or git blob id) whatever the tool, so a fast but wrong run fails the
benchmark.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench_hub import READ_CHUNK, HubProcess, RemoteFile

TOOLS = ("modeldepot", "hf", "curl")
MB = 1_000_000
BINDIR = Path(sys.executable).parent
LAUNCHER = Path(__file__).resolve().parent / "launch.py"


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


def check_tools(tools: Sequence[str]) -> None:
    """Exit with a clear message when a tool the bench needs is not installed."""
    for tool in tools:
        if tool == "curl":
            if shutil.which("curl") is None:
                raise SystemExit(
                    "bench: curl not found. It gives the 'curl -> disk' column: install Debian's curl"
                    " package (apt-get install curl), or leave it out with BENCH_TOOLS=modeldepot,hf."
                )
        elif not os.access(BINDIR / tool, os.X_OK):
            raise SystemExit(
                f"bench: {BINDIR / tool} not found: run the bench with the project's venv (`make bench`"
                " installs it: `pip install -e .[dev]` brings modeldepot and huggingface_hub's `hf`)."
            )


def child_env(tmp: Path, endpoint: str) -> dict[str, str]:
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
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def command(tool: str, repo: str, files: Sequence[RemoteFile], tmp: Path, endpoint: str) -> list[str]:
    """The argv for `tool`; every tool puts the repo's files under `tmp / "model"`."""
    model = tmp / "model"
    if tool == "modeldepot":
        return [
            str(BINDIR / "modeldepot"),
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
    if tool == "hf":
        return [str(BINDIR / "hf"), "download", repo, "--local-dir", str(model)]
    if tool == "curl":
        argv = ["curl", "-sS", "--fail", "-L", "--create-dirs"]
        for f in files:
            argv += ["-o", str(model / f.path), f"{endpoint}/{repo}/resolve/main/{quote(f.path)}"]
        return argv
    raise ValueError(f"unknown tool {tool!r}")


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
        while chunk := fh.read(READ_CHUNK):
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
    tool: str, case: str, repo: str, rep: int, hub: HubProcess, expected: Sequence[RemoteFile], workdir: Path
) -> RunResult:
    """Run `tool` once on `repo` into a fresh temp directory, measure it, verify what it wrote."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{case}-{tool}-", dir=workdir))
    try:
        argv = command(tool, repo, expected, tmp, hub.url)
        log_path, stats_path = tmp / "client.log", tmp / "client.stats"
        server_before = hub.cpu_seconds()
        with log_path.open("wb") as log:
            subprocess.run(
                [sys.executable, "-S", "-I", str(LAUNCHER), str(stats_path), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(tmp, hub.url),
                check=True,
            )
        server_cpu = hub.cpu_seconds() - server_before
        fields = stats_path.read_text().split()
        wall, user, sys_s, rss_kib = (float(x) for x in fields[:4])
        code = int(fields[4])
        if code != 0:
            error = f"exit {code}: {log_path.read_text(errors='replace')[-800:]}"
        else:
            error = verify(tmp / "model", expected)
        return RunResult(
            case=case,
            tool=tool,
            rep=rep,
            ok=not error,
            wall_s=wall,
            user_s=user,
            sys_s=sys_s,
            max_rss_mb=rss_kib / 1024,  # KiB on Linux
            server_cpu_s=server_cpu,
            bytes=sum(f.size for f in expected),
            files=len(expected),
            exit_code=code,
            error=error,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
