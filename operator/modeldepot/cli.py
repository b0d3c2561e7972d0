"""Command line: `modeldepot fetch` (the Job entrypoint, also usable on a laptop), `modeldepot cleanup`
(the cleanup Job) and `modeldepot operator`.

Heavy or cluster-only modules (`kubernetes` through `modeldepot.kube`, kopf through
`modeldepot.handlers`) are imported lazily so that `modeldepot fetch --to DIR` works anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from modeldepot import __version__

if TYPE_CHECKING:
    from modeldepot.fetcher.owners import Owner
    from modeldepot.fetcher.progress import ProgressSink

OWNER_HELP = (
    "the ModelArtifact this works for, NAMESPACE/NAME/UID (the operator passes it; default: a local "
    "owner): only paths and versions it owns on the storage root are ever used or deleted"
)


def _owner(text: str) -> Owner:
    from modeldepot.errors import InvalidSpecError
    from modeldepot.fetcher.owners import Owner

    try:
        return Owner.parse(text)
    except InvalidSpecError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldepot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"modeldepot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download a Hugging Face repository, verified, into a directory")
    fetch.add_argument("repo", help="repository id, owner/name")
    fetch.add_argument("--to", required=True, type=Path, help="published path P (a symlink is created there)")
    fetch.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    fetch.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    fetch.add_argument("--include", action="append", default=[], metavar="GLOB", help="only matching files")
    fetch.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip matching files")
    fetch.add_argument("--endpoint", default=None, help="Hub endpoint or mirror (default: HF_ENDPOINT)")
    fetch.add_argument("--concurrency", type=int, default=None, help="files in parallel (default: 8)")
    fetch.add_argument("--streams", type=int, default=None, help="ranged streams per large file (default: 8)")
    fetch.add_argument(
        "--streams-min-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="files this large get several streams",
    )
    fetch.add_argument(
        "--chunk-size", type=int, default=None, metavar="BYTES", help="buffer size (default: 1 MiB)"
    )
    fetch.add_argument(
        "--root", type=Path, default=None, help="storage root (default: /data or --to's parent)"
    )
    fetch.add_argument(
        "--report", default=None, metavar="NAMESPACE/NAME", help="patch progress into this ModelArtifact"
    )
    fetch.add_argument(
        "--node", default=None, help="report in NODE's status.nodes entry (node-local storage)"
    )
    fetch.add_argument("--generation", type=int, default=None, help="spec generation being fetched")
    fetch.add_argument("--termination-log", type=Path, default=None, help="where to write the JSON result")
    fetch.add_argument("--owner", type=_owner, default=None, metavar="NAMESPACE/NAME/UID", help=OWNER_HELP)

    cleanup = sub.add_parser("cleanup", help="remove a published path and all its stored/staged versions")
    cleanup.add_argument("--to", required=True, type=Path, help="published path P, as given to fetch")
    cleanup.add_argument("--root", type=Path, default=None, help="storage root (default: as for fetch)")
    cleanup.add_argument("--owner", type=_owner, default=None, metavar="NAMESPACE/NAME/UID", help=OWNER_HELP)

    prepare = sub.add_parser(
        "prepare", help="create the directories a node-local fetch writes into (root init step)"
    )
    prepare.add_argument("--to", required=True, type=Path, help="published path P, as given to fetch")
    prepare.add_argument("--root", type=Path, default=None, help="storage root (default: as for fetch)")
    prepare.add_argument("--uid", type=int, required=True, help="owner of the directories created")
    prepare.add_argument("--gid", type=int, required=True, help="group of the directories created")

    sub.add_parser("operator", help="run the operator (kopf)")
    return parser


def _status_sink(report: str, node: str | None) -> ProgressSink:
    """A ProgressSink writing into the ModelArtifact's status (imports kubernetes only here):
    `status.progress` by merge patch, or this node's `status.nodes` entry by server-side apply as
    the node's field manager, so that fetch pods on other nodes never overwrite each other."""
    from modeldepot.kube import apply_node_status, patch_artifact_status
    from modeldepot.models import NodeStatus, Progress, progress_merge_patch

    namespace, _, name = report.partition("/")
    if not namespace or not name:
        raise SystemExit(f"--report must be NAMESPACE/NAME, got {report!r}")

    def sink(progress: dict[str, object], /) -> None:
        if node:
            apply_node_status(namespace, name, NodeStatus.model_validate({**progress, "name": node}))
        else:
            patch = progress_merge_patch(Progress.model_validate(progress))
            patch_artifact_status(namespace, name, {"status": {"progress": patch}})

    return sink


def _fetch(args: argparse.Namespace) -> int:
    from modeldepot.fetcher.owners import LOCAL_OWNER
    from modeldepot.fetcher.run import EXIT_SIGINT, EXIT_SIGTERM, FetchRequest, run
    from modeldepot.fetcher.settings import FetchSettings

    flags = ("termination_log", "streams", "streams_min_size", "chunk_size")
    try:  # flags win over MODELDEPOT_* and are validated alike
        settings = FetchSettings(**{k: v for k in flags if (v := getattr(args, k)) is not None})
    except ValueError as exc:  # a flag or MODELDEPOT_* value FetchSettings refuses
        raise SystemExit(f"modeldepot fetch: {exc}") from None
    sink = _status_sink(args.report, args.node) if args.report else None
    request = FetchRequest(
        repo_id=args.repo,
        target=args.to,
        revision=args.revision,
        repo_type=args.repo_type,
        include=args.include,
        exclude=args.exclude,
        endpoint=args.endpoint,
        concurrency=args.concurrency,
        generation=args.generation,
        root=args.root,
        owner=args.owner or LOCAL_OWNER,
        node_local=args.node is not None,
    )
    code = run(request, settings=settings, sink=sink, console=sys.stderr)
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if code in (EXIT_SIGTERM, EXIT_SIGINT) and stuck:
        # Worker threads stuck in a read must not delay the exit past the pod's grace period.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _disk_step(name: str, step: Callable[[], str]) -> int:
    """Run a `cleanup` or `prepare` step: exit 0 when done, 2 when the path is refused (invalid,
    a symlink, another owner's: retrying cannot help), 1 on an I/O error (the Job retries)."""
    from modeldepot.errors import ModelDepotError

    log = logging.getLogger(f"modeldepot.{name}")
    try:
        done = step()
    except ModelDepotError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("%s failed: %s", name, exc)
        return 1
    if done:
        log.info("%s", done)
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    """Remove what this owner has at P. Nothing there is success; so is a P that belongs to another
    owner (nothing is removed then)."""
    from modeldepot.fetcher.layout import Layout
    from modeldepot.fetcher.owners import LOCAL_OWNER
    from modeldepot.fetcher.settings import FetchSettings

    def step() -> str:
        root = args.root or FetchSettings().storage_root
        with Layout(args.to, root, owner=args.owner or LOCAL_OWNER) as layout:
            return f"removed {layout.target} and its stored versions" if layout.remove_all() else ""

    return _disk_step("cleanup", step)


def _prepare(args: argparse.Namespace) -> int:
    """Create the directories a node-local fetch writes into (the root init step)."""
    from modeldepot.fetcher.prepare import prepare

    def step() -> str:
        prepare(args.to, root=args.root, uid=args.uid, gid=args.gid)
        return ""

    return _disk_step("prepare", step)


def _operator(args: argparse.Namespace) -> int:
    from modeldepot.handlers import run_operator
    from modeldepot.settings import OperatorSettings

    run_operator(OperatorSettings())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)[1]


def _main(argv: Sequence[str] | None) -> tuple[str, int]:
    """(the command run, its exit code)."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "fetch":
        return args.command, _fetch(args)
    if args.command == "cleanup":
        return args.command, _cleanup(args)
    if args.command == "prepare":
        return args.command, _prepare(args)
    return args.command, _operator(args)


def entrypoint() -> NoReturn:
    """The `modeldepot` command: `main` on this process's arguments, then exit with its code.

    A Job's command (fetch, cleanup, prepare) has written, closed and flushed its files when it
    returns, so the process exits at once after the standard streams and logging are flushed,
    without the interpreter's teardown of the modules it loaded (~60 ms after a fetch, measured:
    about 5% of a fetch of small files). The operator exits the ordinary way.
    """
    command, code = _main(None)
    if command == "operator":
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
