"""One partition worker driven batch by batch (no daemon, no dispatcher): how a batch's inputs
reach their runs. A batch is accepted and its runs advanced in one transaction, its inputs going
to their runs directly; inputs of runs over `max_runs_per_tick` wait in the inbox and are applied
on the next ticks at their own logical tick; when that one transaction fails, the batch is taken
in two (accept, then tick) and nothing is applied twice or lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.exceptions as redis_errors

from dee import Engine, EngineConfig, load_plan
from dee.bus import messages as wire
from dee.bus.streams import FIELD, Entry
from dee.ids import ulid
from dee.ops.bench import workload
from dee.scheduler.worker import PartitionWorker, TickFailed, TickReport
from dee.shell.store import OutboxItem

OUTREACH = "config/plans/sales-outreach-v2.yaml"
RUNS = 5
CAP = 2


def entry(message: wire.Message) -> Entry:
    return (f"0-{ulid()}".encode(), {FIELD: wire.encode(message)})


@pytest.fixture
async def worker(deployment: EngineConfig) -> AsyncIterator[tuple[PartitionWorker, asyncpg.Connection, list[str]]]:
    """The only partition's worker (cap 2) with five runs of the outreach plan started: each
    waits for the answer to its first email (no dispatcher runs here)."""
    async with Engine(deployment, scheduler=False) as engine:
        backend: Any = engine._backend
        plan = load_plan(OUTREACH, templates=engine.templates)
        version = await backend.register(plan)
        db = await asyncpg.connect(deployment.database)
        try:
            epoch = await db.fetchval("UPDATE partitions SET owner = 'w', epoch = epoch + 1 WHERE partition = 0 RETURNING epoch")
            worker = PartitionWorker(0, epoch, "w", deployment, backend.pool, backend.redis, backend.plans, backend.clock,
                result_key=backend.result_key,
            )
            items = [wire.BatchItem(ulid(), workload.contact(i)) for i in range(RUNS)]
            await worker.iterate([entry(wire.ExecuteBatch(command_id=ulid(), plan_id=plan.id, plan_version=version,
                                                          variables={"product": "DEE"}, items=items))])  # fmt: skip
            while (await worker.iterate([])).processed:
                pass
            waiting = await db.fetchval("SELECT count(*) FROM runs WHERE status = 'waiting' AND awaiting")
            assert waiting == RUNS
            yield worker, db, sorted(item.run_id for item in items)
        finally:
            await db.close()


async def opened(db: asyncpg.Connection, run_id: str) -> wire.Event:
    """The open of a run's first email, as a publisher sends it (with the run's contact)."""
    contact_id = await db.fetchval("SELECT contact_id FROM runs WHERE run_id = $1", run_id)
    return wire.Event(command_id=f"open-{run_id}", event_type="email.opened", contact_id=contact_id, run_id=run_id,
                      step_id="initial-email")  # fmt: skip


async def received(db: asyncpg.Connection) -> dict[str, list[int]]:
    """Ticks of each run's event.received entries."""
    rows = await db.fetch("SELECT run_id, tick FROM audit_log WHERE action = 'event.received' ORDER BY run_id, seq")
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["run_id"], []).append(r["tick"])
    return out


async def inbox(db: asyncpg.Connection) -> list[str]:
    return [r["run_id"] for r in await db.fetch("SELECT run_id FROM inbox ORDER BY seq")]


@pytest.mark.deployment(partitions=1, max_runs_per_tick=CAP)
async def test_a_batchs_inputs_reach_the_first_runs_at_once_and_the_rest_through_the_inbox(worker: Any) -> None:
    w, db, runs = worker
    report = await w.iterate([entry(await opened(db, r)) for r in reversed(runs)])
    tick = report.tick
    assert report.processed == CAP
    assert sorted(await received(db)) == runs[:CAP]  # ordered by run id, not by arrival
    assert await inbox(db) == list(reversed(runs[CAP:]))  # the rest wait, in arrival order
    reports = [await w.iterate([]) for _ in range(3)]
    assert [r.processed for r in reports] == [2, 1, 0]
    assert await received(db) == {r: [tick] for r in runs}  # once each, at the batch's tick
    assert await inbox(db) == []


@pytest.mark.deployment(partitions=1, max_runs_per_tick=CAP)
async def test_when_the_one_transaction_fails_the_batch_is_taken_in_two(worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    w, db, runs = worker
    original = w._advance
    calls: list[int] = []

    async def fails_once(conn: Any, store: Any, tick: int, report: TickReport, fresh: list[Any]) -> Any:
        calls.append(len(fresh))
        if len(calls) == 1:
            report.processed, report.tally.transitions, report.entries = 99, 99, 99  # counted, then rolled back
            raise RuntimeError("injected failure inside the combined transaction")
        return await original(conn, store, tick, report, fresh)

    monkeypatch.setattr(w, "_advance", fails_once)
    report = await w.iterate([entry(await opened(db, r)) for r in runs[:CAP]])
    assert calls == [CAP, 0]  # the second try took the batch through the inbox
    assert (report.processed, report.tally.transitions) == (CAP, 0)
    assert await received(db) == {r: [report.tick] for r in runs[:CAP]}
    assert await inbox(db) == []
    assert await db.fetchval("SELECT count(*) FROM received WHERE message_id LIKE 'open-%'") == CAP


@pytest.mark.deployment(partitions=1, max_runs_per_tick=CAP)
async def test_when_the_tick_fails_in_both_the_accepted_inputs_wait_in_the_inbox(worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    w, db, runs = worker

    async def broken(*_: Any) -> Any:
        raise RuntimeError("injected failure of every tick")

    monkeypatch.setattr(w, "_advance", broken)
    with pytest.raises(TickFailed):
        await w.iterate([entry(await opened(db, r)) for r in runs])
    assert await inbox(db) == runs  # accepted (and acknowledged), not applied
    assert await received(db) == {}
    monkeypatch.undo()
    while (await w.iterate([])).processed:
        pass
    assert sorted(await received(db)) == runs and all(len(t) == 1 for t in (await received(db)).values())
    assert await inbox(db) == []


@pytest.mark.deployment(partitions=1, max_runs_per_tick=CAP)
async def test_channel_actions_committed_while_redis_failed_are_published_once_it_answers(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, db, _ = worker
    stream = w.keys.dispatch("email")

    async def dispatched() -> set[str]:
        return {msgspec.json.decode(f[FIELD], type=OutboxItem).request.run_id for _, f in await w.redis.xrange(stream)}

    before = await dispatched()
    plan_id, version = await db.fetchrow("SELECT plan_id, version FROM plans")
    late = wire.BatchItem(ulid(), workload.contact(RUNS))
    await w.iterate([entry(wire.ExecuteBatch(command_id=ulid(), plan_id=plan_id, plan_version=version,
                                             variables={"product": "DEE"}, items=[late]))])  # fmt: skip
    pipeline = w.redis.pipeline

    def failing(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)

        async def refuse() -> None:
            raise redis_errors.ConnectionError("injected: Redis went away after the commit")

        pipe.execute = refuse
        return pipe

    monkeypatch.setattr(w.redis, "pipeline", failing)
    report = await w.guarded([])  # starts the run, commits its email, cannot publish it
    assert report.tick == -1 and await dispatched() == before
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1
    assert await db.fetchval("SELECT status FROM runs WHERE run_id = $1", late.run_id) == "waiting"
    monkeypatch.undo()
    await w.guarded([])  # Redis answers again: the leftover is published first
    assert await dispatched() == before | {late.run_id}
    await w.guarded([])  # idle: the published row is dropped
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


@pytest.mark.deployment(partitions=1, max_runs_per_tick=CAP)
async def test_a_revocation_in_the_batch_that_enrols_the_contact_refuses_its_first_email(worker: Any) -> None:
    # the run is started and its first email is due at the batch's tick; the revocation, later
    # in the same batch, reaches the new run before any timer of that tick fired: in time
    w, db, _ = worker
    plan_id, version = await db.fetchrow("SELECT plan_id, version FROM plans")
    new = wire.BatchItem(ulid(), workload.contact(RUNS))
    revoke = wire.Consent(command_id=ulid(), contact_id=new.contact["id"], channel="email", status="revoked", source="test")
    await w.iterate([entry(wire.ExecuteBatch(command_id=ulid(), plan_id=plan_id, plan_version=version,
                                             variables={"product": "DEE"}, items=[new])), entry(revoke)])  # fmt: skip
    while (await w.iterate([])).processed:
        pass
    rows = await db.fetch("SELECT action, input FROM audit_log WHERE run_id = $1 ORDER BY seq", new.run_id)
    actions = [r["action"] for r in rows]
    assert "step.dispatched" not in actions and "step.skipped" in actions
    [fact] = [r for r in rows if r["action"] == "event.received"]
    assert "afterTimers" not in msgspec.json.decode(fact["input"])  # in force from its tick
    sent = {msgspec.json.decode(f[FIELD], type=OutboxItem).request.run_id for _, f in await w.redis.xrange(w.keys.dispatch("email"))}
    assert new.run_id not in sent and len(sent) == RUNS  # the fixture's five first emails, not this one
