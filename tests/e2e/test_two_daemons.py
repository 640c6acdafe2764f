"""Two `dee run` processes sharing 16 partitions: the rendezvous split, a take-over after SIGKILL
within a few lease TTLs, and SIGTERM handing the leases back at once (SPEC section 5, DESIGN
section 4). The kill and the SIGTERM land while the deployment has work in progress, so the
survivor also has to pick up the other's unacknowledged stream entries, unpublished outbox rows
and unanswered dispatches, without changing a trace or sending anything twice."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import asyncpg

from dee import EngineConfig, load_plan
from dee.ops import consents
from dee.routing import partition_for
from dee.scheduler.coordinator import assignment
from tests.e2e.conftest import (
    LEASE_TTL_MS,
    PARTITIONS,
    DaemonFactory,
    engine_client,
    lease_table,
    owners,
    simulated_sends,
    wait_for,
    when_busy,
)  # fmt: skip

OUTREACH = "config/plans/sales-outreach-v2.yaml"
DAY = 86_400
TTL_S = LEASE_TTL_MS / 1000
# the cold path of the outreach plan (no events): (ticks after the start, step entered)
COLD_PATH = [
    (0, "initial-email"), (0, "wait-1"), (3 * DAY, "check-email-1"), (3 * DAY, "cold-follow-up"), (3 * DAY, "wait-3"),
    (7 * DAY, "call-attempt"), (7 * DAY, "wait-4"), (9 * DAY, "breakup-email"), (9 * DAY, "end-no-reply"),
]  # fmt: skip


def contact(cid: str) -> dict[str, object]:
    return {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550001", "attributes": {"company": "Acme"}}


async def test_two_daemons_split_the_partitions_and_one_takes_over_when_the_other_dies(
    e2e_deployment: EngineConfig, daemons: DaemonFactory
) -> None:
    config = e2e_deployment
    db = config.database
    split = assignment(PARTITIONS, ["a", "b"])
    b_partitions = sorted(p for p, owner in split.items() if owner == "b")
    assert len(b_partitions) == PARTITIONS // 2  # bounded load: an even split
    all_a = dict.fromkeys(range(PARTITIONS), "a")
    a, b = daemons("a"), daemons("b")
    a.start()
    b.start()

    async def owned_as(expected: dict[int, str]) -> bool:
        return await owners(db) == expected

    # both end up owning partitions: every partition owned, split evenly between a and b
    await wait_for(lambda: owned_as(split), 30, "the 16 partitions split between a and b")
    assert a.alive and b.alive

    plan = load_plan(OUTREACH)
    pool = await asyncpg.create_pool(db, min_size=1, max_size=2)
    async with engine_client(config) as client:

        async def enrol(prefix: str, count: int) -> dict[str, str]:
            cids = [f"{prefix}-{i:02d}" for i in range(count)]
            assert any(partition_for(c, PARTITIONS) in b_partitions for c in cids)
            assert any(partition_for(c, PARTITIONS) not in b_partitions for c in cids)
            await consents.grant(client, cids, "voice", "web form")  # they agreed to be called
            return {c: (await client.execute(plan, contact(c), {"product": "DEE"})).id for c in cids}

        async def completed_on_the_cold_path(runs: dict[str, str]) -> None:
            for c, run_id in runs.items():
                run = await client.get_run(run_id)
                assert (run.status, run.outcome) == ("completed", "no_response"), (c, run)
                entries = await client.audit.get_by_run(run_id)
                start = entries[0].tick
                entered = [(e.tick - start, e.step_id) for e in entries if e.action == "step.entered"]
                assert entered == COLD_PATH, (c, entered)
                assert (await client.verify_audit_chain(run_id)).valid, c
                assert (await client.replay(run_id)).identical, c

        # a few dozen runs complete through the two daemons
        first = await enrol("two", 30)
        await client.advance_clock(10 * DAY)
        await completed_on_the_cold_path(first)

        # SIGKILL b in the middle of work (the follow-up sends of 20 runs): a owns all 16 within a
        # few lease TTLs, picks up what b left half done, and new work completes
        in_flight = await enrol("fly", 20)
        await client.run_until_idle()
        before = {r["partition"]: r["epoch"] for r in await lease_table(db)}
        clock = asyncio.create_task(client.advance_clock(3 * DAY))
        busy = await when_busy(pool)
        await b.kill()
        killed_at = time.monotonic()
        await wait_for(lambda: owned_as(all_a), 4 * TTL_S, "a to own all 16 partitions after b was killed")
        takeover_s = time.monotonic() - killed_at
        after = {r["partition"]: r["epoch"] for r in await lease_table(db)}
        for p in b_partitions:
            assert after[p] > before[p], f"partition {p} changed hands without a new fencing epoch"
        await asyncio.wait_for(clock, 60)
        fresh = await enrol("new", 10)
        await client.advance_clock(10 * DAY)
        await completed_on_the_cold_path({**in_flight, **fresh})

        # b comes back and gets its share; SIGTERM while busy: exit 0, leases handed back at once
        b.start()
        await wait_for(lambda: owned_as(split), 30, "b to get its share back after restarting")
        last = await enrol("term", 20)
        await client.run_until_idle()
        clock = asyncio.create_task(client.advance_clock(3 * DAY))
        busy_at_term = await when_busy(pool)
        started = time.monotonic()
        assert await b.terminate() == 0
        drain_s = time.monotonic() - started
        rows = {r["partition"]: r for r in await lease_table(db)}
        assert [p for p, r in rows.items() if r["owner"] == "b"] == [], "b exited still holding leases"
        for p in b_partitions:
            assert rows[p]["owner"] in (None, "a"), dict(rows[p])
        await wait_for(lambda: owned_as(all_a), 2 * TTL_S, "a to take the partitions b handed back")
        await asyncio.wait_for(clock, 60)
        await client.advance_clock(10 * DAY)
        await completed_on_the_cold_path(last)

        # nothing was sent twice: one key per (run, step), and the adapters saw exactly those keys
        everything = {**first, **in_flight, **fresh, **last}
        keys_of: dict[tuple[str, str | None], set[str]] = defaultdict(set)
        for run_id in everything.values():
            for e in await client.audit.get_by_run(run_id):
                if e.action == "step.dispatched" and e.output:
                    keys_of[(run_id, e.step_id)].add(e.output["idempotencyKey"])
        assert all(len(k) == 1 for k in keys_of.values())
        assert len(keys_of) == 4 * len(everything)  # initial, cold follow-up, call, breakup
        sent = await simulated_sends(config)
        assert set(sent) == set().union(*keys_of.values()) and set(sent.values()) == {1}

    # the last daemon: nobody can take its partitions, so what the table shows is its own release
    assert await a.terminate() == 0
    rows = {r["partition"]: r for r in await lease_table(db)}
    held = {p: (r["owner"], r["live"]) for p, r in rows.items() if r["owner"] is not None or r["live"]}
    assert held == {}, f"partitions still leased after a's SIGTERM: {held}"
    assert await pool.fetchval("SELECT count(*) FROM instances") == 0
    await pool.close()
    print(f"\ntake-over of {len(b_partitions)} partitions after SIGKILL (busy: {busy}): {takeover_s:.2f} s "
          f"(lease TTL {TTL_S} s); SIGTERM drain of b (busy: {busy_at_term}): {drain_s:.2f} s")  # fmt: skip
    for daemon in (a, b):
        assert "Traceback" not in daemon.log(), f"daemon {daemon.instance} logged a traceback"
