"""The daemon's HTTP endpoints: `/metrics`, `/healthz` (the process is alive) and `/readyz`
(it owns partitions or is a pure client, and its storage answers), on the ingress's bounded
server: a flood of idle connections cannot take the probes down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dee.ingress.server import Limits, Served
from dee.ingress.server import serve as serve_app
from dee.metrics import Metrics

# probes and scrapes are small and few: a tight cap and short timeouts
PROBE_LIMITS = Limits(max_connections=256, request_timeout_s=5.0, keepalive_timeout_s=10.0, max_body_bytes=4096)


def probe_app(metrics: Metrics, ready: Callable[[], Awaitable[bool]]) -> web.Application:
    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if await ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application(client_max_size=PROBE_LIMITS.max_body_bytes)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(host: str, port: int, metrics: Metrics, ready: Callable[[], Awaitable[bool]]) -> Served:
    """Serve /metrics, /healthz and /readyz (query strings are ignored, as by any server)."""
    return await serve_app(probe_app(metrics, ready), host, port, PROBE_LIMITS)
