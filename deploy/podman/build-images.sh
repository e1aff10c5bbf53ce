#!/usr/bin/env bash
# Build every image docker-compose.yml runs, with podman, on a host that cannot pull from a
# container registry (docs/deploy.md, "Podman without a registry"):
#
#   1. the Python base: the Dockerfiles' official python:3.11.7-slim-bookworm when it is present
#      or can be pulled, else a Debian bookworm base made from Debian's packages (mmdebstrap,
#      podman import) with the host's CA bundle, so pip inside the builds trusts what the host
#      trusts;
#   2. the pipeline and serving images from the project's Dockerfiles, unchanged (the base as
#      their PYTHON_IMAGE build argument), in Docker's image format so that the serving image
#      keeps its HEALTHCHECK (podman's default OCI format has none);
#   3. stand-ins for prom/prometheus and prom/alertmanager from Debian's prometheus and
#      prometheus-alertmanager packages (deploy/podman/compose.standins.yml names them), and
#      for the teams set-up's postgres from Debian's postgresql-15
#      (deploy/podman/compose.teams-standins.yml).
#
# Grafana has no Debian package and no stand-in: start the other services by name.
# Usage: deploy/podman/build-images.sh   (from anywhere; root, as podman runs here)
# Prints the images it built and their sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"

TAG="${PLUMBLINE_TAG:-0.1.0}"
OFFICIAL_BASE="python:3.11.7-slim-bookworm"
DEBIAN_BASE="localhost/plumbline-debian-python:bookworm"
SUITE=bookworm
# Builds reach PyPI and Debian's mirror through the host's network (no registry needed).
BUILD=(podman build --quiet --format docker --network host)

if podman image exists "$OFFICIAL_BASE" || podman pull --quiet "docker.io/library/$OFFICIAL_BASE" \
  >/dev/null 2>&1; then
  base="$OFFICIAL_BASE"
else
  base="$DEBIAN_BASE"
  if ! podman image exists "$DEBIAN_BASE"; then
    echo "no registry: building $DEBIAN_BASE from Debian $SUITE packages" >&2
    # As Debian's official images: apt keeps no package lists or caches in the layers built on
    # this base (deploy/podman/docker-clean is their /etc/apt/apt.conf.d/docker-clean).
    # python-is-python3: the Dockerfiles call `python`, as on the official image.
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      --customize-hook='upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      --customize-hook="upload deploy/podman/docker-clean /etc/apt/apt.conf.d/docker-clean" \
      "$SUITE" - | podman import --quiet --change 'CMD ["python3"]' - "$DEBIAN_BASE" >/dev/null
  fi
fi
echo "Python base: $base" >&2

# The commit the pipeline image records for its runs (it holds no git history); -dirty when a
# tracked file differs from it, as the pipeline itself says in a checkout.
commit="$(git rev-parse HEAD 2>/dev/null || true)"
if [ -n "$commit" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
# --no-cache: podman 4.3's layer cache keys ENV by its unexpanded text, so a cached
# `ENV PLUMBLINE_GIT_COMMIT=${GIT_COMMIT}` keeps the commit of an earlier build.
"${BUILD[@]}" --no-cache --build-arg "PYTHON_IMAGE=$base" --build-arg "GIT_COMMIT=$commit" \
  -t "plumbline-pipeline:$TAG" -f Dockerfile . >/dev/null
"${BUILD[@]}" --build-arg "PYTHON_IMAGE=$base" -t "plumbline-serve:$TAG" -f serve/Dockerfile . \
  >/dev/null
# The stand-ins only need Debian; the Debian base has no Python to spare, but one base keeps
# the download once.
"${BUILD[@]}" --build-arg "BASE=$base" -t localhost/plumbline-prometheus:debian \
  -f deploy/podman/Containerfile.prometheus deploy/podman >/dev/null
"${BUILD[@]}" --build-arg "BASE=$base" -t localhost/plumbline-alertmanager:debian \
  -f deploy/podman/Containerfile.alertmanager deploy/podman >/dev/null
"${BUILD[@]}" --build-arg "BASE=$base" -t localhost/plumbline-postgres:debian \
  -f deploy/podman/Containerfile.postgres deploy/podman >/dev/null

podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E "plumbline-(pipeline|serve):$TAG|plumbline-(prometheus|alertmanager|postgres):debian"
