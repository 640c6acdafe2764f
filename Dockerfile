# DEE image: `docker build -t dee .`, then `docker run dee run` (see docker-compose.yml).
# Everything Python installs comes from uv.lock (`uv sync --locked`); the base image and uv are
# pinned (UV_VERSION is the uv that uv.lock pins, as in the Makefile; a test holds them equal).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/dee UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# dependencies first: this layer is rebuilt only when the lock changes
COPY pyproject.toml uv.lock README.md LICENSE ./
RUN uv sync --locked --no-install-project --no-dev
COPY daemon daemon
COPY plugins plugins
# the project itself, not editable (the runtime stage has no /src), and the starter project
RUN uv sync --locked --no-editable --no-dev \
    && /opt/dee/bin/dee init /opt/dee-project

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dee" \
      org.opencontainers.image.description="DEE, the Deterministic Execution Engine" \
      org.opencontainers.image.licenses="Apache-2.0"
# a numeric, unprivileged user; the venv and the project stay root's (read-only to the daemon)
RUN groupadd --system --gid 10001 dee && useradd --system --uid 10001 --gid 10001 --no-create-home dee
COPY --from=build /opt/dee /opt/dee
COPY --from=build /opt/dee-project /app
ENV PATH=/opt/dee/bin:$PATH PYTHONUNBUFFERED=1 DEE_CONFIG=/app/dee.toml \
    DEE_METRICS_HOST=0.0.0.0 DEE_INGRESS_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 9464 8080
# alive: the metrics server answers (docker-compose.yml asks /readyz: storage answers too)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["dee"]
CMD ["run"]
