#!/usr/bin/env bash
# Regenerates requirements.lock: every runtime dependency of `pip install .` (no dev extras), pinned
# to the version the dev venv (.venv) resolved, with the sha256 of every file PyPI has for that version
# (all platforms, so `docker build` on arm64 verifies too). The Dockerfile installs from it with
# `pip wheel --require-hashes`. Run it after changing dependencies in pyproject.toml and `make venv`:
#
#   bash hack/lock-requirements.sh
#
# uv only computes the lock; it runs from a throwaway venv in the cache, never in .venv or the image.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="${UV_VERSION:-0.13.8}"
CACHE="${MODELDEPOT_CACHE:-$HOME/.cache/modeldepot}"
WORK="$CACHE/lock"
mkdir -p "$WORK"
[ -x .venv/bin/pip ] || { echo "no .venv: run 'make venv' first" >&2; exit 1; }
if ! "$WORK/venv/bin/uv" --version 2>/dev/null | grep -qx "uv $UV_VERSION.*"; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q "uv==$UV_VERSION"
fi
# The dev venv's versions as constraints: the lock is exactly what `make venv` installed.
.venv/bin/pip freeze --exclude-editable > "$WORK/venv-freeze.txt"
"$WORK/venv/bin/uv" pip compile pyproject.toml \
  --universal --python-version 3.11 --generate-hashes \
  --no-header --annotation-style line \
  --constraints "$WORK/venv-freeze.txt" --output-file "$WORK/requirements.lock" >/dev/null
{
  echo "# requirements.lock: the image's runtime dependencies (pyproject.toml without dev extras), exact"
  echo "# versions and sha256 hashes. The Dockerfile builds wheels from it with --require-hashes."
  echo "# Generated from .venv's resolution; regenerate after a dependency change with:"
  echo "#"
  echo "#   make venv && bash hack/lock-requirements.sh"
  echo "#"
  sed "s|-c $WORK/venv-freeze.txt|.venv|g" "$WORK/requirements.lock"
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '^[a-z]' requirements.lock) packages)" >&2
