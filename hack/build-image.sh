#!/usr/bin/env bash
# `make image`: builds the image from the project's own Dockerfile (the file users build with docker)
# with buildah, offline from any container registry, and exports it as an OCI archive:
#
#   1. a Python base image: Debian bookworm minbase + python3, python3-venv, python3-pip,
#      python-is-python3, ca-certificates, built with debootstrap from the Debian mirror this machine
#      uses and imported into buildah's private storage (vfs driver) as localhost/modeldepot-python;
#      rebuilt only when its inputs (suite, mirror, packages, debootstrap version) change;
#   2. `buildah build` of ./Dockerfile with PYTHON_IMAGE set to that base, runc as the runtime (crun
#      fails on hybrid cgroup hosts) and the host's CA bundle bind-mounted for the build only (HTTPS
#      to PyPI may be re-signed here); the image must not contain that bundle, which is checked;
#   3. a smoke test under runc: read-only root, uid/gid 65532, no capabilities, /tmp a tmpfs (as the
#      chart runs it): `modeldepot --version` and `modeldepot fetch --help`;
#   4. `buildah push` to $CACHE/image/modeldepot-<version>.oci.tar, named
#      ghcr.io/modeldepot/modeldepot:<version> (the chart's default image).
#
# Steps 2-4 run only when the content hash of the build context (operator/, pyproject.toml,
# README.md, requirements.lock, Dockerfile, .dockerignore) or the base changed. Everything lives under
# $CACHE/image; no container or mount is left behind. Prints the image id on stdout.
#
#   hack/build-image.sh           build if needed (what `make image` runs)
#   hack/build-image.sh verify    re-run the smoke test on the built image
#   hack/build-image.sh clean     delete the storage and archives under $CACHE/image
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MODELDEPOT_CACHE:-$HOME/.cache/modeldepot}"
DIR="$CACHE/image"
SUITE="${DEBIAN_SUITE:-bookworm}"
BASE_PACKAGES="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
BASE_RECIPE=1   # bump when the way the base is assembled below changes
REPO="ghcr.io/modeldepot/modeldepot"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
STORAGE=(--root "$DIR/storage" --runroot "$DIR/run" --storage-driver vfs)
TOOLS=(buildah debootstrap runc)   # Debian packages, each providing the command of the same name

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
bah() { buildah "${STORAGE[@]}" "$@"; }
sha() { sha256sum | cut -c1-64; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, buildah with the vfs driver, runc)"

ensure_tools() {
  local missing=() t
  for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} from Debian (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  for t in "${missing[@]}"; do command -v "$t" >/dev/null || die "apt-get installed $t but there is no $t command"; done
}

# The Debian mirror apt uses here (deb822 .sources or one-line sources.list), not the security one.
debian_mirror() {
  [ -n "${DEBIAN_MIRROR:-}" ] && { echo "$DEBIAN_MIRROR"; return; }
  python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if suite in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                print(fields["URIs"].split()[0]); sys.exit(0)
    else:
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if m and m.group(2) == suite:
                print(m.group(1)); sys.exit(0)
print("http://deb.debian.org/debian")
PY
}

# Unmount anything still mounted below a directory (an interrupted debootstrap leaves /proc, /sys).
umount_below() {
  local m
  { findmnt -rn -o TARGET | grep -E "^$1(/|$)" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
}

cleanup() {
  local c
  for c in $(bah containers -q 2>/dev/null); do bah umount "$c" >/dev/null 2>&1 || true; bah rm "$c" >/dev/null 2>&1 || true; done
  [ -n "${BUNDLE:-}" ] && { runc delete --force "${CTR_ID:-}" >/dev/null 2>&1 || true; rm -rf "$BUNDLE"; }
  umount_below "$DIR"
}

# ------------------------------------------------------------------------------------------ base
build_base() {
  local mirror version key tag rootfs
  mirror=$(debian_mirror)
  version=$(dpkg-query -W -f '${Version}' debootstrap)
  key=$(printf '%s\n' "$SUITE" "$mirror" "$BASE_PACKAGES" "debootstrap $version" "recipe $BASE_RECIPE" | sha | cut -c1-12)
  tag="localhost/modeldepot-python:$SUITE-$key"
  BASE_IMAGE=$tag
  if bah inspect --type image "$tag" >/dev/null 2>&1; then
    log "base $tag: cached"
    return
  fi
  local t=$SECONDS
  rootfs="$DIR/base/rootfs"
  umount_below "$DIR/base"
  rm -rf "$DIR/base"
  mkdir -p "$DIR/base"
  log "base: debootstrap $SUITE (minbase + $BASE_PACKAGES) from $mirror"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    > "$DIR/base/debootstrap.log" 2>&1 || { tail -20 "$DIR/base/debootstrap.log" >&2; die "debootstrap failed (log: $DIR/base/debootstrap.log)"; }
  umount_below "$rootfs"
  # What a container runtime provides, or a build leftover: not part of an image.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname "$rootfs"/etc/machine-id
  : > "$rootfs/etc/machine-id"
  # The bundle is Debian's own (update-ca-certificates in the chroot), never the host's.
  if cmp -s "$rootfs/etc/ssl/certs/ca-certificates.crt" "$HOST_CA"; then
    log "note: the host's CA bundle equals Debian's stock bundle"
  fi
  log "base: importing into buildah storage as $tag"
  local ctr mnt
  ctr=$(bah from --pull=never scratch)
  mnt=$(bah mount "$ctr")
  tar -C "$rootfs" --numeric-owner --xattrs -cf - . | tar -C "$mnt" --numeric-owner --xattrs -xpf -
  bah umount "$ctr" >/dev/null
  bah config --os linux --arch "$(dpkg --print-architecture)" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --created-by "hack/build-image.sh: debootstrap $SUITE minbase + $BASE_PACKAGES" \
    --label org.opencontainers.image.title=modeldepot-python \
    --label "org.opencontainers.image.description=Debian $SUITE minbase + $BASE_PACKAGES ($mirror)" "$ctr"
  bah commit --rm --quiet "$ctr" "$tag" >/dev/null
  rm -rf "$DIR/base"
  log "base $tag built in $((SECONDS - t))s"
}

# ------------------------------------------------------------------------------------------ image
context_files() {  # the build context per .dockerignore, plus the Dockerfile and .dockerignore
  printf '%s\n' pyproject.toml README.md requirements.lock Dockerfile .dockerignore
  find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' | LC_ALL=C sort
}

context_hash() {  # in the current directory
  context_files | while read -r f; do printf '%s %s\n' "$(sha256sum < "$f" | cut -c1-64)" "$f"; done | sha
}

# A snapshot of the context to build from: edits to the work tree during a build change neither the
# image nor its stamp (the next `make image` sees them and rebuilds).
snapshot_context() {
  rm -rf "$DIR/context"
  mkdir -p "$DIR/context"
  context_files | tar -cf - --files-from=- | tar -C "$DIR/context" -xf -
}

project_version() {
  python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'
}

image_id() { bah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null; }

build_image() {
  local version hash stamp archive name id old_hash="" old_id=""
  version=$(project_version)
  name="$REPO:$version"
  archive="$DIR/modeldepot-$version.oci.tar"
  stamp="$DIR/modeldepot-$version.stamp"
  hash=$(printf '%s %s\n' "$(context_hash)" "$BASE_IMAGE" | sha)
  if [ -f "$stamp" ] && [ -f "$archive" ]; then
    read -r old_hash old_id < "$stamp" || true
    if [ "$old_hash" = "$hash" ] && [ "$(image_id "$name")" = "$old_id" ]; then
      log "$name: up to date (context $hash), $archive"
      echo "$old_id"
      return
    fi
  fi
  local t=$SECONDS
  snapshot_context
  hash=$(printf '%s %s\n' "$(cd "$DIR/context" && context_hash)" "$BASE_IMAGE" | sha)
  log "$name: buildah build of ./Dockerfile on $BASE_IMAGE (runc, host CA bundle mounted for the build only)"
  # No --layers: buildah 1.28 reuses a cached `RUN --mount=type=bind,from=build` step although the
  # build stage changed (the final image kept the old wheel). Without layers each stage runs in one
  # container and is committed once, which is also faster on the vfs driver.
  bah build --runtime "$(command -v runc)" --pull=never --network host --layers=false --force-rm \
    --volume "$HOST_CA:/etc/ssl/certs/ca-certificates.crt:ro" \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version" \
    --tag "$name" --file "$DIR/context/Dockerfile" "$DIR/context" >&2
  id=$(image_id "$name")
  log "$name: built in $((SECONDS - t))s, image id $id"
  verify "$name" "$BASE_IMAGE" "$DIR/context"
  log "$name: exporting $archive"
  rm -f "$archive.tmp"
  bah push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
  mv "$archive.tmp" "$archive"
  # earlier builds, now untagged (everything in this storage is ours; the base stays tagged)
  bah rmi --prune >/dev/null 2>&1 || true
  rm -rf "$DIR/context"
  echo "$hash $id" > "$stamp"
  local manifest
  manifest=$(tar -xOf "$archive" index.json | python3 -c 'import json, sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')
  log "$name: done in $((SECONDS - t))s; $(bah images --format '{{.Size}}' "$name") uncompressed," \
    "$(du -h "$archive" | cut -f1) archive (manifest $manifest)"
  echo "$id"
}

# Run the image under runc as the chart runs it: read-only root, uid/gid 65532, no capabilities,
# no new privileges, a tmpfs /tmp. Also: the image carries Debian's CA bundle, not the host's.
verify() {
  local name=$1 base=${2:-} src=${3:-.} ctr mnt
  ctr=$(bah from --pull=never "$name")
  mnt=$(bah mount "$ctr")
  local bundle_sum
  bundle_sum=$(sha < "$mnt/etc/ssl/certs/ca-certificates.crt")
  if ! cmp -s "$HOST_CA" "$mnt/etc/ssl/certs/ca-certificates.crt"; then
    log "verify: the image's CA bundle is not the host's (${bundle_sum:0:12})"
  elif [ -n "$base" ]; then
    local bctr bmnt same
    bctr=$(bah from --pull=never "$base"); bmnt=$(bah mount "$bctr")
    cmp -s "$bmnt/etc/ssl/certs/ca-certificates.crt" "$mnt/etc/ssl/certs/ca-certificates.crt" && same=1 || same=0
    bah umount "$bctr" >/dev/null; bah rm "$bctr" >/dev/null
    [ "$same" = 1 ] || die "the image contains the host's CA bundle"
    log "verify: the image's CA bundle is the base's (the host's is the same file)"
  else
    die "the image's CA bundle is the host's"
  fi
  # the package in the image is the one in operator/ (not a stale cached layer)
  local site
  site=$(echo "$mnt"/opt/modeldepot/lib/python3*/site-packages/modeldepot)
  diff -rq -x __pycache__ -x '*.pyc' "$src/operator/modeldepot" "$site" >&2 \
    || die "verify: the image's modeldepot package differs from $src/operator/modeldepot"
  log "verify: the image's modeldepot package is the one it was built from"
  BUNDLE="$DIR/verify-bundle"; CTR_ID="modeldepot-verify-$$"
  rm -rf "$BUNDLE"; mkdir -p "$BUNDLE"
  local config
  config=$(bah inspect --type image "$name" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"]))')
  run_in() {
    python3 - "$BUNDLE" "$mnt" "$config" "$@" <<'PY'
import json, sys
bundle, rootfs, image_config, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
spec = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 65532, "gid": 65532},
        "args": (image_config.get("Entrypoint") or []) + args,
        "env": image_config.get("Env") or [],
        "cwd": image_config.get("WorkingDir") or "/",
        "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "noNewPrivileges": True,
    },
    "root": {"path": rootfs, "readonly": True},
    "hostname": "modeldepot-verify",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
    ],
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
json.dump(spec, open(f"{bundle}/config.json", "w"), indent=1)
PY
    runc run --bundle "$BUNDLE" "$CTR_ID"
  }
  local out
  out=$(run_in --version) || die "verify: modeldepot --version failed under runc (read-only root, uid 65532)"
  log "verify: \`modeldepot --version\` as uid 65532 on a read-only root: $out"
  out=$(run_in fetch --help) || die "verify: modeldepot fetch --help failed under runc"
  log "verify: \`modeldepot fetch --help\` ok ($(printf '%s\n' "$out" | wc -l) lines)"
  out=$(run_in prepare --help) || die "verify: modeldepot prepare --help failed under runc"
  # uid check and the read-only root, from inside (python of the venv, no shell needed)
  python3 - "$BUNDLE/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["python", "-c",
    "import os; f='/opt/modeldepot/x'\n"
    "try:\n open(f,'w')\nexcept OSError as e: print(os.getuid(), os.getgid(), e.errno)\n"
    "else: print(os.getuid(), os.getgid(), 'WRITABLE')"]
json.dump(c, open(p, "w"))
PY
  out=$(runc run --bundle "$BUNDLE" "$CTR_ID") || die "verify: python in the image failed under runc"
  [ "$out" = "65532 65532 30" ] || die "verify: expected uid/gid 65532 and EROFS on the root, got: $out"
  log "verify: uid/gid 65532, root filesystem read-only (EROFS)"
  rm -rf "$BUNDLE"; BUNDLE=""
  bah umount "$ctr" >/dev/null; bah rm "$ctr" >/dev/null
}

# ------------------------------------------------------------------------------------------ main
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock -n 9 || { log "another build holds $DIR/.lock; waiting"; flock 9; }
ensure_tools
trap cleanup EXIT
cleanup   # containers or mounts an interrupted run left in our private storage
case "${1:-build}" in
  build)
    started=$SECONDS
    build_base
    build_image
    log "total $((SECONDS - started))s"
    ;;
  verify)
    version=$(project_version)
    id=$(image_id "$REPO:$version") || die "no image $REPO:$version: run make image"
    verify "$REPO:$version"
    echo "$id"
    ;;
  clean)
    trap - EXIT
    cleanup
    rm -rf "$DIR"
    log "removed $DIR"
    ;;
  *) die "usage: $0 [build|verify|clean]" ;;
esac
