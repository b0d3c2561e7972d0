"""The `modeldepot` command's exit: a Job's command exits at once, after flushing what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.hubemu import HubEmulator

SCRIPT = """
import atexit, logging, sys
from modeldepot import cli
atexit.register(lambda: print("teardown ran", flush=True))
def fake(argv):
    logging.basicConfig(format="%(message)s")
    logging.getLogger("t").warning("logged")
    sys.stdout.write("buffered, no newline")  # stdout to a pipe is block-buffered
    return COMMAND, 3
cli._main = fake
cli.entrypoint()
"""


def _run(command: str) -> subprocess.CompletedProcess[str]:
    code = SCRIPT.replace("COMMAND", repr(command))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_job_command_flushes_then_exits_with_its_code_without_teardown() -> None:
    for command in ("fetch", "cleanup", "prepare"):
        done = _run(command)
        assert done.returncode == 3
        assert done.stdout == "buffered, no newline"  # flushed; atexit handlers did not run
        assert done.stderr == "logged\n"


def test_the_operator_exits_the_ordinary_way() -> None:
    done = _run("operator")
    assert done.returncode == 3
    assert done.stdout == "buffered, no newlineteardown ran\n"


@pytest.fixture
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emu:
        yield emu


def test_the_installed_command_fetches_and_writes_its_result(hub: HubEmulator, tmp_path: Path) -> None:
    hub.add_repo_from_files("org/tiny", {"config.json": b"{}", "w.bin": os.urandom(70_000)})
    command = Path(sys.executable).parent / "modeldepot"
    tl = tmp_path / "tl"
    done = subprocess.run(
        [
            str(command),
            "fetch",
            "org/tiny",
            "--to",
            str(tmp_path / "m"),
            "--endpoint",
            hub.url,
            "--termination-log",
            str(tl),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MODELDEPOT_", "HF_"))}
        | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(tl.read_text())["phase"] == "Ready"
    assert "ready: 100%" in done.stderr  # the last progress line, flushed
    assert (tmp_path / "m" / "w.bin").stat().st_size == 70_000
