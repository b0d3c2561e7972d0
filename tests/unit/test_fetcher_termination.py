"""The termination message always fits the kubelet's 4096 bytes and stays valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldepot.fetcher.job import TERMINATION_MESSAGE_BYTES, FetchResult, write_termination_message

COMPLETE = {
    "phase": "Ready",
    "reason": "",
    "commit": "c" * 40,
    "digest": "sha256:" + "d" * 64,
    "totalBytes": 123_456_789_012,
    "fileCount": 4242,
    "transferredBytes": 100_000_000_000,
    "reusedBytes": 20_000_000_000,
    "adoptedBytes": 3_456_789_012,
}


def result(message: str, path: str) -> FetchResult:
    return FetchResult(
        phase="Ready",
        path=path,
        message=message,
        commit=COMPLETE["commit"],  # type: ignore[arg-type]
        digest=COMPLETE["digest"],  # type: ignore[arg-type]
        total_bytes=COMPLETE["totalBytes"],  # type: ignore[arg-type]
        file_count=COMPLETE["fileCount"],  # type: ignore[arg-type]
        downloaded_bytes=COMPLETE["transferredBytes"],  # type: ignore[arg-type]
        reused_bytes=COMPLETE["reusedBytes"],  # type: ignore[arg-type]
        adopted_bytes=COMPLETE["adoptedBytes"],  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ("模型" * 2000, "/data/" + "p" * 3994),  # 4000 non-ASCII characters, a 4000-byte path
        ("\U0001f600" * 4000, "/data/" + "é" * 1997),  # 4-byte characters, a 4000-byte UTF-8 path
        ('"\\\n\t\x00' * 1000, '/data/"quoted"\n' + "q" * 4000),  # JSON escapes grow the size
        ("short", "/data/" + "p" * 4000),  # only the path is long
        ("m" * 4000, "/data/short"),  # only the message is long
    ],
)
def test_termination_message_fits_and_keeps_the_result(tmp_path: Path, message: str, path: str) -> None:
    out = tmp_path / "termination-log"
    write_termination_message(out, result(message, path))
    raw = out.read_bytes()
    assert len(raw) <= TERMINATION_MESSAGE_BYTES <= 4096
    data = json.loads(raw.decode("utf-8"))
    assert {k: data[k] for k in COMPLETE} == COMPLETE
    assert message.startswith(data["message"].removesuffix("…")[:100])
    assert path.startswith(data["path"].removesuffix("…"))
    assert data["path"], "the path keeps a useful prefix"


def test_short_results_are_not_touched() -> None:
    r = result("all good", "/data/m")
    assert r.to_dict() == {**COMPLETE, "message": "all good", "path": "/data/m"}


def test_undecodable_path_characters_stay_encodable(tmp_path: Path) -> None:
    out = tmp_path / "termination-log"
    write_termination_message(out, result("x", "/data/bad\udcff-name"))
    assert json.loads(out.read_bytes())["path"] == "/data/bad\\udcff-name"


def test_tiny_limit_still_gives_valid_json() -> None:
    r = result("m" * 100, "/p" * 100)
    text = r.to_json(limit=400)  # the fixed fields alone take about 330 bytes
    assert len(text.encode()) <= 400
    assert json.loads(text)["commit"] == COMPLETE["commit"]
