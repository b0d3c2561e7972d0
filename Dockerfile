# syntax=docker/dockerfile:1.7
# Model Depot: one image for `modeldepot operator` (the kopf operator), `modeldepot fetch` (the
# download Job), `modeldepot cleanup` (the cleanup Job) and `modeldepot prepare` (the node-local
# fetch Job's init container).
#
#   docker build -t ghcr.io/modeldepot/modeldepot:0.1.0 .
#
# `make image` builds this same file with buildah, on a Debian base built offline and passed as
# PYTHON_IMAGE (hack/build-image.sh). Runtime dependencies come from requirements.lock.
#
# The base is pinned by the multi-platform index digest of python:3.11.13-slim-bookworm (Debian 12).
# No container runs a shell (every one runs `modeldepot ...`), but /bin/sh stays in the image for
# debugging (`kubectl exec`); the final stage checks it is there. Bump tag and digest together, e.g.
# with Renovate or `docker buildx imagetools inspect`.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Wheels of every dependency, exactly as locked: each download is checked against its sha256
# (regenerate the lock with hack/lock-requirements.sh). This layer stays cached until the lock changes.
COPY requirements.lock ./
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock
# Only what the project's wheel needs (see .dockerignore): metadata, then the package. --no-deps: its
# dependencies are the locked wheels above, so the final stage installs offline from /wheels only.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels --no-deps . \
 && ls /wheels

# ---------------------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="modeldepot" \
      org.opencontainers.image.description="Kubernetes operator that stocks nodes and volumes with verified Hugging Face models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/modeldepot/modeldepot"
ENV PATH=/opt/modeldepot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HOME=/tmp
# Install into a venv from the build stage's wheels (bind-mounted: no wheel lands in a layer), then
# drop pip from the venv: nothing installs at run time.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/modeldepot \
 && /opt/modeldepot/bin/pip install --no-cache-dir --no-index --find-links=/wheels modeldepot \
 && /opt/modeldepot/bin/pip uninstall --yes pip \
 && /opt/modeldepot/bin/modeldepot --version \
 && test -x /bin/sh
# The uid/gid every pod of Model Depot runs as (runAsUser 65532 in the chart and the Jobs).
RUN groupadd --system --gid 65532 modeldepot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin modeldepot
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["modeldepot"]
CMD ["operator"]
