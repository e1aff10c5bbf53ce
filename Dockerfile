# syntax=docker/dockerfile:1
# The Plumbline pipeline image: the DVC stages, gate and promote, the MLflow tracking server
# and registry, and the monitor. Build from the repository root:
#
#   docker build -t plumbline-pipeline .
#
# One image, three long-running or one-shot commands (see docker-compose.yml):
#
#   mlflow server ...                  tracking server + model registry (port 5000)
#   plumbline bootstrap                one-shot: dvc repro, gate, promote in /workspace
#   plumbline monitor                  feedback, drift and live metrics, retrain trigger (8001)
#
# They share every dependency (the monitor retrains with the pipeline's stages, bootstrap
# talks to the registry the server keeps), so one image serves them; the prediction server has
# its own, smaller image (serve/Dockerfile) without DVC, Great Expectations, matplotlib or the
# MLflow server.
#
# /workspace is the project root (PLUMBLINE_ROOT) and meant to be a volume: bootstrap lays out
# the project files from /opt/plumbline in it and keeps the pipeline's outputs, DVC cache and
# dvc.lock there, so the monitor retrains on the same data and a second run is a no-op.

# Pinned to the patch release the tests run on here; bump it deliberately.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md LICENSE ./
COPY src ./src
COPY serve/slim_venv.py ./serve/slim_venv.py
# binutils: `strip` for slim_venv.py (this stage only).
# Bookworm's 2.40 series, whatever its Debian revision (as git in the pipeline image).
ARG BINUTILS_VERSION=2.40-*
RUN apt-get update \
    && apt-get install -y --no-install-recommends "binutils=${BINUTILS_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
# `stores`: the PostgreSQL driver and S3 clients for MLflow's team set-up and a DVC S3 remote.
# Then pip and setuptools leave the venv, and slim_venv.py takes out test suites, sources and
# headers, Arrow Flight and debug symbols; the bytecode stays (the pipeline starts many
# short-lived processes).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --constraint requirements.lock ".[pipeline,stores]" \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
    && python serve/slim_venv.py /opt/venv

FROM ${PYTHON_IMAGE}
# tini as PID 1: forwards SIGTERM and reaps children (Debian 12's build). git: the monitor's
# retrains commit their inputs in a workspace repository and run DVC there (the image holds
# no git history; see plumbline.monitoring.workspace).
ARG TINI_VERSION=0.19.0-1+b3
# Bookworm's git 2.39 series, whatever its Debian revision: security updates (+deb12uN) install,
# and a different upstream release fails the build loudly instead of changing it quietly. The
# installed version is printed in the build log.
ARG GIT_VERSION=1:2.39.*
# libgomp1: LightGBM's wheel links the system's OpenMP runtime (bookworm's GCC 12 build).
ARG LIBGOMP_VERSION=12.2.0-14*
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" "git=${GIT_VERSION}" \
        "libgomp1=${LIBGOMP_VERSION}" \
    && dpkg-query --show git tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 plumbline \
    && useradd --create-home --uid 10001 --gid 10001 plumbline
COPY --from=build /opt/venv /opt/venv
# The project as checked out; bootstrap copies it into the workspace. src/ too: dvc.yaml
# lists the stages' code as dependencies (the code that runs is the same, installed above).
WORKDIR /opt/plumbline
COPY params.yaml dvc.yaml dvc.lock .dvcignore ./
COPY .dvc/config ./.dvc/config
COPY contracts ./contracts
COPY data/raw ./data/raw
COPY src ./src
# A named volume starts as a copy of the directory it is mounted on, owner included: these
# belong to the unprivileged user, so the services can write their volumes.
RUN mkdir -p /workspace/logs /mlflow/artifacts \
    && chown -R 10001:10001 /workspace /mlflow
# The commit the image is built from (it holds no git history): what the runs and model
# versions bootstrap and the monitor make record as their commit. Empty: none recorded.
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" ...
ARG GIT_COMMIT=""
ENV PATH=/opt/venv/bin:$PATH \
    PLUMBLINE_GIT_COMMIT=${GIT_COMMIT} \
    PLUMBLINE_ROOT=/workspace \
    PLUMBLINE_PROJECT_SOURCE=/opt/plumbline \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /workspace
USER 10001:10001
EXPOSE 5000 8001
# Each command has its own check (docker-compose.yml: MLflow GET /health on 5000, the monitor
# GET /health on 8001; bootstrap is a one-shot), so the image declares none.
HEALTHCHECK NONE
ENTRYPOINT ["tini", "--"]
CMD ["plumbline", "bootstrap"]
