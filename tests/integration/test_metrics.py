"""The daemon's /metrics, /healthz and /readyz answer over HTTP."""

from __future__ import annotations

import asyncio

from dee import Engine, EngineConfig, load_plan
from dee.ops.http import PROBE_LIMITS, serve
from dee.records import ConsentRecord


async def _get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = (await reader.read()).decode()
    writer.close()
    head, _, body = data.partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_metrics_and_probes(deployment: EngineConfig) -> None:
    async with Engine(deployment, scheduler=True) as engine:
        backend = engine._backend
        server = await serve("127.0.0.1", 0, backend.metrics, backend.ready)  # type: ignore[attr-defined]
        port = server.port
        try:
            run = await engine.execute(load_plan("config/plans/sales-outreach-v2.yaml"),
                                       {"id": "m1", "email": "m1@acme.test", "attributes": {"company": "A"}},
                                       {"product": "DEE"})  # fmt: skip
            await engine.record_consent(ConsentRecord(contact_id="m2", channel="email", status="revoked", source="reply"))
            refused = await engine.execute(load_plan("config/plans/sales-outreach-v2.yaml"),
                                           {"id": "m2", "email": "m2@acme.test", "attributes": {"company": "A"}},
                                           {"product": "DEE"})  # fmt: skip
            await engine.run_until_idle()
            assert (await engine.get_run(run.id)).current_step == "wait-1"
            assert (await engine.get_run(refused.id)).current_step == "wait-1"  # its first email was skipped
            status, body = await _get(port, "/metrics")
            assert status == "HTTP/1.1 200 OK"
            assert "dee_partitions_owned 4.0" in body
            transitions = sum(float(line.split()[-1]) for line in body.splitlines()
                              if line.startswith("dee_step_transitions_total{"))  # fmt: skip
            assert transitions == 4  # initial-email and wait-1 entered, by each run
            assert 'dee_policy_denials_total{gate="consent",verdict="skip"} 1.0' in body
            assert 'dee_dispatch_results_total{adapter="simulated",channel="email",result="delivered"} 1.0' in body
            assert await _get(port, "/healthz") == ("HTTP/1.1 200 OK", "ok\n")
            assert await _get(port, "/readyz") == ("HTTP/1.1 200 OK", "ready\n")
            assert (await _get(port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
            # a query string is part of no route's name
            assert (await _get(port, "/metrics?x=1"))[0] == "HTTP/1.1 200 OK"
            assert await _get(port, "/healthz?probe=kubelet") == ("HTTP/1.1 200 OK", "ok\n")
        finally:
            await server.close()


async def test_a_flood_of_idle_connections_leaves_the_probes_answering(deployment: EngineConfig) -> None:
    """1,050 connections that send nothing (more than the server's cap): the oldest idle ones
    are closed to make room, and /healthz and /readyz still answer on a new connection."""
    async with Engine(deployment, scheduler=True) as engine:
        backend = engine._backend
        server = await serve("127.0.0.1", 0, backend.metrics, backend.ready)  # type: ignore[attr-defined]
        idle: list[asyncio.StreamWriter] = []
        try:
            for _ in range(1050):
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                idle.append(writer)
            await asyncio.sleep(0.2)
            assert len(server.runner.server.connections) <= PROBE_LIMITS.max_connections  # type: ignore[union-attr]
            assert await _get(server.port, "/healthz") == ("HTTP/1.1 200 OK", "ok\n")
            assert await _get(server.port, "/readyz") == ("HTTP/1.1 200 OK", "ready\n")
        finally:
            for writer in idle:
                writer.close()
            await server.close()
