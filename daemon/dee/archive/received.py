"""Forgetting old message ids: `received` rows older than `bus.dedupe_days`.

A message id is remembered so that a publisher's retry is answered with the first reply and
not applied twice. Past the dedupe window a retry of it would be accepted as new, so the
window must be longer than anything retries (see docs/operations.md). A row whose message
still waits in the inbox for its run is kept whatever its age. Deleted in batches, each its own
transaction, so the daemons' intake never waits long.
"""

from __future__ import annotations

import asyncpg

from dee.stores.postgres.audit_partitions import period_ticks

BATCH = 10_000
_DOOMED = ("FROM received r WHERE r.tick < $1 AND NOT EXISTS "
           "(SELECT 1 FROM inbox i WHERE i.message_id = r.message_id)")  # fmt: skip


async def prune_received(conn: asyncpg.Connection, dedupe_days: int, tick_interval_ms: int, now_tick: int, dry_run: bool) -> int:
    """Delete (or, `dry_run`, count) the ids accepted more than `dedupe_days` before `now_tick`."""
    cutoff = now_tick - period_ticks(dedupe_days, tick_interval_ms)
    if dry_run:
        return int(await conn.fetchval(f"SELECT count(*) {_DOOMED}", cutoff))
    total = 0
    while True:
        done = await conn.fetchval(
            f"WITH gone AS (DELETE FROM received WHERE message_id IN (SELECT r.message_id {_DOOMED} LIMIT $2) RETURNING 1) "
            "SELECT count(*) FROM gone", cutoff, BATCH,
        )  # fmt: skip
        total += int(done)
        if done < BATCH:
            return total
