"""Which partitions this process owns: heartbeats, rendezvous assignment, leases with fencing.

Leases live in Postgres on the database clock. Taking partition p bumps its epoch, which is the
fencing token every tick transaction checks; so two writers can overlap in time but never both
commit. An instance wants the partitions it wins by rendezvous hashing with bounded load among the live instances
(or the ones its static `partition_key` names), takes only free or expired leases, and drains a
partition (stop reading, finish the iteration, release) before giving it up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from dee.config import EngineConfig
from dee.metrics import Metrics
from dee.scheduler.outages import TRANSIENT_ERRORS, Outages

log = logging.getLogger("dee.coordinator")


def _rank(partition: int, instance: str) -> bytes:
    return hashlib.sha256(f"{instance}|{partition}".encode()).digest()


def assignment(partitions: int, instances: list[str]) -> dict[int, str]:
    """Rendezvous hashing with bounded load: partition by partition, the instance with the
    highest hash among those holding fewer than ceil(partitions / instances). Every instance
    computes the same answer from the same live set; the bound keeps the split even (plain
    rendezvous gave one of two daemons 12 of 16 partitions), and most partitions still stay
    where they were when an instance comes or goes."""
    if not instances:
        return {}
    cap = -(-partitions // len(instances))
    load = dict.fromkeys(instances, 0)
    owners: dict[int, str] = {}
    for partition in range(partitions):
        ranked = sorted(instances, key=lambda i: _rank(partition, i), reverse=True)
        owner = next(i for i in ranked if load[i] < cap)
        owners[partition] = owner
        load[owner] += 1
    return owners


def parse_partition_key(key: str, partitions: int) -> set[int]:
    """`"0-7,12"` → {0..7, 12}: a static assignment (e.g. one StatefulSet pod's share)."""
    owned: set[int] = set()
    for part in key.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            owned.update(range(int(low), int(high) + 1))
        elif part:
            owned.add(int(part))
    bad = sorted(p for p in owned if not 0 <= p < partitions)
    if bad:
        raise ValueError(f"partition_key names partitions outside 0..{partitions - 1}: {bad}")
    return owned


class Coordinator:
    def __init__(
        self, instance: str, config: EngineConfig, pool: asyncpg.Pool,
        start: Callable[[int, int], Awaitable[None]], stop: Callable[[int], Awaitable[None]],
        outages: Outages | None = None, metrics: Metrics | None = None,
    ) -> None:  # fmt: skip
        self.instance = instance
        self.config = config
        self.pool = pool
        self._start = start
        self._stop = stop
        self.outages = outages or Outages()
        self.metrics = metrics
        self.owned: dict[int, int] = {}
        self.lease_losses = 0
        self.ttl_ms = config.scheduler.lease_ttl_ms
        key = config.scheduler.partition_key
        self.static = parse_partition_key(key, config.scheduler.partitions) if key else None

    async def run(self) -> None:
        """Heartbeat and rebalance every third of the lease TTL, for as long as the process
        runs: a failed round (the database restarting, say) is logged and the next one tries
        again; if this loop died, leases would lapse and the instance would serve nothing."""
        while True:
            try:
                await self.rebalance()
                self.outages.recovered("PostgreSQL")
            except (asyncpg.PostgresError, *TRANSIENT_ERRORS) as exc:
                self.outages.failed(exc, "coordinator")
            except Exception:
                log.exception("coordinator: rebalancing failed; trying again")
            await asyncio.sleep(self.ttl_ms / 3000)

    async def desired(self, conn: asyncpg.Connection) -> set[int]:
        if self.static is not None:
            return self.static
        live = [
            r["instance"]
            for r in await conn.fetch(
                "SELECT instance FROM instances WHERE last_seen > now() - make_interval(secs => $1::float8 / 1000)",
                self.ttl_ms,
            )
        ]
        if self.instance not in live:
            live.append(self.instance)
        return {p for p, owner in assignment(self.config.scheduler.partitions, sorted(live)).items() if owner == self.instance}

    async def rebalance(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO instances (instance) VALUES ($1) ON CONFLICT (instance) DO UPDATE SET last_seen = now()",
                self.instance,
            )
            want = await self.desired(conn)
            for partition in sorted(set(self.owned) - want):
                await self.release(partition)
            if self.owned:
                kept = await conn.fetch(
                    "UPDATE partitions SET lease_until = now() + make_interval(secs => $3::float8 / 1000) "
                    "FROM unnest($1::int[], $2::bigint[]) AS o(p, e) "
                    "WHERE partition = o.p AND epoch = o.e AND owner = $4 RETURNING partition",
                    list(self.owned), list(self.owned.values()), self.ttl_ms, self.instance,
                )  # fmt: skip
                lost = set(self.owned) - {r["partition"] for r in kept}
                for partition in sorted(lost):
                    if self.owned.pop(partition, None) is None:
                        continue  # its worker, fenced out meanwhile, found the loss first (and counted it)
                    log.warning("lost the lease of partition %s", partition)
                    self.lost()
                    await self._stop(partition)
            for partition in sorted(want - set(self.owned)):
                epoch = await conn.fetchval(
                    "UPDATE partitions SET owner = $2, epoch = epoch + 1, "
                    "lease_until = now() + make_interval(secs => $3::float8 / 1000) "
                    "WHERE partition = $1 AND (lease_until < now() OR owner IS NULL OR owner = $2) RETURNING epoch",
                    partition, self.instance, self.ttl_ms,
                )  # fmt: skip
                if epoch is not None:
                    self.owned[partition] = epoch
                    await self._start(partition, epoch)

    def lost(self) -> None:
        """A lease was lost: not renewed in time (found here), or fenced out at commit (found
        by its worker)."""
        self.lease_losses += 1
        if self.metrics is not None:
            self.metrics.lease_losses.inc()

    async def release(self, partition: int) -> None:
        """Drain then hand back: the next owner may take it at once instead of waiting the TTL."""
        epoch = self.owned.pop(partition, None)
        await self._stop(partition)
        if epoch is None:
            return  # its worker stopped on its own (lease lost or crashed) meanwhile
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE partitions SET owner = NULL, lease_until = 'epoch' WHERE partition = $1 AND epoch = $2 AND owner = $3",
                partition, epoch, self.instance,
            )  # fmt: skip

    async def release_all(self) -> None:
        for partition in sorted(self.owned):
            await self.release(partition)
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM instances WHERE instance = $1", self.instance)
