"""The deployment clock: which tick it is now, for a partition.

`wall`: `(now - epoch) // tick_interval_ms`, with the epoch fixed at the first migrate.
`manual`: `dee_meta.manual_tick`, moved only by `advance_clock`; it belongs to the deployment,
so every daemon process follows the same clock. Either way a partition's tick never goes back.
"""

from __future__ import annotations

import time

import asyncpg

from dee.config import EngineConfig


class DeploymentClock:
    def __init__(self, config: EngineConfig, epoch_ms: int) -> None:
        self.mode = config.scheduler.clock
        self.interval = config.scheduler.tick_interval_ms
        self.epoch_ms = epoch_ms

    def cached(self, last_tick: int) -> bool:
        """True when the clock cannot have moved past `last_tick` without telling the worker:
        a manual clock always sends a wake-up message when it moves; a wall clock moves on its own."""
        return self.mode == "manual" or self.wall_tick() <= last_tick

    def wall_tick(self) -> int:
        return max(0, (int(time.time() * 1000) - self.epoch_ms) // self.interval)

    async def tick(self, conn: asyncpg.Connection, partition: int) -> int:
        if self.mode == "manual":
            row = await conn.fetchrow(
                "SELECT m.manual_tick, p.tick FROM dee_meta m, partitions p WHERE p.partition = $1", partition
            )
        else:
            row = await conn.fetchrow("SELECT $2::bigint AS manual_tick, tick FROM partitions WHERE partition = $1",
                                      partition, self.wall_tick())  # fmt: skip
        tick: int = max(row["manual_tick"], row["tick"])  # two bigint columns
        return tick
