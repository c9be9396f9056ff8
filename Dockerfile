# dispatchd: the daemon image. Build: `docker build -t dispatchd .`; compose.yaml runs it
# with Valkey, Prometheus and Grafana.
#
# Two stages: the first builds and installs the package (hatchling from PyPI), the second
# copies only the installed files into a clean slim image and runs as a non-root user.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dispatchd ./dispatchd
COPY admin ./admin
COPY lua ./lua
RUN pip install --no-cache-dir --disable-pip-version-check --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home dispatchd

# Listen on every interface of the container (the defaults are loopback only). Without
# DISPATCHD_REDIS_URL the daemon runs its bundled Valkey with its data in /data.
ENV PYTHONUNBUFFERED=1 \
    DISPATCHD_ADMIN_HOST=0.0.0.0 \
    DISPATCHD_ADMIN_PORT=8080 \
    DISPATCHD_METRICS_HOST=0.0.0.0 \
    DISPATCHD_METRICS_PORT=9464 \
    DISPATCHD_DATA_DIR=/data

USER dispatchd
WORKDIR /data
VOLUME ["/data"]
# 8080: admin HTTP API; 9464: /metrics, /healthz, /readyz
EXPOSE 8080 9464

# Liveness through /healthz (the slim image has no curl). Readiness (/readyz) is for
# orchestrators that route traffic; a Redis outage must not restart the daemon.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DISPATCHD_METRICS_PORT', '9464') + '/healthz', timeout=2)"]

# SIGTERM stops the daemon cleanly (it drains in-flight batches for shutdown_grace_s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["dispatchd"]
CMD ["run"]
