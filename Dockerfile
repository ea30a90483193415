# ioswarm coordinator / agent image. Build: docker build -t ioswarm .
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 ioswarm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ioswarm ./ioswarm
COPY cmd ./cmd
COPY protos ./protos
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER ioswarm
VOLUME ["/data"]
ENV IOSWARM_DATA_DIR=/data
# 14689: agent gRPC, 14690: HTTP API (stats, /metrics, dashboard)
EXPOSE 14689 14690
ENTRYPOINT ["ioswarm"]
CMD ["coordinator", "--config", "/etc/ioswarm/config.yaml"]
