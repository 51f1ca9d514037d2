# lm-gateway container image: a virtualenv built in one stage, copied into a clean slim Python.
#
#   docker build -t lm-gateway .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 -e LMG_ADMIN_TOKEN=change-me --read-only lm-gateway
#
# Runs as a non-root user, writes nothing (works with a read-only root filesystem), and reads its
# config from /etc/lm-gateway/config.toml (deploy/container.toml; mount yours over it). All cores:
# `docker run ... lm-gateway serve --workers 2`, or -e LMG_WORKERS=auto. See the README, "Deployment".
# tests/test_deploy_docker.py runs this file's CMD with its ENV from a plain install, and hadolint.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The runtime dependencies are wheels for this platform (no compiler needed); pip compiles the .pyc
# files here, since nothing can write them at run time. The redis extra (redis-py, hiredis) lets the same
# image scale out behind a load balancer ([gateway] redis_url); it is imported only when configured.
RUN python -m venv /opt/lm-gateway \
    && /opt/lm-gateway/bin/pip install --no-cache-dir '.[redis]' \
    && /opt/lm-gateway/bin/lm-gateway --version

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 lm-gateway \
    && useradd --system --uid 10001 --gid lm-gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin lm-gateway
COPY --from=build /opt/lm-gateway /opt/lm-gateway
COPY deploy/container.toml /etc/lm-gateway/config.toml
ENV PATH=/opt/lm-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LMG_CONFIG=/etc/lm-gateway/config.toml
USER 10001:10001
EXPOSE 8080 8081
# GETs /healthz on 127.0.0.1:$LMG_CLIENT_PORT (default 8080), stdlib only, no config load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["lm-gateway", "--healthcheck"]
# SIGTERM (docker stop) drains in-flight requests and streams (drain_timeout_ms, default 10 s):
# give `docker stop` more than that (-t 15), and compose a stop_grace_period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lm-gateway"]
CMD ["serve"]
