"""Package one static binary as a single-layer OCI image archive, offline and reproducibly.

`python3 hack/localdev/ociarchive.py --binary PATH --ref NAME:TAG --out FILE.oci.tar` writes an OCI
image layout as a tar (what `ctr images import` reads): the binary at `/<basename>` as the entrypoint,
linux/amd64, no shell, no other files. Timestamps are zero, so the same binary gives the same digest.
Standard library only: hack/build-k8s.sh runs it with the system python3.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, *, size: int = 0, mode: int = 0o644, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
    return info


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def build(binary: Path, ref: str, user: str | None = None) -> bytes:
    """The OCI layout tar for an image whose only file is `binary`."""
    name = binary.name
    content = binary.read_bytes()
    # /tmp and /etc are empty directories: mount points a runtime may need on a read-only root
    layer_tar = _tar(
        [
            (_info("etc/", mode=0o755, directory=True), None),
            (_info("tmp/", mode=0o1777, directory=True), None),
            (_info(name, size=len(content), mode=0o755), content),
        ]
    )
    layer_gz = gzip.compress(layer_tar, compresslevel=9, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    layer_digest, _ = _blob(layer_gz)
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [f"/{name}"], "Env": ["PATH=/"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if user:
        config["config"]["User"] = user  # type: ignore[index]
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest, _ = _blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(layer_gz),
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest, _ = _blob(manifest_bytes)
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("blobs/", mode=0o755, directory=True), None),
        (_info("blobs/sha256/", mode=0o755, directory=True), None),
    ]
    for data in (layer_gz, config_bytes, manifest_bytes):
        digest = hashlib.sha256(data).hexdigest()
        entries.append((_info(f"blobs/sha256/{digest}", size=len(data)), data))
    layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    index_bytes = json.dumps(index, sort_keys=True, indent=2).encode()
    entries.append((_info("oci-layout", size=len(layout)), layout))
    entries.append((_info("index.json", size=len(index_bytes)), index_bytes))
    return _tar(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--ref", required=True, help="image name, e.g. localhost/modeldepot/pause:TAG")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--user", default=None, help="the image's default user, e.g. 65532:65532")
    args = parser.parse_args(argv)
    args.out.write_bytes(build(args.binary, args.ref, args.user))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
