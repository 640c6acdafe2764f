"""`dee run`: the daemon process. uvloop, signals, graceful drain, the metrics server.

SIGTERM or SIGINT drains: workers finish the iteration in progress, leases are handed back
(so another instance takes over at once instead of after the TTL), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from dee.backends.daemon import DaemonBackend
from dee.config import EngineConfig
from dee.engine import Engine
from dee.ops import gc_tuning
from dee.ops.http import serve

log = logging.getLogger("dee.ops.daemon")


async def serve_until_signalled(config: EngineConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Engine(config, scheduler=True) as engine:
        backend = engine._backend
        assert isinstance(backend, DaemonBackend), "dee run serves a PostgreSQL deployment (cmd_run refuses memory://)"
        server = None
        if config.metrics.enabled:
            server = await serve(config.metrics.host, config.metrics.port, backend.metrics, backend.ready)
        runtime = backend.runtime
        log.info("dee daemon %s up; partitions %s", runtime.instance, runtime.owned)
        await stop.wait()
        log.info("draining")
        if server is not None:
            server.close()
    log.info("stopped")
    return 0


def run(config: EngineConfig) -> int:
    """Run the daemon until SIGTERM or SIGINT (logging is set up by the caller: `dee run`)."""
    gc_tuning.tune()
    return uvloop.run(serve_until_signalled(config))
