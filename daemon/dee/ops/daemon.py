"""`dee run` and `dee ingress`: the long-running processes. uvloop, signals, graceful drain, the
metrics and probe server, and the HTTP ingress (its own process, or inside `dee run`).

SIGTERM or SIGINT drains: the ingress stops taking requests and finishes those in progress,
workers finish the iteration in progress, leases are handed back (so another instance takes
over at once instead of after the TTL), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from dee.backends.daemon import DaemonBackend
from dee.checkpoint.periodic import checkpoint_loop
from dee.config import EngineConfig
from dee.engine import Engine
from dee.ingress.app import serve_ingress
from dee.ingress.server import Served
from dee.ops import gc_tuning
from dee.ops.http import serve

log = logging.getLogger("dee.ops.daemon")


async def serve_until_signalled(config: EngineConfig, *, scheduler: bool = True, ingress: bool | None = None) -> int:
    """`scheduler`: own partitions (`dee run`) or be a client (`dee ingress`); `ingress`: serve
    the HTTP ingress too (default: `ingress.enabled`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Engine(config, scheduler=scheduler) as engine:
        backend = engine._backend
        assert isinstance(backend, DaemonBackend), "a daemon serves a PostgreSQL deployment (the commands refuse memory://)"
        servers: list[Served] = []
        checkpoints = asyncio.create_task(checkpoint_loop(config)) if scheduler and config.audit.checkpoint_interval_s else None
        try:
            if config.metrics.enabled:
                servers.append(await serve(config.metrics.host, config.metrics.port, backend.metrics, backend.ready))
            if config.ingress.enabled if ingress is None else ingress:
                servers.append(await serve_ingress(engine, backend.config, backend.metrics))
                log.info("ingress listening on %s:%s (public %s)", config.ingress.host, servers[-1].port, config.ingress.public_url)
            if backend.runtime is not None:
                log.info("dee daemon %s up; partitions %s", backend.runtime.instance, backend.runtime.owned)
            await stop.wait()
            log.info("draining")
        finally:
            if checkpoints is not None:
                checkpoints.cancel()
            for server in reversed(servers):
                await server.close()
    log.info("stopped")
    return 0


def run(config: EngineConfig, *, scheduler: bool = True, ingress: bool | None = None) -> int:
    """Run until SIGTERM or SIGINT (logging is set up by the caller: `dee run`, `dee ingress`)."""
    gc_tuning.tune()
    return uvloop.run(serve_until_signalled(config, scheduler=scheduler, ingress=ingress))
