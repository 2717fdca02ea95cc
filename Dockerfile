# syntax=docker/dockerfile:1
# rotator: slim, non-root image running `rotator run` (docs/OPERATIONS.md).

# --- builder: install the project and its dependencies into a venv ----------
FROM python:3.12-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotator ./rotator
COPY providers ./providers

RUN python -m venv /opt/rotator/venv \
    && /opt/rotator/venv/bin/pip install --no-cache-dir /src

# --- final: only the venv on top of the same base image ---------------------
FROM python:3.12-slim-bookworm

# A fixed UID/GID, so Kubernetes runAsNonRoot and volume ownership can name it.
RUN groupadd --system --gid 10001 rotator \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rotator \
       --create-home --shell /usr/sbin/nologin rotator \
    && mkdir -p /etc/rotator/credentials.d

COPY --from=builder /opt/rotator/venv /opt/rotator/venv

ENV PATH=/opt/rotator/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROTATOR_CONFIG_DIR=/etc/rotator/credentials.d \
    ROTATOR_METRICS_ADDR=0.0.0.0:9464 \
    ROTATOR_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/rotator
EXPOSE 9464

# The slim image has no curl: probe /healthz with the venv's Python. A
# wildcard listen address is probed on loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; h, _, p = os.environ['ROTATOR_METRICS_ADDR'].rpartition(':'); h = h.strip('[]'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h = f'[{h}]' if ':' in h else h; urllib.request.urlopen(f'http://{h}:{p}/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["rotator"]
CMD ["run"]
