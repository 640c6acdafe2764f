"""`dee bench ingress`: requests per second through the HTTP ingress, end to end.

A fresh deployment gets one `dee run` daemon and one `dee ingress` process, as in production;
this process enrols the contacts (each run sends its first email through the simulated adapter)
and then loads the open pixel of every email over HTTP with `concurrency` requests in flight:

- first opens: every request is a new `email.opened` event, answered only once the daemon that
  owns the contact's partition has durably accepted it (ingress -> Redis -> daemon -> PostgreSQL
  -> reply);
- repeated opens: the same pixels again, which the ingress recognises as delivered already
  (the path a mail client reloading images takes); nothing new reaches the daemon.

The check afterwards: every run received exactly one `email.opened`, and every request got its
GIF. The tokens are made with the deployment's link key, as the kernel makes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

from dee.config import EngineConfig
from dee.engine import Engine
from dee.kernel import tokens
from dee.ops.bench import cpu, workload
from dee.ops.bench.daemons import DaemonProcess, free_port, project_of, start_daemons, while_alive
from dee.ops.scratch import scratch_deployment
from dee.project.plans import load_plan

EMAIL_STEP = "initial-email"  # the workload plan's first step: every run sends it at once


class PhaseFigures(msgspec.Struct, frozen=True):
    name: str
    requests: int
    seconds: float
    failed: int
    p50_ms: float
    p99_ms: float
    ingress_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class IngressFigures(msgspec.Struct, frozen=True):
    contacts: int
    concurrency: int
    phases: list[PhaseFigures]
    opened_runs: int  # runs with exactly one email.opened afterwards
    opened_events: int

    def problems(self) -> list[str]:
        found = [f"{p.name}: {p.failed} requests failed" for p in self.phases if p.failed]
        if self.opened_runs != self.contacts or self.opened_events != self.contacts:
            found.append(f"{self.opened_events} email.opened events on {self.opened_runs} runs; expected one on each of {self.contacts}")
        return found

    def table(self) -> str:
        lines = [f"ingress: {self.contacts:,} emails, {self.concurrency} requests in flight",
                 f"{'phase':<16} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ingress CPU µs/req':>19}"]  # fmt: skip
        for p in self.phases:
            lines.append(f"{p.name:<16} {p.requests:>9,} {p.per_s:>9,.0f} {p.p50_ms:>8.1f} {p.p99_ms:>8.1f} "
                         f"{p.ingress_cpu_s / max(p.requests, 1) * 1e6:>19,.0f}")  # fmt: skip
        lines.append(f"checked: {self.opened_events:,} email.opened on {self.opened_runs:,} of {self.contacts:,} runs")
        return "\n".join(lines)

    def json_line(self) -> str:
        return msgspec.json.encode({"ingress": msgspec.to_builtins(self), "problems": self.problems()}).decode()


async def _load(http: aiohttp.ClientSession, urls: list[str], concurrency: int) -> tuple[float, int, list[float]]:
    """GET every URL, `concurrency` at a time; (seconds, failures, latencies in ms)."""
    queue = iter(urls)
    latencies: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for url in queue:
            started = time.perf_counter()
            try:
                async with http.get(url) as response:
                    body = await response.read()
                    ok = response.status == 200 and body.startswith(b"GIF89a")
            except aiohttp.ClientError:
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            failed += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, failed, latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _ready(http: aiohttp.ClientSession, base: str, process: DaemonProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        try:
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ingress did not answer on {base} within {timeout} s")
        await asyncio.sleep(0.1)


async def _settled(config: EngineConfig, action: str, count: int, timeout: float = 300.0) -> None:
    """Wait until `count` runs have an entry of `action` (the wall clock has no run_until_idle)."""
    conn = await asyncpg.connect(config.database)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(DISTINCT run_id) FROM audit_log WHERE action = $1", action) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} runs have {action} after {timeout} s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _runs(config: EngineConfig) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(config.database)
    try:
        return [(r["run_id"], r["contact_id"]) for r in await conn.fetch("SELECT run_id, contact_id FROM runs ORDER BY run_id")]
    finally:
        await conn.close()


async def _opened(config: EngineConfig) -> tuple[int, int]:
    conn = await asyncpg.connect(config.database)
    try:
        row = await conn.fetchrow(
            "SELECT count(DISTINCT run_id) AS runs, count(*) AS events FROM audit_log "
            "WHERE action = 'event.received' AND output::jsonb ->> 'eventType' = 'email.opened'"
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["runs"]), int(row["events"])


async def run_ingress_bench(config: EngineConfig, contacts: int, concurrency: int, log_dir: Path,
                            progress: Callable[[str], None] = lambda _line: None) -> IngressFigures:  # fmt: skip
    """The ingress benchmark on a scratch deployment of `config` (see the module docstring)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with scratch_deployment(config):
        daemons = await start_daemons(config, 1, log_dir)
        ingress = DaemonProcess(config, "bench-ingress", log_dir, command="ingress", env={
            "DEE_INGRESS_HOST": "127.0.0.1", "DEE_INGRESS_PORT": str(port), "DEE_INGRESS_PUBLIC_URL": base,
            "DEE_INGRESS_MAX_CONNECTIONS": str(max(1024, concurrency * 2)),
        })  # fmt: skip
        ingress.start()
        phases: list[PhaseFigures] = []
        try:
            async with Engine(config, scheduler=False) as engine, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency)
            ) as http:
                await _ready(http, base, ingress)
                plan = load_plan(project_of(config) / workload.PLAN_FILE, templates=engine.templates)
                people = [workload.contact(i) for i in range(contacts)]
                result = await engine.bulk_execute(plan, people, workload.VARIABLES)
                if result.created != contacts:
                    raise RuntimeError(f"bulk_execute created {result.created} of {contacts} runs: {result.errors[:3]}")
                await while_alive(daemons, _settled(config, "step.dispatched", contacts))  # every first email sent
                expires = await engine.now_tick() + 1_000_000
                key = engine.link_keys[0]
                urls = [f"{base}/o/{tokens.make(key, 'o', run_id, EMAIL_STEP, contact_id, expires)}"
                        for run_id, contact_id in await _runs(config)]  # fmt: skip
                progress(f"  {contacts:,} emails sent; loading their pixels, {concurrency} at a time ...")
                for name in ("first opens", "repeated opens"):
                    before = cpu.process_seconds(ingress.pid)
                    seconds, failed, latencies = await while_alive([*daemons, ingress], _load(http, urls, concurrency))
                    phases.append(PhaseFigures(name, len(urls), seconds, failed, _percentile(latencies, 0.5),
                                               _percentile(latencies, 0.99), cpu.process_seconds(ingress.pid) - before))  # fmt: skip
                    progress(f"  {name}: {phases[-1].per_s:,.0f} requests/s")
                await while_alive(daemons, _settled(config, "event.received", contacts))
        finally:
            await ingress.stop()
            for daemon in daemons:
                await daemon.stop()
        runs, events = await _opened(config)
    return IngressFigures(contacts, concurrency, phases, runs, events)
