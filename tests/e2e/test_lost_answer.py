"""A write committed just before the daemon dies must still be answered once it is back.

Found by the crash loop: a daemon killed after committing a write (and acknowledging its stream
entry) but before XADDing the answer to `replyTo` never answers it, although it is back within a
second or two; the caller waits out the reply timeout and gets EngineUnavailableError for a write
that was applied. Retrying then fails too (a second `execute` without idempotency key raises
AlreadyEnrolledError, a second `pause` InvalidTransitionError), so the caller cannot tell.

The crash is placed exactly in that window: the worker's answer step raises (a stand-in for
SIGKILL, which cannot be aimed that precisely), then the partition is taken back by the same
instance under a new epoch, as a restarted `dee run` does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from dee import Engine, EngineConfig, load_plan
from dee.bus.streams import GROUP, Keys, ensure_group
from dee.routing import partition_for
from dee.scheduler.worker import PartitionWorker
from tests.e2e.conftest import PARTITIONS, engine_client

OUTREACH = "config/plans/sales-outreach-v2.yaml"
ANSWER_WITHIN_S = 40  # well over the client's reply timeout (client.reply_timeout_ms)


class Killed(BaseException):
    """The process died here (not an Exception: nothing in the worker may catch it)."""


def contact(cid: str) -> dict[str, Any]:
    return {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550001", "attributes": {"company": "Acme"}}


class Partition:
    """Partition p of a deployment served by in-process workers of one instance name."""

    def __init__(self, config: EngineConfig, client: Engine, partition: int, instance: str = "crashy") -> None:
        self.config = config
        self.backend = client._backend
        self.partition = partition
        self.instance = instance
        self.tasks: list[asyncio.Task[None]] = []
        self.workers: list[PartitionWorker] = []

    async def start(self, dies_before_answering: bool = False) -> asyncio.Task[None]:
        """(Re)start the worker the way `dee run` does: same instance, lease retaken, new epoch."""
        conn = await asyncpg.connect(self.config.database)
        try:
            epoch = await conn.fetchval(
                "UPDATE partitions SET owner = $2, epoch = epoch + 1, lease_until = now() + interval '1 hour' "
                "WHERE partition = $1 RETURNING epoch",
                self.partition, self.instance,
            )  # fmt: skip
        finally:
            await conn.close()
        b = self.backend
        worker = PartitionWorker(self.partition, epoch, self.instance, self.config, b.pool, b.redis, b.plans, b.clock,
            result_key=b.result_key,
        )
        if dies_before_answering:
            deliver = worker._deliver

            async def die_before_answering(replies: Any, outbox: Any, acks: Any, refused: Any = ()) -> None:
                if replies:
                    raise Killed
                await deliver(replies, outbox, acks, refused)

            worker._deliver = die_before_answering  # type: ignore[method-assign]
        self.workers.append(worker)
        task = asyncio.create_task(worker.run())
        self.tasks.append(task)
        return task

    async def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _serve(config: EngineConfig, client: Engine, cid: str) -> Partition:
    keys = Keys(config.namespace)
    for p in range(PARTITIONS):
        await ensure_group(client._backend.redis, keys.inbound(p), GROUP)
    return Partition(config, client, partition_for(cid, PARTITIONS))


async def test_an_execute_committed_just_before_a_crash_is_answered_after_the_restart(e2e_deployment: EngineConfig) -> None:
    config = e2e_deployment
    plan = load_plan(OUTREACH)
    async with engine_client(config) as client:
        partition = await _serve(config, client, "lost-1")
        try:
            first = await partition.start(dies_before_answering=True)
            call = asyncio.create_task(client.execute(plan, contact("lost-1"), {"product": "DEE"}))
            done, _ = await asyncio.wait({first}, timeout=10)
            assert done and isinstance(first.exception(), Killed), "the worker did not reach its answer step"
            committed = await client.list_runs(contact_id="lost-1")
            assert committed.total == 1, "the write was not committed before the crash"

            await partition.start()  # back within a second
            run = await asyncio.wait_for(call, ANSWER_WITHIN_S)  # raises EngineUnavailableError today (the answer was lost)
            assert run.id == committed.runs[0].id
        finally:
            await partition.stop()


async def test_a_pause_applied_just_before_a_crash_is_answered_after_the_restart(e2e_deployment: EngineConfig) -> None:
    config = e2e_deployment
    plan = load_plan(OUTREACH)
    async with engine_client(config) as client:
        partition = await _serve(config, client, "lost-2")
        try:
            await partition.start()
            run = await client.execute(plan, contact("lost-2"), {"product": "DEE"})
            await partition.stop()

            first = await partition.start(dies_before_answering=True)
            call = asyncio.create_task(client.pause_run(run.id))
            done, _ = await asyncio.wait({first}, timeout=10)
            assert done and isinstance(first.exception(), Killed), "the worker did not reach its answer step"
            assert (await client.get_run(run.id)).status == "paused", "the pause was not applied before the crash"

            await partition.start()
            await asyncio.wait_for(call, ANSWER_WITHIN_S)  # raises EngineUnavailableError today (the answer was lost)
            assert (await client.get_run(run.id)).status == "paused"
        finally:
            await partition.stop()
