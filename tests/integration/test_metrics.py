"""The daemon's /metrics, /healthz and /readyz answer over HTTP."""

from __future__ import annotations

import asyncio

from dee import Engine, EngineConfig, load_plan
from dee.ops.http import serve


async def _get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = (await reader.read()).decode()
    writer.close()
    head, _, body = data.partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_metrics_and_probes(deployment: EngineConfig) -> None:
    async with Engine(deployment, scheduler=True) as engine:
        backend = engine._backend
        server = await serve("127.0.0.1", 0, backend.metrics, backend.ready)  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]
        try:
            run = await engine.execute(load_plan("config/plans/sales-outreach-v2.yaml"),
                                       {"id": "m1", "email": "m1@acme.test", "attributes": {"company": "A"}},
                                       {"product": "DEE"})  # fmt: skip
            await engine.run_until_idle()
            assert (await engine.get_run(run.id)).current_step == "wait-1"
            status, body = await _get(port, "/metrics")
            assert status == "HTTP/1.1 200 OK"
            assert "dee_partitions_owned 4.0" in body
            transitions = sum(float(line.split()[-1]) for line in body.splitlines()
                              if line.startswith("dee_step_transitions_total{"))  # fmt: skip
            assert transitions == 2  # initial-email and wait-1 entered
            assert 'dee_dispatch_results_total{adapter="simulated",channel="email",result="delivered"} 1.0' in body
            assert await _get(port, "/healthz") == ("HTTP/1.1 200 OK", "ok\n")
            assert await _get(port, "/readyz") == ("HTTP/1.1 200 OK", "ready\n")
            assert (await _get(port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
        finally:
            server.close()
