# DEE daemon image: `docker build -t dee .` then `docker run dee run` (see docker-compose.yml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon daemon
COPY plugins plugins
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 dee
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config config
USER dee
EXPOSE 9464
ENTRYPOINT ["dee", "--config", "/app/config/dee.toml"]
CMD ["run"]
