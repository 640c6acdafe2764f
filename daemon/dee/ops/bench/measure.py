"""What `dee bench` measures besides the workload itself: the raw write limit of the database,
replay throughput, and the correctness of what the engine wrote."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import asyncpg
import msgspec
import uvloop

from dee.config import EngineConfig
from dee.engine import template_store
from dee.kernel.audit import AuditEntry, AuditRow, entry_of, verify_chain
from dee.ops import gc_tuning
from dee.ops.bench.report import Correctness
from dee.ops.bench.workload import PATHS, path_of
from dee.plugin.manager import PluginManager
from dee.privacy.keys import master_key
from dee.privacy.vault import Vault
from dee.shell.replayer import Replayer
from dee.stores.postgres import contact_keys
from dee.stores.postgres.plans import PlanCache
from dee.stores.postgres.rows import AUDIT_COLUMNS, AUDIT_COPY_COLUMNS

RAW_RUNS_PER_TRANSACTION = 500
REPLAY_ROWS_PER_READ = 2_000  # about 1.6 MB of rows: sorted within the default 4 MB work_mem
_IN_RANGE = "run_id >= $1 AND ($2::text IS NULL OR run_id < $2)"


async def check_workload(conn: asyncpg.Connection, contacts: int) -> Correctness:
    """Read back what the engine wrote: each run's node sequence against its contact's path."""
    entered = await conn.fetch(
        "SELECT r.contact_id, array_agg(a.step_id ORDER BY a.seq) AS nodes FROM runs r "
        "JOIN audit_log a ON a.run_id = r.run_id AND a.action = 'step.entered' GROUP BY r.contact_id"
    )
    paths: Counter[str] = Counter()
    wrong = 0
    for row in entered:
        i = int(row["contact_id"].rsplit("-", 1)[1])
        path = path_of(i)
        if tuple(row["nodes"]) == PATHS[path] and i < contacts:
            paths[path] += 1
        else:
            wrong += 1
    outcomes = Counter({r["outcome"] or r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, outcome, count(*) AS n FROM runs GROUP BY status, outcome")})  # fmt: skip
    stats = await conn.fetchrow(
        "SELECT count(*) AS rows, coalesce(sum(pg_column_size(a.*)), 0) AS bytes, "
        "count(*) FILTER (WHERE action = 'step.entered') AS entered, "
        "count(*) FILTER (WHERE action = 'step.dispatched') AS sends FROM audit_log a"
    )  # fmt: skip
    runs = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE status IN ('completed', 'cancelled', 'failed')) AS t FROM runs"
    )
    return Correctness(
        runs=runs["n"], terminal=runs["t"], outcomes=outcomes, paths=paths, wrong_paths=wrong,
        transitions=stats["entered"], sends=stats["sends"], audit_rows=stats["rows"], audit_bytes=stats["bytes"],
    )  # fmt: skip


def _raw_batches(rows: int, runs: int, filler: str) -> list[list[tuple[object, ...]]]:
    """`rows` audit-shaped rows spread over `runs` runs, `RAW_RUNS_PER_TRANSACTION` runs a batch."""
    per_run = max(1, -(-rows // max(runs, 1)))
    output = f'{{"status":"delivered","pad":"{filler}"}}'
    records: list[tuple[object, ...]] = []
    for n in range(rows):
        run, seq = divmod(n, per_run)
        records.append((f"01RAW{run:021d}", seq + 1, f"01ENTRY{n:019d}", "sales-outreach-v2", "initial-email",
                        seq * 3600, "2026-11-25T12:00:00.000+00:00", "step.entered", None, output, None,
                        "0" * 64, "f" * 64, 0))  # fmt: skip
    size = per_run * RAW_RUNS_PER_TRANSACTION
    return [records[start : start + size] for start in range(0, rows, size)]


async def raw_write_seconds(database: str, rows: int, runs: int, row_bytes: int, attempts: int = 3) -> tuple[float, int]:
    """Seconds to COPY `rows` audit-shaped rows of `row_bytes` bytes (padded to size) into a
    table like `audit_log` (same columns and indexes), `RAW_RUNS_PER_TRANSACTION` runs per
    transaction: the volume the engine wrote, with nothing but the writing. The best of
    `attempts` (a limit; single runs vary with the disk's flushing). Also returns the average
    size the rows really had."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_raw_audit")
        await conn.execute("CREATE TABLE bench_raw_audit (LIKE audit_log INCLUDING ALL)")
        size_sql = "SELECT avg(pg_column_size(t.*))::int FROM bench_raw_audit t"
        await conn.copy_records_to_table("bench_raw_audit", records=_raw_batches(1, 1, "")[0], columns=AUDIT_COPY_COLUMNS)
        filler = "x" * max(0, row_bytes - await conn.fetchval(size_sql))
        batches = _raw_batches(rows, runs, filler)
        best = float("inf")
        for _ in range(attempts):
            await conn.execute("TRUNCATE bench_raw_audit")
            started = time.perf_counter()
            for batch in batches:
                async with conn.transaction():
                    await conn.copy_records_to_table("bench_raw_audit", records=batch, columns=AUDIT_COPY_COLUMNS)
            best = min(best, time.perf_counter() - started)
        written = await conn.fetchval(size_sql)
        await conn.execute("DROP TABLE bench_raw_audit")
        return best, written
    finally:
        await conn.close()


@dataclass
class ReplayTally:
    runs: int = 0
    identical: int = 0
    chains_valid: int = 0


def _replay_share(config_json: bytes, first: str, end: str | None) -> tuple[int, int, int]:
    """Replay and verify every completed run with `first <= run_id < end` (a worker process)."""
    gc_tuning.tune()
    config = msgspec.json.decode(config_json, type=EngineConfig)
    return uvloop.run(_replay_runs(config, first, end))  # the daemon's event loop, as `dee run` has


async def _replay_runs(config: EngineConfig, first: str, end: str | None) -> tuple[int, int, int]:
    plugins = PluginManager.load(disabled=config.plugins.disabled)
    templates = template_store(config, plugins)
    cache = PlanCache(plugins, templates)
    tally = ReplayTally()
    conn = await asyncpg.connect(config.database)
    try:
        replayer = Replayer(config, plugins, templates, lambda plan_id, version: cache.get(conn, plan_id, version))
        heads = {r["run_id"]: (r["seq"], r["head"]) for r in await conn.fetch(
            f"SELECT run_id, seq, head FROM runs WHERE status = 'completed' AND {_IN_RANGE}", first, end)}  # fmt: skip
        # the entries' contact data is sealed: replay opens it, as `Engine.replay` does
        master = master_key(config.privacy, bytes(await conn.fetchval("SELECT privacy_key FROM dee_meta")))
        opener = Opener(Vault.of(config.privacy, master, owner=False),
                        await contact_keys.run_keys(conn, f"r.status = 'completed' AND r.{_IN_RANGE}", first, end))  # fmt: skip
        columns = ", ".join(AUDIT_COLUMNS)
        for chunk in _chunks(sorted(heads), heads):
            current: list[AuditRow] = []
            for row in await conn.fetch(
                f"SELECT {columns} FROM audit_log WHERE run_id >= $1 AND run_id <= $2 ORDER BY run_id, seq", chunk[0], chunk[-1]
            ):  # fmt: skip
                if current and current[-1].run_id != row[0]:
                    await _replay_one(current, heads, replayer, tally, opener)
                    current = []
                current.append(AuditRow(*row))
            if current:
                await _replay_one(current, heads, replayer, tally, opener)
    finally:
        await conn.close()
    return tally.runs, tally.identical, tally.chains_valid


def _chunks(ids: list[str], heads: dict[str, tuple[int, str]]) -> list[list[str]]:
    """Consecutive runs with about `REPLAY_ROWS_PER_READ` audit rows in all (a run's head seq is
    its number of rows): one query a chunk, whose sort by (run, seq) stays in PostgreSQL's
    work_mem. A cursor cost more per row; chunks of a fixed number of runs spilled the sort to
    disk once runs were long, which doubled the database's share of the replay."""
    chunks: list[list[str]] = []
    current: list[str] = []
    rows = 0
    for run_id in ids:
        current.append(run_id)
        rows += heads[run_id][0]
        if rows >= REPLAY_ROWS_PER_READ:
            chunks.append(current)
            current, rows = [], 0
    if current:
        chunks.append(current)
    return chunks


@dataclass
class Opener:
    vault: Vault
    keys: dict[str, tuple[str, bytes | None]]  # run id -> its contact and wrapped key

    def open(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        return self.vault.open(entries, *self.keys.get(entries[0].run_id, (None, None)))[0]


async def _replay_one(
    rows: list[AuditRow], heads: dict[str, tuple[int, str]], replayer: Replayer, tally: ReplayTally, opener: Opener
) -> None:  # fmt: skip
    head = heads.get(rows[0].run_id)
    if head is None:  # not completed
        return
    tally.runs += 1
    if verify_chain(rows, *head).valid:
        tally.chains_valid += 1
    if (await replayer.replay_run(opener.open([entry_of(row, with_context=False) for row in rows]))).identical:
        tally.identical += 1


async def replay_all(config: EngineConfig, processes: int) -> tuple[ReplayTally, float]:
    """Replay and verify every completed run from Postgres, in `processes` worker processes,
    each taking a contiguous range of run ids (so neither reads the other's rows)."""
    started = time.perf_counter()
    encoded = msgspec.json.encode(config)
    conn = await asyncpg.connect(config.database)
    try:
        runs = await conn.fetchval("SELECT count(*) FROM runs")
        bounds = [await conn.fetchval("SELECT run_id FROM runs ORDER BY run_id OFFSET $1 LIMIT 1", runs * k // processes)
                  for k in range(processes)]  # fmt: skip
    finally:
        await conn.close()
    ranges = list(zip(bounds, [*bounds[1:], None], strict=True)) if runs else []
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(processes) as pool:
        parts = await asyncio.gather(*(loop.run_in_executor(pool, _replay_share, encoded, first, end)
                                       for first, end in ranges))  # fmt: skip
    tally = ReplayTally()
    for runs, identical, valid in parts:
        tally.runs += runs
        tally.identical += identical
        tally.chains_valid += valid
    return tally, time.perf_counter() - started
