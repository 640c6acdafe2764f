"""A forced split brain (DESIGN section 4): a writer whose lease was taken over must not commit.

The lease of partition p is taken from under a live worker (another connection bumps the epoch,
as a new owner does). The stale worker is then fed input: its transaction must be refused with
LeaseLostError, nothing it processed may land in runs / audit_log / inbox / received, its stream
entries must stay unacknowledged, and the new owner must then process them exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from dee import Engine, EngineConfig, load_plan
from dee.bus import messages as wire
from dee.bus.streams import FIELD, GROUP, Keys, ensure_group
from dee.engine import as_contact
from dee.errors import LeaseLostError
from dee.ids import ulid
from dee.routing import partition_for
from dee.scheduler.runtime import Runtime
from dee.scheduler.worker import PartitionWorker
from tests.e2e.conftest import LEASE_TTL_MS, PARTITIONS, engine_client, lease_table, wait_for

OUTREACH = "config/plans/sales-outreach-v2.yaml"
TTL_S = LEASE_TTL_MS / 1000


def contact(cid: str) -> dict[str, Any]:
    return {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550001", "attributes": {"company": "Acme"}}


def same_partition(prefix: str, partition: int, count: int) -> list[str]:
    found = []
    i = 0
    while len(found) < count:
        if partition_for(f"{prefix}-{i}", PARTITIONS) == partition:
            found.append(f"{prefix}-{i}")
        i += 1
    return found


async def take_lease(db: asyncpg.Connection, partition: int, owner: str, hold_s: float) -> int:
    """What a new owner does (DESIGN section 4), forced: owner and a new fencing epoch."""
    epoch = await db.fetchval(
        "UPDATE partitions SET owner = $2, epoch = epoch + 1, lease_until = now() + make_interval(secs => $3) "
        "WHERE partition = $1 RETURNING epoch",
        partition, owner, hold_s,
    )  # fmt: skip
    assert epoch is not None
    return int(epoch)


async def footprint(db: asyncpg.Connection, partition: int, run_ids: list[str], message_ids: list[str]) -> dict[str, Any]:
    """What a commit would have left behind for these runs and messages."""
    return {
        "runs": await db.fetchval("SELECT count(*) FROM runs WHERE run_id = ANY($1::text[])", run_ids),
        "audit": await db.fetchval("SELECT count(*) FROM audit_log WHERE run_id = ANY($1::text[])", run_ids),
        "inbox": await db.fetchval("SELECT count(*) FROM inbox WHERE partition = $1", partition),
        "received": await db.fetchval("SELECT count(*) FROM received WHERE message_id = ANY($1::text[])", message_ids),
    }


async def events_received(client: Engine, run_id: str, event_id: str) -> int:
    """Read through the engine: the entries' inputs are sealed in the table."""
    entries = await client.audit.query(run_id=run_id, actions=["event.received"])
    return sum(1 for e in entries if e.input and e.input.get("eventId") == event_id)


async def pending_by_consumer(redis: aioredis.Redis, stream: str) -> dict[bytes, str]:
    """entry id -> consumer holding it (delivered, not acknowledged)."""
    rows = await redis.xpending_range(stream, GROUP, min="-", max="+", count=1000)
    return {r["message_id"]: r["consumer"].decode() if isinstance(r["consumer"], bytes) else r["consumer"] for r in rows}


async def read_replies(redis: aioredis.Redis, stream: str, count: int, timeout: float) -> list[wire.Reply]:
    replies: list[wire.Reply] = []

    async def enough() -> bool:
        entries = await redis.xrange(stream)
        replies[:] = [msgspec.json.decode(fields[FIELD], type=wire.Reply) for _, fields in entries]
        return len(replies) >= count

    await wait_for(enough, timeout, f"{count} replies on {stream}")
    return replies


async def test_a_stale_partition_worker_cannot_commit_and_the_new_owner_processes_its_input_once(
    e2e_deployment: EngineConfig,
) -> None:
    config = e2e_deployment
    keys = Keys(config.namespace)
    plan = load_plan(OUTREACH)
    async with engine_client(config) as client:
        backend = client._backend
        pool, redis = backend.pool, backend.redis
        partition = partition_for("split-a", PARTITIONS)
        first, second = "split-a", same_partition("split-b", partition, 1)[0]
        stream = keys.inbound(partition)
        for p in range(PARTITIONS):
            await ensure_group(redis, keys.inbound(p), GROUP)
        db = await asyncpg.connect(config.database)
        try:
            # the stale writer holds partition p with epoch e, and works: it commits a new run
            epoch = await take_lease(db, partition, "stale", 3600)
            stale = PartitionWorker(partition, epoch, "stale", config, pool, redis, backend.plans, backend.clock,
                result_key=backend.result_key,
            )
            stale_task = asyncio.create_task(stale.run())
            run_a = await client.execute(plan, contact(first), {"product": "DEE"})

            async def sent() -> bool:
                run = await client.get_run(run_a.id)
                return (run.status, run.current_step) == ("waiting", "initial-email")

            await wait_for(sent, 5, "the stale worker to start the run and dispatch its first email")
            await wait_for(lambda: _no_pending(redis, stream), 5, "the stale worker to acknowledge its first input")
            await asyncio.sleep(0.3)  # let it go idle, blocked in XREADGROUP

            # split brain: another owner takes the lease over from another connection
            new_epoch = await take_lease(db, partition, "other", 3600)
            assert new_epoch == epoch + 1
            assert not stale_task.done()

            # feed the stale worker an execute and an event, in one atomic publish (one batch)
            version = await backend.register(plan)
            reply_to = keys.reply("split-brain-test")
            run_b_id = ulid()
            execute = wire.Execute(
                command_id="split-exec-1", reply_to=reply_to, run_id=run_b_id, plan_id=plan.id, plan_version=version,
                contact=as_contact(contact(second)), variables={"product": "DEE"},
            )  # fmt: skip
            event = wire.Event(
                command_id="split-evt-1", reply_to=reply_to, event_type="email.opened", contact_id=first,
                step_id="initial-email",
            )  # fmt: skip
            async with redis.pipeline(transaction=True) as pipe:
                pipe.xadd(stream, {FIELD: wire.encode(execute)})
                pipe.xadd(stream, {FIELD: wire.encode(event)})
                fed = list(await pipe.execute())

            # its commit is refused and the worker stops
            with pytest.raises(LeaseLostError):
                await asyncio.wait_for(stale_task, 10)
            with pytest.raises(LeaseLostError):
                await stale.iterate([])  # and it stays refused

            # nothing it processed landed; its entries were delivered to it and NOT acknowledged
            pending = await pending_by_consumer(redis, stream)
            assert {e: pending.get(e) for e in fed} == dict.fromkeys(fed, "stale"), pending
            assert await footprint(db, partition, [run_b_id], ["split-exec-1", "split-evt-1"]) == {
                "runs": 0, "audit": 0, "inbox": 0, "received": 0,
            }  # fmt: skip
            assert await events_received(client, run_a.id, "split-evt-1") == 0
            assert await redis.xlen(reply_to) == 0, "the stale writer replied to a write it did not commit"
            row = (await lease_table(config.database))[partition]
            assert (row["owner"], row["epoch"]) == ("other", new_epoch)

            # the new owner claims the stale consumer's entries and processes them exactly once
            other = PartitionWorker(partition, new_epoch, "other", config, pool, redis, backend.plans, backend.clock,
                result_key=backend.result_key,
            )
            other_task = asyncio.create_task(other.run())
            try:
                replies = {r.command_id: r for r in await read_replies(redis, reply_to, 2, 10)}
                assert replies["split-exec-1"].ok and replies["split-exec-1"].run_id == run_b_id
                assert replies["split-evt-1"].ok and replies["split-evt-1"].runs == [run_a.id]
                await wait_for(lambda: _no_pending(redis, stream), 5, "the new owner to acknowledge the entries")

                # a publisher retrying the same messages changes nothing
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.xadd(stream, {FIELD: wire.encode(execute)})
                    pipe.xadd(stream, {FIELD: wire.encode(event)})
                    await pipe.execute()
                again = await read_replies(redis, reply_to, 4, 10)
                assert {r.command_id: r for r in again[2:]} == replies  # the stored first answers
                await wait_for(lambda: _no_pending(redis, stream), 5, "the duplicates to be acknowledged")
                assert not other_task.done()
            finally:
                other.stop()
                await asyncio.wait_for(other_task, 10)

            assert await db.fetchval("SELECT count(*) FROM runs WHERE contact_id = $1", second) == 1
            started = await db.fetchval("SELECT count(*) FROM audit_log WHERE run_id = $1 AND action = 'run.started'", run_b_id)
            assert started == 1
            assert await events_received(client, run_a.id, "split-evt-1") == 1
            assert await db.fetchval(
                "SELECT count(*) FROM received WHERE message_id = ANY($1::text[])", ["split-exec-1", "split-evt-1"]
            ) == 2  # fmt: skip
            for run_id in (run_a.id, run_b_id):
                assert (await client.verify_audit_chain(run_id)).valid
            assert await redis.xlen(keys.dead(partition)) == 0
        finally:
            await db.close()


async def _no_pending(redis: aioredis.Redis, stream: str) -> bool:
    summary = await redis.xpending(stream, GROUP)
    return not summary["pending"]


async def test_a_runtime_whose_lease_was_taken_stops_writing_and_retakes_the_partition_only_when_free(
    e2e_deployment: EngineConfig,
) -> None:
    """The same through the coordinator: the runtime loses p, does not touch it while another
    owner's lease is live, and takes it back (new epoch) once it is free; the write sent
    meanwhile is applied once, by the rightful owner."""
    config = e2e_deployment
    plan = load_plan(OUTREACH)
    async with engine_client(config) as client:
        backend = client._backend
        runtime = Runtime(config, backend.pool, backend.redis, backend.plans, backend.clock, backend.adapters, instance="r1",
                          result_key=backend.result_key)
        await runtime.start()
        db = await asyncpg.connect(config.database)
        try:
            assert runtime.owned == list(range(PARTITIONS))
            run = await client.execute(plan, contact("steal-a"), {"product": "DEE"})
            await client.run_until_idle()
            partition = partition_for("steal-a", PARTITIONS)
            before = await lease_table(config.database)

            thief_epoch = await take_lease(db, partition, "thief", 3600)
            assert thief_epoch == before[partition]["epoch"] + 1
            ingest = asyncio.create_task(
                client.ingest_event("email.opened", "steal-a", {}, step_id="initial-email", event_id="steal-evt-1")
            )

            async def lost() -> bool:
                return partition not in runtime.owned

            await wait_for(lost, 4 * TTL_S, "the runtime to give up the partition it lost")
            assert runtime.coordinator.lease_losses >= 1
            await asyncio.sleep(2 * TTL_S)  # the thief's lease is live: the runtime must keep off
            row = (await lease_table(config.database))[partition]
            assert (row["owner"], row["epoch"]) == ("thief", thief_epoch)
            assert partition not in runtime.owned and not ingest.done()
            assert await events_received(client, run.id, "steal-evt-1") == 0
            assert await db.fetchval("SELECT count(*) FROM received WHERE message_id = 'steal-evt-1'") == 0

            # the thief goes away (its lease is released): the runtime takes p back with a new epoch
            await db.execute("UPDATE partitions SET owner = NULL, lease_until = 'epoch' WHERE partition = $1", partition)
            assert await asyncio.wait_for(ingest, 4 * TTL_S + 5) == [run.id]
            row = (await lease_table(config.database))[partition]
            assert (row["owner"], row["epoch"]) == ("r1", thief_epoch + 1)
            assert partition in runtime.owned
            await client.run_until_idle()
            assert await events_received(client, run.id, "steal-evt-1") == 1
            assert (await client.verify_audit_chain(run.id)).valid
            assert (await client.replay(run.id)).identical
        finally:
            await db.close()
            await runtime.stop()
