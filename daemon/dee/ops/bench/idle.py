"""`dee bench --idle-runs M`: what many waiting runs cost a daemon that has nothing to do.

One daemon, a fresh deployment, a plan that waits a year. The daemon's RSS and the duration of
a tick with nothing due are measured with 10,000 runs waiting and again with M: neither should
grow with the number of runs, since a worker reads only what is due (an index probe) and keeps
no run in memory between ticks. Tick durations come from the daemon's own
`dee_tick_duration_seconds` histogram over rounds in which every partition is woken once.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import asyncpg

from dee.bus import connect as redis_connect
from dee.bus import messages as wire
from dee.bus.streams import FIELD, Keys
from dee.config import EngineConfig
from dee.engine import Engine
from dee.ops.bench.daemons import DaemonProcess, start_daemons, while_alive
from dee.ops.bench.report import IdleFigures
from dee.ops.scratch import scratch_deployment
from dee.plan import steps, transitions
from dee.plan.model import Duration, Plan
from dee.project.plans import create_plan

SMALL = 10_000  # the first measurement: this many runs, or a tenth of them if fewer
CHUNK = 50_000
IDLE_ROUNDS = 10
WAKE_GAP_S = 0.03


def idle_plan() -> Plan:
    return create_plan(
        id="bench-idle", name="Waits a year",
        steps=[steps.wait("wait-a-year", Duration(days=365)), steps.end("done", "waited")],
        transitions=transitions.linear(),
    )  # fmt: skip


def tick_totals(daemon: DaemonProcess) -> tuple[float, float]:
    """(sum of seconds, count) of the daemon's tick-duration histogram, over all partitions."""
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("dee_tick_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("dee_tick_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


async def idle_tick_ms(config: EngineConfig, daemon: DaemonProcess) -> float:
    """Mean duration of a tick with nothing due. `IDLE_ROUNDS` times the clock moves one tick
    and each partition in turn is woken, `WAKE_GAP_S` apart (one at a time, so a tick's time is
    its own and not its share of 16 woken together); the daemon's histogram is read before and
    after only, since scraping it runs on the daemon's event loop too."""
    keys = Keys(config.namespace)
    redis = redis_connect.client(config.redis, max_connections=2)
    db = await asyncpg.connect(config.database)
    wake = {FIELD: wire.encode(wire.Wake(command_id="wake"))}
    try:
        before_sum, before_count = tick_totals(daemon)
        for _ in range(IDLE_ROUNDS):
            await db.execute("UPDATE dee_meta SET manual_tick = manual_tick + 1")
            for partition in range(config.scheduler.partitions):
                await redis.xadd(keys.inbound(partition), wake)  # type: ignore[arg-type]
                await asyncio.sleep(WAKE_GAP_S)
        wanted = before_count + IDLE_ROUNDS * config.scheduler.partitions
        deadline = time.monotonic() + 30
        while (totals := tick_totals(daemon))[1] < wanted:
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon ran {totals[1] - before_count:.0f} of {wanted - before_count:.0f} ticks in 30 s")
            await asyncio.sleep(0.1)
        return 1000 * (totals[0] - before_sum) / (totals[1] - before_count)
    finally:
        await db.close()
        await redis.aclose()


async def enrol(engine: Engine, plan: Plan, start: int, stop: int) -> None:
    for first in range(start, stop, CHUNK):
        contacts = [{"id": f"idle-{i:08d}"} for i in range(first, min(first + CHUNK, stop))]
        result = await engine.bulk_execute(plan, contacts, {})
        if result.created != len(contacts):
            raise RuntimeError(f"idle enrolment created {result.created} of {len(contacts)}: {result.errors[:3]}")
    await engine.run_until_idle()


async def run_idle(config: EngineConfig, runs: int, log_dir: Path) -> IdleFigures:
    async with scratch_deployment(config):
        (daemon,) = await start_daemons(config, 1, log_dir)
        try:
            async with Engine(config, scheduler=False) as engine:
                plan = idle_plan()
                small = min(SMALL, runs // 10)
                await while_alive([daemon], enrol(engine, plan, 0, small))
                tick_small = await idle_tick_ms(config, daemon)
                rss_small = daemon.memory_kb()[0] / 1024
                started = time.perf_counter()
                await while_alive([daemon], enrol(engine, plan, small, runs))
                enrol_seconds = time.perf_counter() - started
                tick_large = await idle_tick_ms(config, daemon)
                rss_large = daemon.memory_kb()[0] / 1024
        finally:
            await daemon.stop()
    return IdleFigures(runs=runs, small_runs=small, enrol_seconds=enrol_seconds, rss_small_mb=rss_small,
                       rss_large_mb=rss_large, idle_tick_ms_small=tick_small, idle_tick_ms_large=tick_large,
                       idle_ticks=IDLE_ROUNDS * config.scheduler.partitions)  # fmt: skip
