"""The scheduler side of a process: coordinator, partition workers and dispatcher together.

`Engine(config, scheduler=True)` and `dee run` start one of these. Stopping drains: the
dispatcher stops taking work, every worker finishes its iteration, leases are handed back.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
from collections.abc import Coroutine, Mapping
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from dee import logfields
from dee.bus.streams import GROUP, Keys, ensure_group
from dee.config import EngineConfig
from dee.errors import LeaseLostError
from dee.limits.counters import SendClock
from dee.limits.rules import Rules
from dee.limits.shared import RedisLimiter
from dee.metrics import Metrics
from dee.plugin.contracts import ChannelAdapter
from dee.privacy.keys import MasterKey
from dee.scheduler.backlog import BacklogSampler
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.coordinator import Coordinator
from dee.scheduler.dispatcher import Dispatcher
from dee.scheduler.outages import Outages
from dee.scheduler.runcounts import Census
from dee.scheduler.worker import PartitionWorker
from dee.stores.postgres.plans import PlanCache

log = logging.getLogger("dee.runtime")


def default_instance_name(config: EngineConfig) -> str:
    """Stable across restarts of the same process slot (so its pending stream entries come
    back to it): `DEE_INSTANCE`, else the partition key, else the host name."""
    return os.environ.get("DEE_INSTANCE") or config.scheduler.partition_key or socket.gethostname()


class Runtime:
    def __init__(
        self, config: EngineConfig, pool: asyncpg.Pool, redis: aioredis.Redis, plans: PlanCache,
        clock: DeploymentClock, adapters: Mapping[str, ChannelAdapter], instance: str | None = None,
        metrics: Metrics | None = None, outages: Outages | None = None, *, result_key: bytes, master: MasterKey | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.pool = pool
        self.redis = redis
        self.plans = plans
        self.clock = clock
        self.instance = instance or default_instance_name(config)
        self.metrics = metrics
        self.outages = outages or Outages()
        self.workers: dict[int, tuple[PartitionWorker, asyncio.Task[None]]] = {}
        self.coordinator = Coordinator(self.instance, config, pool, self._start_worker, self._stop_worker, self.outages, metrics)
        self.keys = Keys(config.namespace)
        self.result_key = result_key
        self.master = master  # wraps the contacts' keys (`dee.privacy`)
        self.dispatcher = Dispatcher(self.instance, redis, adapters, config.scheduler.lease_ttl_ms, self.keys, metrics, self.outages,
                                     result_key=result_key, limits=self._limiter())  # fmt: skip
        self.census = Census(pool) if metrics is not None else None
        if metrics is not None:  # read when scraped: right whichever way a partition came or went
            metrics.partitions_owned.set_function(lambda: len(self.coordinator.owned))
        self._tasks: list[asyncio.Task[None]] = []

    def _limiter(self) -> RedisLimiter | None:
        """The deployment's limits and budgets in Redis, or None when none is configured."""
        policy = self.config.policy
        rules = Rules.of(policy.deliverability, policy.budgets)
        if rules is None:
            return None
        clock = SendClock(self.clock.epoch_ms, self.config.scheduler.tick_interval_ms, wall=self.clock.mode == "wall")
        return RedisLimiter(rules, clock, self.redis, self.keys)

    async def start(self) -> None:
        for partition in range(self.config.scheduler.partitions):
            await ensure_group(self.redis, self.keys.inbound(partition), GROUP)
        await self.coordinator.rebalance()
        self._tasks = [
            self._task(self.coordinator.run(), "dee-coordinator"),
            self._task(self.dispatcher.run(), "dee-dispatcher"),
        ]
        if self.metrics is not None and self.census is not None:
            sampler = BacklogSampler(self.redis, self.keys, self.metrics, lambda: self.coordinator.owned.keys(),
                                     sorted(self.dispatcher.adapters), self.outages)  # fmt: skip
            self._tasks += [self._task(self.census.run(), "dee-census"), self._task(sampler.run(), "dee-backlog")]

    def _task(self, work: Coroutine[Any, Any, None], name: str, partition: int | None = None) -> asyncio.Task[None]:
        """A task whose log records name this instance (and its partition, for a worker)."""
        context = contextvars.copy_context()
        context.run(logfields.instance.set, self.instance)
        if partition is not None:
            context.run(logfields.partition.set, partition)
        return asyncio.create_task(work, name=name, context=context)

    async def stop(self) -> None:
        """Drain: finish in-flight work, hand back every lease, then stop."""
        self.dispatcher.stop()
        self._tasks[0].cancel() if self._tasks else None
        await self.coordinator.release_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def owned(self) -> list[int]:
        return sorted(self.coordinator.owned)

    async def _start_worker(self, partition: int, epoch: int) -> None:
        worker = PartitionWorker(
            partition, epoch, self.instance, self.config, self.pool, self.redis, self.plans, self.clock, self.metrics,
            self.outages, result_key=self.result_key, census=self.census, master=self.master,
        )
        self.workers[partition] = (worker, self._task(self._run_worker(worker), f"dee-p{partition}", partition))

    async def _run_worker(self, worker: PartitionWorker) -> None:
        try:
            await worker.run()
        except LeaseLostError as exc:
            log.warning("%s; the worker stops", exc)
            if self.coordinator.owned.pop(worker.partition, None) is not None:  # else the coordinator counted it
                self.coordinator.lost()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("partition %s worker crashed; its lease will be retaken", worker.partition)
            self.coordinator.owned.pop(worker.partition, None)

    async def _stop_worker(self, partition: int) -> None:
        entry = self.workers.pop(partition, None)
        if entry is None:
            return
        worker, task = entry
        worker.stop()
        try:
            await asyncio.wait_for(task, timeout=max(5.0, self.config.scheduler.lease_ttl_ms / 1000))
        except TimeoutError:
            task.cancel()
