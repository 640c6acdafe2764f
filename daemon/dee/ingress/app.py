"""The ingress application: its routes, and the middleware every request passes through.

    GET  /o/{token}              the open pixel                  -> email.opened
    GET  /c/{token}?u=URL        a tracked link, then 302 to URL -> email.clicked
    GET  /u/{token}              the unsubscribe confirmation page (records nothing)
    POST /u/{token}              RFC 8058 one-click unsubscribe  -> email.unsubscribed
    POST /webhooks/{provider}    sendgrid, mailgun, ses, postmark, standard, a plugin's receiver
    POST /voice/twilio/status    Twilio's call status callbacks  -> call.*
    POST /inbound/email          replies and bounces             -> email.replied, email.bounced
    GET  /healthz                the process is alive

Each request becomes at most one event per thing that happened, answered once the owning
daemon has durably accepted it. Whatever a handler raises, the process stays up: a 500 is
logged with its cause, and the client sees nothing of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from dee.config import EngineConfig
from dee.engine import Engine
from dee.ingress import inbound, links, webhooks
from dee.ingress.context import INGRESS, Ingress, log
from dee.ingress.server import Limits, Served, serve
from dee.metrics import Metrics


def limits_of(config: EngineConfig) -> Limits:
    s = config.ingress
    return Limits(max_connections=s.max_connections, request_timeout_s=s.request_timeout_ms / 1000,
                  keepalive_timeout_s=s.keepalive_timeout_ms / 1000, max_body_bytes=s.max_body_bytes)  # fmt: skip


@web.middleware
async def _answer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Count every answer by route and status; turn anything unexpected into a bare 500."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    metrics = request.app[INGRESS].metrics
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.ingress_requests.labels(route, str(exc.status)).inc()
        raise
    except Exception:
        log.exception("the ingress failed on %s %s", request.method, route)
        metrics.ingress_requests.labels(route, "500").inc()
        raise web.HTTPInternalServerError(text="internal error\n") from None
    metrics.ingress_requests.labels(route, str(response.status)).inc()
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def ingress_app(ingress: Ingress) -> web.Application:
    app = web.Application(middlewares=[_answer], client_max_size=ingress.settings.max_body_bytes)
    app[INGRESS] = ingress
    app.router.add_get("/o/{token}", links.opened, allow_head=False)
    app.router.add_get("/c/{token}", links.clicked, allow_head=False)
    app.router.add_get("/u/{token}", links.unsubscribe_page, allow_head=False)
    app.router.add_post("/u/{token}", links.unsubscribe)
    app.router.add_post("/webhooks/{provider}", webhooks.webhook)
    app.router.add_post("/voice/twilio/status", webhooks.twilio_status)
    app.router.add_post("/inbound/email", inbound.inbound_email)
    app.router.add_get("/healthz", _healthz)

    async def _closed(app: web.Application) -> None:
        ingress.close()

    app.on_cleanup.append(_closed)
    return app


async def serve_ingress(engine: Engine, config: EngineConfig, metrics: Metrics, host: str | None = None,
                        port: int | None = None) -> Served:  # fmt: skip
    """Serve the ingress for a started engine (`host`/`port`: the configured ones unless given)."""
    ingress = Ingress(engine, config, metrics)
    return await serve(
        ingress_app(ingress), config.ingress.host if host is None else host, config.ingress.port if port is None else port,
        limits_of(config), on_refused=metrics.ingress_refused_connections.inc,
    )  # fmt: skip
