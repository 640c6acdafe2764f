"""`dee bench`: the outreach-v2 workload end to end through real daemons, then the checks.

For each daemon count asked for, a fresh deployment is created, `dee run` processes take its
partitions, and this process acts as a client: it enrols every contact with `bulk_execute`,
steps the manual clock, sends the workload's events, and waits until every run has ended.
Then it reads back what was written and checks it against the workload's expected figures.
On the single-daemon deployment it also measures the raw write limit and replay throughput.
"""

from __future__ import annotations

import asyncio
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import msgspec

from dee.config import EngineConfig
from dee.engine import Engine
from dee.ops import consents
from dee.ops.bench import cpu, workload
from dee.ops.bench.daemons import project_of, start_daemons, while_alive
from dee.ops.bench.idle import run_idle
from dee.ops.bench.measure import check_workload, raw_write_seconds, replay_all
from dee.ops.bench.report import BenchReport, EngineFigures, RawFigures, ReplayFigures
from dee.ops.scratch import scratch_deployment
from dee.project.plans import load_plan
from dee.stores.postgres.admin import database_name, with_database

EVENT_CONCURRENCY = 500


def bench_config(config: EngineConfig, suffix: str = "bench") -> EngineConfig:
    """The configured servers, a database and a Redis namespace of the bench's own, a manual clock."""
    name = f"{database_name(config.database)}_{suffix}"
    return msgspec.structs.replace(
        config,
        database=with_database(config.database, name),
        namespace=f"{config.namespace}-{name}",  # two benches on different databases never share keys
        scheduler=msgspec.structs.replace(config.scheduler, clock="manual"),
        metrics=msgspec.structs.replace(config.metrics, enabled=False),
        # a million runs take minutes to start; being idle is what the bench waits for
        client=msgspec.structs.replace(config.client, idle_timeout_ms=max(config.client.idle_timeout_ms, 3_600_000)),
    )  # fmt: skip


async def ingest(engine: Engine, reactions: list[workload.Reaction], tag: str) -> None:
    limit = asyncio.Semaphore(EVENT_CONCURRENCY)

    async def one(r: workload.Reaction) -> None:
        async with limit:
            await engine.ingest_event(r.event_type, workload.contact_id(r.contact), {}, step_id=r.step_id,
                                      event_id=f"bench-{tag}-{r.contact}")  # fmt: skip

    await asyncio.gather(*(one(r) for r in reactions))


async def prepare(engine: Engine, contacts: int) -> None:
    """What the workload needs before it starts and is not part of it: the voice consents the
    call steps ask for (timed neither in seconds nor in CPU, as no build before the consent
    gate had to record them)."""
    await consents.grant(engine, [workload.contact_id(i) for i in range(contacts)], "voice", "bench")


async def drive(engine: Engine, contacts: int) -> tuple[float, float, int]:
    """Run the workload (after `prepare`); returns (enrolment seconds, workload seconds, events sent)."""
    plan = load_plan(project_of(engine.config) / workload.PLAN_FILE, templates=engine.templates)
    people = [workload.contact(i) for i in range(contacts)]
    started = time.perf_counter()
    result = await engine.bulk_execute(plan, people, workload.VARIABLES)
    enrolled = time.perf_counter()
    if result.created != contacts:
        raise RuntimeError(f"bulk_execute created {result.created} of {contacts} runs: {result.errors[:3]}")
    first, second = workload.first_reactions(contacts), workload.second_reactions(contacts)
    await engine.run_until_idle()
    await engine.advance_clock(workload.REACTION_DELAY_TICKS)
    await ingest(engine, first, "1")
    await engine.advance_clock(workload.FIRST_WAIT_TICKS)
    await ingest(engine, second, "2")
    await engine.advance_clock(workload.HORIZON_TICKS - workload.FIRST_WAIT_TICKS - workload.REACTION_DELAY_TICKS)
    return enrolled - started, time.perf_counter() - enrolled, len(first) + len(second)


async def run_workload(
    config: EngineConfig, contacts: int, daemons: int, log_dir: Path, measure: bool
) -> tuple[EngineFigures, RawFigures | None, ReplayFigures | None]:
    """One fresh deployment, `daemons` daemon processes, the workload and its checks."""
    async with scratch_deployment(config):
        procs = await start_daemons(config, daemons, log_dir)
        try:
            pids = [p.pid for p in procs]
            async with Engine(config, scheduler=False) as engine:
                await while_alive(procs, prepare(engine, contacts))
                before = cpu.snapshot(pids)
                enrol_s, work_s, events = await while_alive(procs, drive(engine, contacts))
                after = cpu.snapshot(pids)
            peak_rss = max(p.memory_kb()[1] for p in procs) / 1024
        finally:
            for p in procs:
                await p.stop()
        conn = await asyncpg.connect(config.database)
        try:
            checked = await check_workload(conn, contacts)
        finally:
            await conn.close()
        figures = EngineFigures(
            daemons=daemons, enrol_seconds=enrol_s, seconds=work_s, events=events, transitions=checked.transitions,
            peak_rss_mb=peak_rss, correctness=checked, cpu_seconds={k: after[k] - before[k] for k in after},
        )  # fmt: skip
        if not measure:
            return figures, None, None
        row_bytes = checked.audit_bytes // max(checked.audit_rows, 1)
        raw_s, raw_bytes = await raw_write_seconds(config.database, checked.audit_rows, contacts, row_bytes)
        tally, seconds = await replay_all(config, os.cpu_count() or 1)
    raw = RawFigures(rows=checked.audit_rows, row_bytes=raw_bytes, seconds=raw_s)
    replay = ReplayFigures(runs=tally.runs, identical=tally.identical, chains_valid=tally.chains_valid, seconds=seconds)
    return figures, raw, replay


async def run_bench(
    config: EngineConfig, contacts: int, daemon_counts: tuple[int, ...] = (1, 2), idle_runs: int = 0,
    log_dir: Path | None = None, progress: Callable[[str], None] = lambda _line: None,
) -> BenchReport:  # fmt: skip
    """The whole benchmark; `config` names the servers (a scratch database is made on them)."""
    project_of(config)  # no project: say so before making a scratch database
    logs = log_dir or Path(tempfile.mkdtemp(prefix="dee-bench-"))
    report = BenchReport(contacts=contacts, partitions=config.scheduler.partitions, cores=os.cpu_count() or 1,
                         expected=workload.expected(contacts), log_dir=str(logs))  # fmt: skip
    progress(f"dee bench: {contacts:,} contacts; daemon logs in {logs}")
    for count in daemon_counts:
        progress(f"outreach-v2 with {count} daemon(s) ...")
        figures, raw, replay = await run_workload(bench_config(config), contacts, count, logs, measure=report.raw is None)
        progress(f"  {figures.transitions:,} transitions in {figures.seconds:.2f} s = {figures.transitions_per_s:,.0f}/s; "
                 f"enrolment {figures.enrolments_per_s:,.0f}/s")  # fmt: skip
        if replay is not None:
            progress(f"  replay {replay.runs_per_s:,.0f} runs/s; raw write {raw.rows_per_s if raw else 0:,.0f} rows/s")
        report.engine.append(figures)
        report.raw = report.raw or raw
        report.replay = report.replay or replay
    if idle_runs:
        progress(f"{idle_runs:,} waiting runs ...")
        report.idle = await run_idle(bench_config(config, "bench_idle"), idle_runs, logs)
    report.client_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report

