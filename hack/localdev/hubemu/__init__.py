"""Hugging Face Hub emulator: a loopback HTTP server the real `huggingface_hub` client talks to.

Used by unit/integration tests, `make demo` and `bench/`. It speaks the subset of the Hub's HTTP API
that downloads need, with the same JSON shapes, headers and error codes as huggingface.co:

- `GET /api/{models,datasets}/REPO[/revision/REV]` (`model_info`, `dataset_info`, `repo_info`;
  `?blobs=true` adds sizes, blob ids and LFS info to `siblings`);
- `GET /api/{models,datasets}/REPO/tree/REV[/PATH]?recursive=&expand=` (`list_repo_tree`, paginated
  with a `Link: <...>; rel="next"` header like the Hub);
- `POST /api/{models,datasets}/REPO/paths-info/REV` (`get_paths_info`; form or JSON body);
- `GET /api/{models,datasets}/REPO/refs` and `.../commits/REV` (`list_repo_refs`, `list_repo_commits`);
- `GET /api/whoami-v2` (`whoami`: any bearer token is accepted as a read token);
- `HEAD`/`GET /REPO/resolve/REV/PATH` and `/datasets/REPO/resolve/REV/PATH` with `Range`
  (`bytes=a-b`, `bytes=a-`, `bytes=-n` -> 206 + `Content-Range`; unsatisfiable -> 416),
  `ETag` (`"<sha256>"` for LFS files, `"<git blob id>"` otherwise), `X-Repo-Commit`,
  `X-Linked-Etag` / `X-Linked-Size` for LFS files. No Xet headers are ever sent, so the client uses
  plain HTTP. With `lfs_redirect=True`, LFS files answer 302 to a "CDN" URL (`/_emulator/cdn/...`)
  on another origin (`localhost` instead of `127.0.0.1`), as the real Hub does; the client then
  drops the token.

Test controls are Python methods of `HubEmulator` (there is no HTTP control API): `set_throttle`,
`corrupt`, `fail_next`, `truncate_next`, `requests` / `clear_requests`, `add_tag` / `set_branch`,
`set_gated`, `reset_faults`, and the hostile modes under `hostile`.

A WAN-like link, as a CDN edge gives (`link.py`): `HubEmulator(conn_bps=40e6, latency=0.03,
connect_latency=0.06)` or `set_link(...)`, on the CLI `--conn-rate 40MB --latency 30ms
--connect-latency 60ms`: each connection's bodies capped at 40 MB/s (N connections get N times that),
30 ms before every answer, 60 ms more on a new connection's first.

    with HubEmulator() as hub:
        commit = hub.add_repo_from_files("org/tiny", {"config.json": b"{}", "w.bin": (2 << 20, 1)})
        HfApi(endpoint=hub.url).model_info("org/tiny")  # or HF_ENDPOINT=hub.url for a subprocess

huggingface_hub reads HF_ENDPOINT when it is imported: in-process, pass `endpoint=` instead.

The parts, one module each:

| module | what |
|---|---|
| `emulator.py` | `HubEmulator`: the test-facing API and the server's lifecycle |
| `store.py` | repos, commits, branches, tags, gating (`RepoStore`) |
| `content.py` | file entries: hashes, LFS, in-memory/on-disk/synthetic content, the hash cache |
| `faults.py` | throttles, corruptions, failures, truncations (`Faults`); hostile modes (`HostileHub`) |
| `link.py` | the emulated link: per-connection rate cap, per-request and per-connection latency (`Link`) |
| `requestlog.py` | the request log (`RequestLog`: never a token) |
| `api.py` | the Hub's JSON bodies and errors, pure |
| `handler.py` | the HTTP server and handler: routing, ranges, bodies, LFS redirect, CDN |
| `cli.py`, `__main__.py` | `python -m localdev.hubemu ...` |
"""

from localdev.hubemu.cli import MINILM_REPO_ID, main, minilm_dir, parse_duration, parse_size, synthetic_files
from localdev.hubemu.content import DEFAULT_LFS_PATTERNS, DEFAULT_LFS_THRESHOLD, FileSpec
from localdev.hubemu.emulator import HubEmulator
from localdev.hubemu.faults import HostileHub
from localdev.hubemu.link import Link

__all__ = [
    "DEFAULT_LFS_PATTERNS",
    "DEFAULT_LFS_THRESHOLD",
    "MINILM_REPO_ID",
    "FileSpec",
    "HostileHub",
    "HubEmulator",
    "Link",
    "main",
    "minilm_dir",
    "parse_duration",
    "parse_size",
    "synthetic_files",
]
