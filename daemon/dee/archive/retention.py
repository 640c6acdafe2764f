"""Which partitions may go: retention's rule, and what holds each partition that may not.

A partition holds the runs that started in its range. It is due when

- `audit.retention_days` is set, and its range ended at least that long ago;
- every run that started in it ended (completed or cancelled: a failed run may still be
  retried, and its replay needs its whole log, so it holds its partition until it is retried
  to its end or cancelled);
- the last of those runs ended at least `retention_days` ago, so every entry is kept at least
  that long; and
- it was not brought back by `dee audit restore` (unless `--drop-restored`).
"""

from __future__ import annotations

import asyncpg
import msgspec

from dee.stores.postgres.audit_partitions import Partition, live_partitions, period_ticks
from dee.stores.postgres.rows import TERMINAL_SQL

EXAMPLES = 3  # run ids named per reason a partition is held


class PartitionPlan(msgspec.Struct, frozen=True):
    name: str
    start_from: int
    start_to: int
    due: bool
    why: str  # what keeps it, or what makes it due

    @property
    def partition(self) -> Partition:
        return Partition(self.name, self.start_from, self.start_to)


async def plan_retention(
    conn: asyncpg.Connection, retention_days: int | None, tick_interval_ms: int, now_tick: int, drop_restored: bool
) -> list[PartitionPlan]:
    """Every live range partition, in order, with whether it is due and why (not)."""
    cutoff = None if retention_days is None else now_tick - period_ticks(retention_days, tick_interval_ms)
    restored = {r["partition"] for r in await conn.fetch("SELECT partition FROM audit_restored")}
    plans = []
    for p in await live_partitions(conn):
        why = await _held_by(conn, p, cutoff, p.name in restored and not drop_restored)
        plans.append(PartitionPlan(p.name, p.start_from, p.start_to, why is None, why or f"runs started {p.start_from}..{p.start_to - 1}, "
                                   "all ended before retention"))  # fmt: skip
    return plans


async def _held_by(conn: asyncpg.Connection, p: Partition, cutoff: int | None, restored: bool) -> str | None:
    if cutoff is None:
        return "audit.retention_days is not set"
    if p.start_to > cutoff:
        return f"runs start in it until tick {p.start_to - 1}, within retention (until tick {cutoff})"
    if restored:
        return "restored (dee audit archive --drop-restored lets it go again)"
    open_runs = await conn.fetch(
        f"SELECT status, count(*) AS n, (array_agg(run_id ORDER BY run_id))[1:{EXAMPLES}] AS some FROM runs "
        f"WHERE start_tick >= $1 AND start_tick < $2 AND status NOT IN {TERMINAL_SQL} GROUP BY status ORDER BY status",
        p.start_from, p.start_to,
    )  # fmt: skip
    if open_runs:
        counts = ", ".join(f"{r['n']} {r['status']} ({', '.join(r['some'])}{', ...' if r['n'] > EXAMPLES else ''})" for r in open_runs)
        return f"held by runs not ended: {counts}; a failed run holds until it is retried to its end or cancelled"
    last = await conn.fetchval("SELECT max(current_tick) FROM runs WHERE start_tick >= $1 AND start_tick < $2", p.start_from, p.start_to)
    if last is not None and last > cutoff:
        return f"its last run ended at tick {last}, within retention (until tick {cutoff})"
    return None
