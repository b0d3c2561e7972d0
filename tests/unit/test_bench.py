"""Tests of the `make bench` harness (bench/): the ratios and targets it reports, the JSON keys
docs/benchmark.md promises, and the launcher that measures a client's own peak RSS."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))  # bench/run.py imports its sibling modules by name, as a script does

import bench_clients  # noqa: E402
import bench_report  # noqa: E402
from bench_clients import RunResult  # noqa: E402
from bench_report import Case, all_met, case_figures, summaries_of  # noqa: E402


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(case: str, tool: str, wall: float, rss: float, *, ok: bool = True, cpu: float = 1.0) -> RunResult:
    return RunResult(case, tool, 0, ok, wall, cpu, 0.0, rss, 0.0, 1_000_000_000, 1, 0 if ok else 1)


def large_runs() -> list[RunResult]:
    return [
        *(run("large", "modeldepot", w, 50) for w in (2.0, 2.2, 1.9)),
        run("large", "modeldepot", 0.1, 10, ok=False),  # fast but failed: never counts
        *(run("large", "hf", w, 80, cpu=2.0) for w in (4.0, 4.4, 3.8)),
        *(run("large", "curl", w, 8) for w in (1.6, 1.7, 1.5)),
    ]


def test_ratios_are_of_medians_and_say_which_way() -> None:
    figures = case_figures(Case("large", "bench/large", "1 x 1GiB LFS"), summaries_of(large_runs()))
    assert figures["wall_s"] == {"ours": 2.0, "hf": 4.0, "curl": 1.6}
    assert figures["speedup_vs_hf"] == 2.0  # hf's wall / ours: above 1, we are faster
    assert figures["fraction_of_curl"] == 0.8  # curl's wall / ours
    assert figures["rss_mb"] == {"ours": 50, "hf": 80, "curl": 8}
    assert figures["rss_vs_hf"] == 0.625
    assert figures["cpu_vs_hf"] == 0.5
    assert figures["mb_per_s"]["ours"] == 500.0
    targets = figures["targets"]
    assert targets["speedup_vs_hf"] == {"min": 1.5, "value": 2.0, "met": True}
    assert targets["fraction_of_curl"] == {"min": 0.8, "value": 0.8, "met": True}
    assert targets["rss_vs_hf"] == {"max": 1.0, "value": 0.625, "met": True}


def test_targets_are_per_case_and_missing_tools_are_not_measured() -> None:
    slow = [run("wan", "modeldepot", 5.0, 90), run("wan", "hf", 10.0, 80)]
    wan = case_figures(Case("wan", "bench/wan", "1 x 512MiB LFS, WAN"), summaries_of(slow))
    assert wan["speedup_vs_hf"] == 2.0
    assert wan["targets"]["speedup_vs_hf"] == {"min": 3.0, "value": 2.0, "met": False}  # wan wants 3x
    assert wan["targets"]["rss_vs_hf"]["met"] is False  # 90 MB > hf's 80
    assert wan["fraction_of_curl"] is None and "fraction_of_curl" not in wan["targets"]

    alone = case_figures(
        Case("small", "bench/small", "300 files"), summaries_of([run("small", "modeldepot", 1, 50)])
    )
    assert alone["speedup_vs_hf"] is None
    assert alone["targets"]["speedup_vs_hf"]["met"] is None
    assert all_met({"small": alone}) is None
    assert all_met({"small": alone, "wan": wan}) is False
    good = case_figures(Case("large", "bench/large", "1 x 1GiB"), summaries_of(large_runs()))
    assert all_met({"large": good}) is True


def test_ratio_line_names_each_target_and_verdict() -> None:
    figures = case_figures(Case("large", "bench/large", "1 x 1GiB LFS"), summaries_of(large_runs()))
    line = bench_report.ratio_line("large", figures)
    assert "2.00x as fast as hf (target >= 1.5x: met)" in line
    assert "0.80 of curl->disk (target >= 0.8: met)" in line
    assert "peak RSS ours 50 MB, hf 80 MB, curl 8 MB (target ours <= hf: met)" in line


def _resolve(document: Any, dotted: str) -> list[Any]:
    """Every value at `dotted` (`<x>` matches any key, `{a,b}` each of a and b, `[]` every item)."""
    found = [document]
    for part in dotted.split("."):
        options = part[1:-1].split(",") if part.startswith("{") else [part]
        step: list[Any] = []
        for node in found:
            if part.endswith("[]"):
                step += node[part[:-2]]
            elif part.startswith("<"):
                step += list(node.values())
            else:
                step += [node[o] for o in options]
        found = step
    return found


def test_the_json_has_every_key_docs_benchmark_md_documents(tmp_path: Path) -> None:
    run_py = _run_module()
    args = run_py.parse_args(["--output", str(tmp_path / "latest.json"), "--cases", "large,wan"])
    cases = run_py.plan_cases(args)
    results = [
        *large_runs(),
        run("wan", "modeldepot", 3, 60),
        run("wan", "hf", 14, 70),
        run("wan", "curl", 14, 9),
    ]
    run_py.write_results(args, cases, results, {"host": {"loadavg": {"start": [1.0], "end": [1.0]}}})
    document = json.loads((tmp_path / "latest.json").read_text())
    docs = (ROOT / "docs" / "benchmark.md").read_text()
    section = docs[docs.index("### `bench/results/latest.json`") :].split("\n## ")[0]
    keys = [k for cell in re.findall(r"^\| (.+?) \|", section, re.M) for k in re.findall(r"`([^`]+)`", cell)]
    keys = [k.replace("<ratio>", "<x>").replace("<who>", "{ours,hf,curl}") for k in keys if k != "key"]
    assert len(keys) >= 15, keys
    for key in keys:
        assert _resolve(document, key.replace("<case>", "<x>")), key
    assert document["format"] == bench_report.FORMAT and bench_report.FORMAT in docs
    assert (
        document["cases"]["wan"]["link"]
        == "40 MB/s per connection, +30 ms per request, +60 ms per new connection"
    )
    assert document["cases"]["wan"]["speedup_vs_hf"] == pytest.approx(14 / 3, abs=0.001)
    assert document["targetsMet"] is True  # large: 2x hf, 0.8 of curl; wan: 4.7x hf; RSS below hf's


def _launch(tmp_path: Path, *argv: str) -> tuple[float, float, float, float, int]:
    stats = tmp_path / "stats"
    subprocess.run([sys.executable, "-S", "-I", str(BENCH / "launch.py"), str(stats), *argv], check=True)
    wall, user, system, rss_kib, code = stats.read_text().split()
    return float(wall), float(user), float(system), float(rss_kib), int(code)


def test_launcher_reports_the_clients_own_peak_rss_not_the_benchs(tmp_path: Path) -> None:
    ballast = bytearray(200 << 20)  # this process's peak RSS is now over 200 MB...
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    *_, rss_kib, code = _launch(tmp_path, "true")
    assert code == 0
    assert rss_kib < 30 * 1024, rss_kib  # ...and a tiny client does not inherit it
    del ballast
    # ~0.1 s of user-space work as well: with tick-based CPU accounting a client that only faults
    # pages in can be charged 0 user seconds (seen once in a full unit run)
    grow = "b = bytearray(100 << 20); b[::4096] = b'\\x01' * len(b[::4096]); sum(range(3_000_000))"
    wall, user, _, rss_kib, code = _launch(tmp_path, sys.executable, "-c", grow)
    assert code == 0 and wall > 0 and user > 0
    assert rss_kib >= 100 * 1024, rss_kib  # a client's own peak is measured
    assert _launch(tmp_path, "sh", "-c", "exit 3")[4] == 3
    assert _launch(tmp_path, "no-such-tool-xyz")[4] == 127


def test_missing_curl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_clients.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match=r"apt-get install curl.*BENCH_TOOLS=modeldepot,hf"):
        bench_clients.check_tools(["modeldepot", "hf", "curl"])
    bench_clients.check_tools(["modeldepot", "hf"])  # both come from the venv running the tests
