# ioswarm coordinator / agent image. Build from the repository root: docker build -t ioswarm .
# deploy/compose.yaml and deploy/k8s/ run this image; README "Operator guide" shows how.

# --- builder: compile the C speedups (ioswarm/_speedups.c, built by setup.py) into a wheel ---
FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ioswarm ./ioswarm
COPY cmd ./cmd
COPY protos ./protos
# A stale extension from a developer's tree must not slip into the wheel: build it here.
RUN find ioswarm -name '*.so' -delete \
    && pip wheel --no-cache-dir --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-index --find-links /wheels ioswarm \
    && python -c "from ioswarm.core.speedups import NATIVE; assert NATIVE, 'C speedups were not built'"

# --- runtime: no compiler, non-root, a writable /data ---
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ioswarm \
    && mkdir -p /data /etc/ioswarm \
    && chown ioswarm:ioswarm /data
COPY --from=builder /wheels /wheels
# setup.py marks the extension optional, so check it loaded rather than run pure Python silently.
RUN pip install --no-cache-dir --no-index --find-links /wheels ioswarm \
    && rm -rf /wheels /root/.cache \
    && python -c "from ioswarm.core.speedups import NATIVE; assert NATIVE, 'C speedups missing'"

USER ioswarm
WORKDIR /data
# Ledgers and stores; a bind-mounted host directory must be writable by uid 10001.
VOLUME ["/data"]
ENV IOSWARM_DATA_DIR=/data
# 14689: agent gRPC, 14690: HTTP API (stats, /metrics, /healthz, /readyz, dashboard)
EXPOSE 14689 14690
# The coordinator's /readyz (503 while a loop is down; /healthz would be 503 until an agent
# is live). Agents serve no HTTP: their compose/k8s definitions switch this check off.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('IOSWARM_SWARM_API_PORT', '14690') + '/readyz', timeout=4)"]
ENTRYPOINT ["ioswarm"]
CMD ["coordinator", "--config", "/etc/ioswarm/config.yaml"]
