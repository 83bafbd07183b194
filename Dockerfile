# syntax=docker/dockerfile:1
#
# The tradestats worker image.
#
#   docker build -t tradestats:0.1.0 .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 -p 6066:6066 tradestats:0.1.0
#
# Stage "builder" turns the source into wheels: the project's own, then every dependency at
# the version constraints.txt pins. Stage "runtime" installs exactly those wheels, offline,
# into a virtualenv on the same slim base: no compiler, no pip cache, no source tree.
# tests/deploy/test_image_recipe.py replays the builder's RUN steps and the runtime's install
# step (the one that mounts the builder) on the test machine, then runs the installed worker
# against a real broker; tests/compose builds this file with a real Docker engine (no registry
# there: devtools/docker/compose.standins.yml names local stand-ins for the syntax frontend and
# the base image, this file is built as it is) and runs the image in the compose stack.
#
# Base image: the Python 3.11 line the project requires (requires-python = ">=3.11,<3.12"),
# pinned by full patch tag and by the digest of its multi-architecture index, written out in both
# FROM lines (scanners cannot see through an ARG; tests/deploy checks the two are identical).
# Update tag and digest together. (The digest could not be checked against the registry from the
# build machines; see docs/deploy.md.)

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel is built from (.dockerignore allowlists the same). README.md is left out on
# purpose: the image has no use for the package's long description, and a README edit should not
# rebuild the image (setuptools only warns that it is missing).
COPY pyproject.toml constraints.txt ./
COPY tradestats/ tradestats/

# The project wheel (pip wheel = PEP 517 build, like python -m build --wheel), then a wheel of
# every dependency at the pinned versions. pip's cache lives in a BuildKit cache mount, never in
# a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir dist . \
    && python -m pip wheel --constraint constraints.txt --wheel-dir dist dist/tradestats-*.whl


FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS runtime

LABEL org.opencontainers.image.title="tradestats" \
      org.opencontainers.image.description="Live trade statistics over hopping windows: a faust-streaming worker with RocksDB state" \
      org.opencontainers.image.licenses="Apache-2.0"

# DATA_DIR is the one variable the image sets for the application: RocksDB lives under
# $DATA_DIR/v1/tables/, on the volume below. Everything else keeps the defaults of
# tradestats.settings.Settings and is set by the deployment.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/tradestats \
    DATA_DIR=/var/lib/tradestats

# A fixed, non-root uid/gid (10001), no home directory, no login shell. The data directory is
# the only place it owns; /tmp is the only other place it writes (a tmpfs/emptyDir when the root
# filesystem is read-only).
RUN groupadd --system --gid 10001 tradestats \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tradestats \
    && install --directory --owner=10001 --group=10001 --mode=0750 "$DATA_DIR"

# Offline install from the builder's wheels only (--no-index): exactly the pinned set, nothing
# fetched at this point. The venv has no pip of its own; the base image's pip installs into it.
RUN --mount=type=bind,from=builder,source=/src,target=/src \
    python -m venv --without-pip "$VIRTUAL_ENV" \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-cache-dir --no-index \
       --find-links /src/dist --constraint /src/constraints.txt /src/dist/tradestats-*.whl

ENV PATH="/opt/tradestats/bin:${PATH}"

WORKDIR /var/lib/tradestats
VOLUME ["/var/lib/tradestats"]
USER 10001:10001
EXPOSE 6066

# Liveness of the worker from inside the container, with nothing but the image's Python (no
# curl): /health answers 503 when the app crashed or stalled, and urlopen raises on it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('WEB_PORT', '6066'), timeout=4)"]

# SIGTERM (the default stop signal) shuts the worker down gracefully in a few seconds.
ENTRYPOINT ["tradestats"]
CMD ["worker"]
