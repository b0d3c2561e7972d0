#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules, once, into a cache outside the repo:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd and helm.
# With --real-node (opt-in) also what a real node needs (see localdev.realnode): kubelet,
# containerd 2.x with its runc shim and ctr, and two tiny OCI images built offline (pause, probe);
# runc, the CNI plugins and iptables come from Debian packages, installed if missing.
# A second run with the cache present rebuilds nothing.
set -euo pipefail

REAL_NODE=0
for arg in "$@"; do
  case "$arg" in
    --real-node) REAL_NODE=1 ;;
    *) echo "usage: $0 [--real-node]" >&2; exit 2 ;;
  esac
done

K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-2.4.2}"
CACHE="${MODELDEPOT_CACHE:-$HOME/.cache/modeldepot}"
BIN="$CACHE/k8s/v$K8S_VERSION/bin"
IMAGES="$CACHE/k8s/v$K8S_VERSION/images"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$BIN"
started=$SECONDS

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler) missing=() b
  [ "$REAL_NODE" = 1 ] && wanted+=(kubelet)
  for b in "${wanted[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && { log "kubernetes v$K8S_VERSION: cached in $BIN"; return; }
  local work="$CACHE/k8s/v$K8S_VERSION/wrapper"
  mkdir -p "$work"
  log "kubernetes v$K8S_VERSION: downloading the module (this is large)"
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local minor="0.${K8S_VERSION#1.}"
  {
    echo "module modeldepot.dev/k8s-wrapper"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    # every staging module kubernetes replaces with ./staging/src/... is published as v0.Y.Z
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/src/' "$gomod" | awk -v v="v$minor" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$work/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${wanted[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } > "$work/tools.go"
  (cd "$work" && log "resolving dependencies (go mod tidy)" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work" && go mod download)
  local pkg="k8s.io/component-base/version" minor_number="${K8S_VERSION#1.}"
  minor_number="${minor_number%%.*}"
  local ldflags="-s -w -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor_number"
  ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for b in "${missing[@]}"; do
    local t=$SECONDS
    log "building $b (minutes on 2 cores)"
    (cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN/$b.tmp" "$BIN/$b"
    log "built $b in $((SECONDS - t))s"
  done
}

build_simple() {  # name module-version package ldflags
  local name=$1 modver=$2 pkg=$3 ldflags=$4
  [ -x "$BIN/$name" ] && { log "$name: cached in $BIN"; return; }
  local work="$CACHE/k8s/v$K8S_VERSION/wrapper-$name"
  mkdir -p "$work"
  cat > "$work/go.mod" <<MOD
module modeldepot.dev/$name-wrapper

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
MOD
  cat > "$work/tools.go" <<GO
//go:build tools

package tools

import _ "$pkg"
GO
  local t=$SECONDS
  log "$name: fetching ${modver}"
  (cd "$work" && go get "$modver" >/dev/null 2>&1 && go mod tidy -e >/dev/null 2>&1 || true)
  log "building $name"
  (cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  log "built $name in $((SECONDS - t))s"
}

build_containerd() {  # one wrapper module, three binaries
  local wanted=(containerd containerd-shim-runc-v2 ctr) missing=() b
  for b in "${wanted[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && { log "containerd v$CONTAINERD_VERSION: cached in $BIN"; return; }
  local work="$CACHE/k8s/v$K8S_VERSION/wrapper-containerd" mod=github.com/containerd/containerd/v2
  mkdir -p "$work"
  cat > "$work/go.mod" <<MOD
module modeldepot.dev/containerd-wrapper

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
MOD
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${wanted[@]}"; do printf '\t_ "%s/cmd/%s"\n' "$mod" "$b"; done
    printf ')\n'
  } > "$work/tools.go"
  local t=$SECONDS
  log "containerd: fetching $mod@v$CONTAINERD_VERSION"
  (cd "$work" && go get "$mod@v$CONTAINERD_VERSION" >/dev/null 2>&1 && go mod tidy -e >/dev/null 2>&1 || true)
  local ldflags="-s -w -X $mod/version.Version=v$CONTAINERD_VERSION -X $mod/version.Revision=modeldepot-build"
  ldflags="$ldflags -X $mod/version.Package=$mod"
  for b in "${missing[@]}"; do
    log "building $b"
    (cd "$work" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" -ldflags "$ldflags" \
      -o "$BIN/$b.tmp" "$mod/cmd/$b")
    mv "$BIN/$b.tmp" "$BIN/$b"
  done
  log "built containerd v$CONTAINERD_VERSION in $((SECONDS - t))s"
}

build_image() {  # name: hack/images/<name> (a static Go program) -> $IMAGES/<name>.oci.tar
  local name=$1 src="$REPO/hack/images" stamp sum
  sum=$(cat "$src/go.mod" "$src/$name/"*.go "$REPO/hack/localdev/ociarchive.py" | sha256sum | cut -c1-16)
  stamp="$IMAGES/$name.oci.tar.src"
  if [ -f "$IMAGES/$name.oci.tar" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    log "image $name: cached in $IMAGES"; return
  fi
  mkdir -p "$IMAGES"
  local t=$SECONDS tmp
  tmp=$(mktemp -d)
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$tmp/$name" "./$name")
  python3 "$REPO/hack/localdev/ociarchive.py" --binary "$tmp/$name" --ref "localhost/modeldepot/$name:$sum" \
    --out "$IMAGES/$name.oci.tar.tmp"
  mv "$IMAGES/$name.oci.tar.tmp" "$IMAGES/$name.oci.tar"
  echo "$sum" > "$stamp"
  rm -rf "$tmp"
  log "built image $name (localhost/modeldepot/$name:$sum) in $((SECONDS - t))s"
}

install_host_packages() {  # runc, CNI plugins and iptables from Debian, only if missing
  local missing=() p
  for p in runc containernetworking-plugins iptables; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "host packages present: runc containernetworking-plugins iptables"; return; }
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_kubernetes
build_simple etcd "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" go.etcd.io/etcd/server/v3 "-s -w"
build_simple helm "helm.sh/helm/v3@v$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
if [ "$REAL_NODE" = 1 ]; then
  build_containerd
  build_image pause
  build_image probe
  install_host_packages
fi
log "all binaries ready in $BIN ($((SECONDS - started))s)"
echo "$BIN"
