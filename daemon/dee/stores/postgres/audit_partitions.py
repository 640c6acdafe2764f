"""The audit log's partitions: one range of run start ticks each, named after its first day.

Partition k holds the entries of the runs that started in ticks [k * period, (k + 1) * period),
the period being `audit.partition_days` in ticks (fixed in `dee_meta` by the first migrate that
partitions the log, so the ranges never move). `ensure_partitions` makes the partitions of the
current period and of `AHEAD` periods after it, and of any period whose rows wait in the DEFAULT
partition (a run scheduled to start far ahead; an entry journaled for a run whose partition was
archived), moving those rows out: `dee migrate` runs it after the migrations, `dee audit
archive` on every run. Everything happens under an ACCESS EXCLUSIVE lock on `audit_log`, taken
only when something must be made, so a tick waits at most for one short transaction.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg

from dee.config import EngineConfig
from dee.errors import ConfigError

DEFAULT = "audit_log_default"
AHEAD = 2  # periods made ahead of the current one: weeks of margin for a maintenance job that stops
DAY_MS = 86_400_000
_BOUNDS = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


class Partition(NamedTuple):
    """A live range partition: its table and the run start ticks it holds, [start_from, start_to)."""

    name: str
    start_from: int
    start_to: int


class Layout(NamedTuple):
    """How run start ticks map to partitions in this deployment."""

    period: int  # ticks per partition
    epoch_ms: int
    tick_interval_ms: int

    def period_of(self, start_tick: int) -> int:
        return start_tick // self.period

    def bounds(self, index: int) -> tuple[int, int]:
        return index * self.period, (index + 1) * self.period

    def name(self, index: int) -> str:
        """`audit_log_YYYYMMDD` after the UTC day its first tick falls on (periods are whole
        days, so no two share one), or `audit_log_before_epoch_<k>` for ranges before tick 0."""
        start, _ = self.bounds(index)
        if start < 0:
            return f"audit_log_before_epoch_{-index}"
        day = datetime.fromtimestamp((self.epoch_ms + start * self.tick_interval_ms) / 1000, UTC)
        return f"audit_log_{day:%Y%m%d}"

    def partition(self, index: int) -> Partition:
        return Partition(self.name(index), *self.bounds(index))


def period_ticks(days: int, tick_interval_ms: int) -> int:
    return -(-days * DAY_MS // tick_interval_ms)


async def fix_partition_days(conn: asyncpg.Connection, config: EngineConfig) -> None:
    """Record `audit.partition_days` at the first migrate that partitions the log; refuse a
    configuration that contradicts it later (the ranges of existing partitions cannot move)."""
    fixed = await conn.fetchval("SELECT audit_partition_days FROM dee_meta")
    days = config.audit.partition_days
    if fixed is None:
        await conn.execute("UPDATE dee_meta SET audit_partition_days = $1", days)
    elif fixed != days:
        raise ConfigError(f"configuration contradicts the deployment: audit.partition_days is {fixed} in this deployment "
                          f"(fixed at the first migrate that partitioned the audit log), config says {days}")  # fmt: skip


async def layout(conn: asyncpg.Connection) -> Layout:
    row = await conn.fetchrow("SELECT audit_partition_days, epoch_ms, tick_interval_ms FROM dee_meta")
    if row is None or row["audit_partition_days"] is None:
        raise ConfigError("the audit log is not partitioned yet: run `dee migrate`")
    return Layout(period_ticks(row["audit_partition_days"], row["tick_interval_ms"]), row["epoch_ms"], row["tick_interval_ms"])


async def current_tick(conn: asyncpg.Connection, clock: str) -> int:
    """The deployment's tick now: the manual clock's (or the furthest partition's), or the wall
    clock's from the epoch (what `dee.scheduler.clock` computes, read here without a scheduler)."""
    row = await conn.fetchrow(
        "SELECT m.manual_tick, m.epoch_ms, m.tick_interval_ms, (SELECT max(tick) FROM partitions) AS furthest FROM dee_meta m"
    )
    tick = max(row["manual_tick"], row["furthest"] or 0)
    if clock == "wall":
        tick = max(tick, (int(time.time() * 1000) - row["epoch_ms"]) // row["tick_interval_ms"])
    return int(tick)


async def live_partitions(conn: asyncpg.Connection) -> list[Partition]:
    """The range partitions of `audit_log` that exist, by their bounds."""
    found = []
    for r in await conn.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'audit_log'::regclass"
    ):  # fmt: skip
        matched = _BOUNDS.search(r["bound"])
        if matched:
            found.append(Partition(r["relname"], int(matched[1]), int(matched[2])))
    return sorted(found, key=lambda p: p.start_from)


async def ensure_partitions(conn: asyncpg.Connection, now_tick: int) -> list[str]:
    """Make the missing partitions (see the module's docstring) inside the caller's transaction;
    returns the names made. Rows waiting in the DEFAULT partition end up in their range's."""
    shape = await layout(conn)
    have = {p.start_from for p in await live_partitions(conn)}
    current = shape.period_of(now_tick)
    wanted = {k for k in range(current, current + AHEAD + 1) if shape.bounds(k)[0] not in have}
    waiting = [r["k"] for r in await conn.fetch(f"SELECT DISTINCT floor(start_tick::numeric / $1)::bigint AS k FROM {DEFAULT}",
                                                shape.period)]  # fmt: skip
    if not wanted and not waiting:
        return []
    await conn.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
    wanted |= {k for k in waiting if shape.bounds(k)[0] not in have}
    if waiting:  # park the rows, make the ranges and an empty default, then route the rows again
        await conn.execute(f"CREATE TEMP TABLE audit_moving ON COMMIT DROP AS SELECT * FROM {DEFAULT}")
        await conn.execute(f"DROP TABLE {DEFAULT}")
    for k in sorted(wanted):
        await create_partition(conn, shape.partition(k))
    if waiting:
        await create_partition(conn, None)
        await conn.execute("INSERT INTO audit_log SELECT * FROM audit_moving")
    return [shape.name(k) for k in sorted(wanted)]


async def create_partition(conn: asyncpg.Connection, partition: Partition | None) -> None:
    """One range partition (None: the DEFAULT one), refusing TRUNCATE like its parent."""
    if partition is None:
        name, bound = DEFAULT, "DEFAULT"
    else:
        name, bound = partition.name, f"FOR VALUES FROM ({partition.start_from}) TO ({partition.start_to})"
    await conn.execute(f'CREATE TABLE "{name}" PARTITION OF audit_log {bound}')
    await conn.execute(f'CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON "{name}" '
                       "FOR EACH STATEMENT EXECUTE FUNCTION dee_audit_append_only()")  # fmt: skip
