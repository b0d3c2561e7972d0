#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules, once, into a cache outside the repo:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd and helm.
# A second run with the cache present rebuilds nothing.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
CACHE="${MODELDEPOT_CACHE:-$HOME/.cache/modeldepot}"
BIN="$CACHE/k8s/v$K8S_VERSION/bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$BIN"
started=$SECONDS

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler) missing=() b
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
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
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

build_kubernetes
build_simple etcd "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" go.etcd.io/etcd/server/v3 "-s -w"
build_simple helm "helm.sh/helm/v3@v$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
log "all binaries ready in $BIN ($((SECONDS - started))s)"
echo "$BIN"
