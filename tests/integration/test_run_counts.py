"""The census counts runs by status in a snapshot taken while its workers wait, against the
real PostgreSQL: a run committed after the snapshot (a worker's next commit, whose move the
worker adds itself) is not in the count, so it is counted once."""

from __future__ import annotations

import asyncio

import asyncpg

from dee import EngineConfig
from dee.scheduler.runcounts import Census, RunCounts

INSERT = ("INSERT INTO runs (run_id, partition, plan_id, plan_version, contact_id, status, start_tick, current_tick, seq, head, state) "
          "VALUES ($1, $2, 'p', 1, $1, $3, 0, 0, 1, 'h', '\\x00')")  # fmt: skip


async def test_a_commit_after_the_snapshot_is_counted_by_its_move_alone(deployment: EngineConfig) -> None:
    pool = await asyncpg.create_pool(deployment.database, min_size=1, max_size=1)
    census = Census(pool)
    counting = asyncio.create_task(census.run())
    writer = await asyncpg.connect(deployment.database)
    try:
        for n, status in enumerate(("completed", "completed", "waiting")):
            await writer.execute(INSERT, f"r{n}", 0, status)
        await writer.execute(INSERT, "other", 1, "failed")
        zero, one, gave_up = RunCounts(0), RunCounts(1), RunCounts(0)
        held = await pool.acquire()  # the census waits for the pool's one connection meanwhile
        asked = [asyncio.create_task(census.snapshot(counts)) for counts in (zero, gave_up, one)]
        await asyncio.sleep(0.2)
        asked[1].cancel()  # a worker stopped while it waited: the others are counted all the same
        async with writer.transaction():
            await writer.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # the count waits for this commit
            await pool.release(held)
            await asyncio.gather(asked[0], asked[2])  # the snapshot is taken: the workers go on
            await writer.execute(INSERT, "r-late", 0, "pending")  # the worker's next commit, after the snapshot
        zero.moved({"pending": 1})
        for _ in range(100):
            if zero.counted and one.counted:
                break
            await asyncio.sleep(0.05)
        assert {s: zero.value(s) for s in ("pending", "waiting", "completed")} == {"pending": 1.0, "waiting": 1.0, "completed": 2.0}
        assert one.value("failed") == 1.0 and one.value("completed") == 0.0
    finally:
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)
        await writer.close()
        await pool.close()
