"""The bench's Hub: `python -m localdev.hubemu` as a separate child process, so its CPU is not the clients'.

`HubProcess` starts one (a plain loopback one, or a WAN-shaped one with `--conn-rate`, `--latency`,
`--connect-latency`), lists what a repo holds (`RemoteFile`: what every run is verified against),
reads every file once so that no tool pays for a cold page cache, measures its CPU seconds
(`/proc/PID/stat`) and restarts it when something on the shared machine killed it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file as the Hub lists it: what a downloaded copy must match."""

    path: str
    size: int
    blob_id: str
    sha256: str | None


class HubProcess:
    """The Hub emulator as a child process (`python -m localdev.hubemu ARGS`)."""

    def __init__(self, name: str, args: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.args = list(args)
        self.workdir = workdir
        self.log = workdir / f"hubemu-{name}.log"
        self.restarts = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ready = self.workdir / f"hubemu-{self.name}.ready"
        ready.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "hack"), env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "localdev.hubemu", "--port", "0", "--ready-file", str(ready)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*argv, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300  # the first run generates and hashes the large files
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
                f"bench: the {self.name} hub emulator died (exit {self.proc.returncode}); restarting it",
                file=sys.stderr,
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
            with urllib.request.urlopen(f"{self.url}/{repo}/resolve/main/{f.path}", timeout=120) as resp:
                while resp.read(READ_CHUNK):
                    pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
