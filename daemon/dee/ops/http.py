"""The daemon's HTTP endpoints: `/metrics`, `/healthz` (the process is alive) and `/readyz`
(it owns partitions or is a pure client, and its storage answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from dee.metrics import Metrics


async def serve(
    host: str, port: int, metrics: Metrics, ready: Callable[[], Awaitable[bool]]
) -> asyncio.Server:
    """Serve /metrics, /healthz and /readyz with plain asyncio (no web framework needed)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            if path == "/metrics":
                status, body, kind = "200 OK", metrics.render(), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                status, body, kind = "200 OK", b"ok\n", "text/plain"
            elif path == "/readyz":
                is_ready = await ready()
                status = "200 OK" if is_ready else "503 Service Unavailable"
                body, kind = (b"ready\n" if is_ready else b"not ready\n"), "text/plain"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
