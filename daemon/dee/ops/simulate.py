"""`dee simulate`: run a plan for N simulated contacts over D days on a manual clock.

Contacts behave deterministically: whether contact `c` opens, clicks or replies to the email
of step `s` is decided by `sha256(c|s)`, and the reaction arrives `REACTION_DELAY` after the
send. The same command therefore prints the same outcome table every time, and every run it
produced must replay identically from its audit log.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from dee.config import EngineConfig
from dee.engine import Engine
from dee.kernel.clock import ms_to_ticks
from dee.kernel.timeline import TimelineEntry
from dee.ops import consents
from dee.ops.scratch import create_deployment
from dee.plan.model import Plan
from dee.stores.postgres.admin import database_name, with_database

REACTION_DELAY_MS = 6 * 3_600_000
OPEN_PERCENT, CLICK_PERCENT, REPLY_PERCENT = 35, 12, 8


def contact_for(index: int) -> dict[str, object]:
    cid = f"contact-{index:07d}"
    return {
        "id": cid,
        "email": f"{cid}@example.com",
        "phone": f"+1555{index:07d}",
        "attributes": {"company": f"Company {index % 97}", "first_name": f"Pat{index}", "tier": "gold" if index % 5 == 0 else "standard"},
    }


def reactions(contact_id: str, step_id: str) -> list[str]:
    """The events a contact sends back for one email, decided by hash (so, reproducibly)."""
    roll = int(hashlib.sha256(f"{contact_id}|{step_id}".encode()).hexdigest()[:8], 16) % 100
    events = []
    if roll < OPEN_PERCENT:
        events.append("email.opened")
    if roll < CLICK_PERCENT:
        events.append("email.clicked")
    if roll < REPLY_PERCENT:
        events.append("email.replied")
    return events


@dataclass
class SimulationReport:
    contacts: int
    days: int
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    replay_identical: int = 0
    chains_valid: int = 0
    events_ingested: int = 0
    seconds: float = 0.0
    sample_run: str | None = None
    sample_timeline: list[TimelineEntry] = field(default_factory=list)


async def simulate(
    engine: Engine, plan: Plan, contacts: int, days: int, variables: dict[str, object] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SimulationReport:  # fmt: skip
    """Enrol `contacts` contacts at tick 0, drive the clock `days` days, then verify every run."""
    started = time.perf_counter()
    report = SimulationReport(contacts, days)
    tick_ms = engine.config.scheduler.tick_interval_ms
    delay = ms_to_ticks(REACTION_DELAY_MS, tick_ms)
    end = engine.current_tick + ms_to_ticks(days * 86_400_000, tick_ms)
    # the simulated contacts agreed to be called (voice needs a granted consent)
    await consents.grant(engine, (str(contact_for(i)["id"]) for i in range(contacts)), "voice", "simulation")
    result = await engine.bulk_execute(plan, (contact_for(i) for i in range(contacts)), variables or {"product": "DEE"})
    if result.errors:
        raise RuntimeError(f"{len(result.errors)} contacts could not be enrolled, first: {result.errors[0]}")
    await engine.run_until_idle()
    pending: list[tuple[int, int, str, str, str, str]] = []
    seen_until = -1
    serial = 0
    while True:
        now = engine.current_tick
        for entry in await engine.audit.query(actions=["step.dispatched"], from_tick=seen_until + 1, to_tick=now):
            output = entry.output or {}
            if output.get("channel") != "email" or output.get("attempt") != 1 or entry.step_id is None:
                continue
            run = await engine.get_run(entry.run_id)
            for event_type in reactions(run.contact_id, entry.step_id):
                serial += 1
                heapq.heappush(pending, (entry.tick + delay, serial, event_type, run.contact_id, entry.run_id, entry.step_id))
        seen_until = now
        if progress:
            progress("simulating", min(now, end), end)
        if now >= end:
            break
        target = min(now + delay, end, pending[0][0] if pending else end)
        await engine.advance_clock(target - now)
        batch = []
        while pending and pending[0][0] <= engine.current_tick:
            _, serial_no, event_type, contact_id, run_id, step_id = heapq.heappop(pending)
            batch.append(engine.ingest_event(event_type, contact_id, {}, run_id=run_id, step_id=step_id,
                                             event_id=f"sim-{serial_no}"))  # fmt: skip
        await asyncio.gather(*batch)
        report.events_ingested += len(batch)
        await engine.run_until_idle()
    page = await engine.list_runs(plan_id=plan.id, limit=contacts)
    for index, run in enumerate(page.runs):
        report.outcomes[(run.status, run.outcome or "-")] += 1
        if (await engine.verify_audit_chain(run.id)).valid:
            report.chains_valid += 1
        if (await engine.replay(run.id)).identical:
            report.replay_identical += 1
        if progress and index % 100 == 0:
            progress("verifying", index, len(page.runs))
    if progress:
        progress("verifying", len(page.runs), len(page.runs))
    if page.runs:
        longest = max(page.runs, key=lambda r: (r.steps_completed, r.id))
        report.sample_run = longest.id
        report.sample_timeline = await engine.get_timeline(longest.id)
    report.seconds = time.perf_counter() - started
    return report


async def run_simulation(
    config: EngineConfig, plan: Plan, contacts: int, days: int, memory: bool, database: str | None,
    redis_url: str | None, progress: Callable[[str, int, int], None] | None,
) -> SimulationReport:  # fmt: skip
    """Set up a fresh deployment (in memory, or a recreated database and an emptied Redis
    namespace), run the simulation with an embedded scheduler, and return its report."""
    scheduler = msgspec.structs.replace(config.scheduler, clock="manual")
    metrics = msgspec.structs.replace(config.metrics, enabled=False)
    if memory:
        sim = msgspec.structs.replace(config, database="memory://", scheduler=scheduler, metrics=metrics)
    else:
        db = database or with_database(config.database, database_name(config.database) + "_simulate")
        namespace = f"{config.namespace}-simulate"
        sim = msgspec.structs.replace(config, database=db, redis=redis_url or config.redis, namespace=namespace,
                                      scheduler=scheduler, metrics=metrics)  # fmt: skip
        await create_deployment(sim)
    async with Engine(sim, scheduler=True) as engine:
        return await simulate(engine, plan, contacts, days, progress=progress)


def format_report(report: SimulationReport, tick_ms: int) -> str:
    lines = [f"simulated {report.contacts} contacts over {report.days} days in {report.seconds:.1f} s "
             f"({report.events_ingested} events ingested)", "", f"{'status':<12}{'outcome':<16}{'runs':>8}"]  # fmt: skip
    for (status, outcome), count in sorted(report.outcomes.items()):
        lines.append(f"{status:<12}{outcome:<16}{count:>8}")
    lines += ["", f"timeline of run {report.sample_run}:"]
    for t in report.sample_timeline:
        day = t.tick * tick_ms / 86_400_000
        detail = t.outcome or str(t.data.get("event") or "")
        lines.append(f"  day {day:5.2f}  tick {t.tick:>8}  {t.action:<18}{t.step or '':<18}{detail}")
    total = sum(report.outcomes.values())
    lines += ["", f"replay: {report.replay_identical}/{total} runs identical",
              f"audit chains: {report.chains_valid}/{total} valid"]  # fmt: skip
    return "\n".join(lines)
