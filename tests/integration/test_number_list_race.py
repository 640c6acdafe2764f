"""An import of a number list and enrolments of contacts with those numbers, run at the same
time on PostgreSQL, many times over: no contact is missed. Each enrolled contact is either seen
by the import (suppressed with its runs) or sees the listing when it enrols (its run starts
with voice suppressed); the number lists' advisory lock is what makes one of the two true."""

from __future__ import annotations

import asyncio

import asyncpg

from dee import Engine, EngineConfig, load_plan
from dee.stores.postgres import rows
from tests.contract.scenarios import VARS, contact

ROUNDS = 30
CONTACTS = 40  # per round, enrolled one by one (partition messages)
BULK = 1200  # per bulk round: the COPY path
BULK_ROUNDS = 2


def person(round_: int, k: int) -> dict[str, object]:
    return {**contact(f"r{round_}-c{k}"), "phone": f"+1212{round_:03d}{k:04d}"}


async def import_in_steps(engine: Engine, numbers: list[str], steps: int = 4) -> None:
    """The list in several imports, each its own transaction, so enrolments fall in between."""
    size = -(-len(numbers) // steps)
    for start in range(0, len(numbers), size):
        await engine.suppress_numbers(numbers[start : start + size])


async def test_an_import_and_concurrent_enrolments_never_miss_each_other(deployment: EngineConfig) -> None:
    plan = load_plan("config/plans/sales-outreach-v2.yaml")
    async with Engine(deployment, scheduler=True) as engine, Engine(deployment, scheduler=False) as importer:
        for r in range(ROUNDS):
            people = [person(r, k) for k in range(CONTACTS)]
            numbers = [str(p["phone"]) for p in reversed(people)]
            await asyncio.gather(import_in_steps(importer, numbers), *(engine.execute(plan, p, VARS) for p in people))
        for r in range(ROUNDS, ROUNDS + BULK_ROUNDS):
            people = [person(r, k) for k in range(BULK)]
            enrolled, _ = await asyncio.gather(engine.bulk_execute(plan, people, VARS),
                                               import_in_steps(importer, [str(p["phone"]) for p in people], 8))  # fmt: skip
            assert (enrolled.created, enrolled.errors) == (BULK, [])
        await engine.run_until_idle()
    total = ROUNDS * CONTACTS + BULK_ROUNDS * BULK
    conn = await asyncpg.connect(deployment.database)
    try:
        states = [rows.decode_state(r["state"]) for r in await conn.fetch("SELECT state FROM runs")]
        suppressed = {r["contact_id"] for r in await conn.fetch(
            "SELECT contact_id FROM suppressions WHERE level = 'regulatory' AND channel = 'voice'")}  # fmt: skip
    finally:
        await conn.close()
    assert len(states) == total
    missed = sorted(s.contact.id for s in states if "voice" not in s.facts.suppressed_channels or s.contact.id not in suppressed)
    assert missed == []
