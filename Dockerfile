# One image for every meterflow process. The entrypoint is `meterflow` and the role is the
# command: `ingest`, `aggregator`, `alerts`, `migrate`, `topics`, `maintenance`, `accounts ...`.
# `meterflow up` (the local launcher, which needs Java and Maven) is not meant to run here.
#
#   docker build -t meterflow:0.1.0 .
#   docker run --rm -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... meterflow:0.1.0 ingest

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: install meterflow and its dependencies into a virtualenv that is copied whole.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meterflow ./meterflow
COPY ingest ./ingest
COPY aggregator ./aggregator
COPY deploy ./deploy
COPY sql ./sql
RUN python -m venv /opt/meterflow \
    && /opt/meterflow/bin/pip install --no-cache-dir /src

# Runtime stage: the virtualenv and an unprivileged user, nothing else.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 meterflow \
    && useradd --system --uid 10001 --gid meterflow --home-dir /var/lib/meterflow \
        --create-home --shell /usr/sbin/nologin meterflow
COPY --from=build /opt/meterflow /opt/meterflow
# Listen on every interface of the container (the default, 127.0.0.1, suits a laptop only).
ENV PATH=/opt/meterflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    METERFLOW_HTTP_HOST=0.0.0.0 \
    METERFLOW_DATA_DIR=/var/lib/meterflow
USER 10001:10001
WORKDIR /var/lib/meterflow
# 8080: the API (ingest); 8081: aggregator metrics and health; 8082: alerts metrics and health.
EXPOSE 8080 8081 8082
ENTRYPOINT ["meterflow"]
CMD ["ingest"]
