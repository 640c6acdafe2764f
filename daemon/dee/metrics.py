"""Prometheus metrics (SPEC section 10), in one place, and the tiny HTTP server that serves them.

Metrics live in a registry per `Metrics` object rather than the global default registry, so
two engines in one process (tests do that) never collide. The server answers `/metrics`,
`/healthz` (the process is alive) and `/readyz` (it owns partitions or is a pure client, and
its storage answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tick_duration = Histogram("dee_tick_duration_seconds", "Duration of one tick iteration", ["partition"], registry=r,
                                       buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))  # fmt: skip
        self.tick_lag = Gauge("dee_tick_lag_ticks", "Clock tick minus the last processed tick", ["partition"], registry=r)
        self.runs_processed = Counter("dee_runs_processed_total", "Runs advanced by the kernel", ["partition"], registry=r)
        self.steps = Counter("dee_step_transitions_total", "Runs entering a plan node", ["partition"], registry=r)
        self.audit_entries = Counter("dee_audit_entries_total", "Audit entries written", ["partition"], registry=r)
        self.inbound = Counter("dee_inbound_messages_total", "Stream messages accepted", ["partition"], registry=r)
        self.dead_letters = Counter("dee_dead_letters_total", "Messages moved to a dead-letter stream", ["partition"], registry=r)
        self.dispatch_latency = Histogram("dee_dispatch_latency_seconds", "Channel adapter call latency", ["channel"], registry=r)
        self.dispatch_results = Counter("dee_dispatch_results_total", "Channel results", ["channel", "status"], registry=r)
        self.partitions_owned = Gauge("dee_partitions_owned", "Partitions this process owns", registry=r)
        self.lease_losses = Counter("dee_lease_losses_total", "Leases lost (fenced out)", registry=r)
        self.runs_by_status = Gauge("dee_runs", "Runs by status (sampled)", ["status"], registry=r)
        self.policy_denials = Counter("dee_policy_denials_total", "Steps refused by a policy gate", ["gate"], registry=r)

    def observe_tick(self, partition: int, report: Any, seconds: float) -> None:
        p = str(partition)
        self.tick_duration.labels(p).observe(seconds)
        self.runs_processed.labels(p).inc(report.processed)
        self.steps.labels(p).inc(report.transitions)
        self.audit_entries.labels(p).inc(report.entries)
        self.inbound.labels(p).inc(report.accepted)
        self.dead_letters.labels(p).inc(report.dead)

    def observe_dispatch(self, channel: str, status: str, seconds: float) -> None:
        self.dispatch_latency.labels(channel).observe(seconds)
        self.dispatch_results.labels(channel, status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
