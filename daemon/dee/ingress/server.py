"""An aiohttp server that stays up under abuse: the one HTTP stack of the ingress and of the
daemon's health and metrics endpoints.

What a hostile or merely broken client can do to a plain server, and what stops it here:
- open connections until the process runs out of file descriptors: at `max_connections` the
  oldest connection that is not in the middle of a request is closed to make room (a flood of
  idle connections cannot lock real clients out), and when every one is busy the new one is
  closed as soon as it is accepted (its descriptor is released at once);
- open a connection and send nothing, or trickle its headers a byte at a time: aiohttp closes
  a connection whose request has not arrived within the keep-alive timeout, counted from the
  connection's start;
- trickle the body: handlers read it under `request_timeout` (`read_body`), a 408 past it;
- send a huge body or huge headers: `max_body_bytes` (413) and aiohttp's header limits (400);
- send a compressed body that expands a thousandfold: bodies are not decompressed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from dee.errors import ConfigError

MAX_FIELD_BYTES = 8190  # one header line (aiohttp's default, as most servers)
MAX_HEADERS = 100


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_connections: int = 1024
    request_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_body_bytes: int = 1_048_576


LIMITS = web.AppKey("limits", Limits)


class _Refused(asyncio.Protocol):
    """What a connection over the cap gets: closed at once, before a byte is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _CappedFactory:
    def __init__(self, server: web.Server, cap: int, on_refused: Callable[[], None] | None) -> None:
        self.server = server
        self.cap = cap
        self.refused = 0
        self.on_refused = on_refused
        self.evicted: set[web.RequestHandler] = set()

    def __call__(self) -> asyncio.BaseProtocol:
        current = self.server.connections
        self.evicted.intersection_update(current)  # those whose close has completed are gone
        connections = [c for c in current if c not in self.evicted]  # closing ones do not count
        if len(connections) >= self.cap:
            # oldest first; `_request_in_progress` is aiohttp's own flag (no public one exists)
            idle = next((c for c in connections if not getattr(c, "_request_in_progress", True)), None)
            if idle is not None:
                self.evicted.add(idle)
                idle.force_close()
            else:
                self.refused += 1
                if self.on_refused is not None:
                    self.on_refused()
                return _Refused()
        protocol: asyncio.BaseProtocol = self.server()
        return protocol


class CappedSite(web.BaseSite):
    """A TCP site whose protocol factory refuses connections over the cap."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, cap: int, on_refused: Callable[[], None] | None) -> None:
        super().__init__(runner, backlog=min(1024, cap))
        self._host, self._port, self.cap, self.on_refused = host, port, cap, on_refused
        self.factory: _CappedFactory | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        sockets = self._server.sockets if isinstance(self._server, asyncio.Server) else ()
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.factory = _CappedFactory(server, self.cap, self.on_refused)
        self._server = await asyncio.get_running_loop().create_server(
            self.factory, self._host, self._port, backlog=self._backlog, reuse_address=True,
            family=socket.AF_INET6 if ":" in self._host else socket.AF_INET,
        )  # fmt: skip


class Served:
    """A running server: its port (useful with port 0) and how to stop it."""

    def __init__(self, runner: web.AppRunner, site: CappedSite) -> None:
        self.runner = runner
        self.site = site

    @property
    def port(self) -> int:
        return self.site.port

    @property
    def refused(self) -> int:
        """Connections closed because the cap was reached."""
        return self.site.factory.refused if self.site.factory else 0

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    app: web.Application, host: str, port: int, limits: Limits, on_refused: Callable[[], None] | None = None
) -> Served:
    """Start serving `app` within `limits`."""
    app[LIMITS] = limits
    handler: dict[str, Any] = {
        "max_field_size": MAX_FIELD_BYTES, "max_line_size": MAX_FIELD_BYTES, "max_headers": MAX_HEADERS,
        "auto_decompress": False, "lingering_time": 1.0,
    }  # fmt: skip
    runner = web.AppRunner(app, keepalive_timeout=limits.keepalive_timeout_s, access_log=None, handle_signals=False,
                           shutdown_timeout=2.0, **handler)  # fmt: skip
    await runner.setup()
    site = CappedSite(runner, host, port, limits.max_connections, on_refused)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return Served(runner, site)


async def read_body(request: web.Request, max_bytes: int | None = None) -> bytes:
    """The request's body, read within the request timeout (408 past it) and at most
    `max_bytes` (the server's `max_body_bytes` unless given; 413 past it)."""
    limits = request.app[LIMITS]
    limit = limits.max_body_bytes if max_bytes is None else max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.request_timeout_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                chunks.append(chunk)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time\n") from None
    return b"".join(chunks)
