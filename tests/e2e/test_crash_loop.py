"""The crash loop (issue 3, DESIGN section 7): `dee run` SIGKILLed at random moments while the
outreach plan runs for a few hundred contacts, and restarted under the same instance name.

A client drives the deployment's manual clock and ingests events at fixed logical ticks,
retrying a write (same event id, same idempotency key, same run id) when the daemon is down.
The same workload runs uninterrupted on the in-memory engine as the reference. With run ids
fixed per contact in both, every audit entry's tick, action, input and output — idempotency keys
and content hashes included — must be the same whatever the crashes; nothing may be sent twice
(counted at the simulated adapters' durable Redis ledger by idempotency key); no acknowledged
command or event may be lost; nothing may land in a dead-letter stream.

The figures are printed (run with `-s` to see them); `DEE_E2E_SEED` changes the kill schedule and
`DEE_E2E_KILLS` the number of kills (12).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis

from dee import Engine, EngineConfig, load_plan
from dee.bus.streams import Keys
from dee.config import MetricsConfig, SchedulerConfig
from dee.engine import as_contact
from dee.errors import EngineUnavailableError
from dee.ids import ulid
from dee.kernel.audit import AuditEntry
from dee.kernel.replay import trace
from tests.e2e.conftest import PARTITIONS, Daemon, DaemonFactory, engine_client, has_work, lease_table, wait_for

OUTREACH = "config/plans/sales-outreach-v2.yaml"
VARIABLES = {"product": "DEE"}
DAY = 86_400
END = 16 * DAY
CONTACTS = 200
SEED = int(os.environ.get("DEE_E2E_SEED", "20261125"))
KILLS = int(os.environ.get("DEE_E2E_KILLS", "12"))
STALL_S = 45  # no commit at all for this long means something is stuck: fail rather than hang
WORKLOAD_TIMEOUT_S = 400
RUN_ID_MS = 1_767_225_600_000  # run ids are fixed per contact, so keys and hashes are comparable

T = TypeVar("T")


def cid(i: int) -> str:
    return f"crash-{i:03d}"


def contact(i: int) -> dict[str, Any]:
    if i % 25 == 5:
        domain = "flaky.test"  # first attempt of every email fails transiently: retries at later ticks
    elif i % 50 == 7:
        domain = "bounce.test"  # hard bounce: the run ends undeliverable
    else:
        domain = f"acme{i % 5}.test"
    return {"id": cid(i), "email": f"{cid(i)}@{domain}", "phone": f"+1555{i:07d}", "attributes": {"company": f"Company {i}"}}


RUN_IDS = {i: ulid(RUN_ID_MS, (i + 1).to_bytes(10, "big")) for i in range(CONTACTS)}


@dataclass(frozen=True)
class Ingest:
    tick: int
    contact: int
    type: str
    step: str
    event_id: str


def events() -> list[Ingest]:
    """Replies and opens by contact index, each at a fixed tick (spread over a few hours)."""
    out = []
    for i in range(CONTACTS):
        if i % 10 == 0:
            out.append(Ingest(DAY + (i % 8) * 3_600, i, "email.replied", "initial-email", f"ev-{i:03d}-reply-1"))
        elif i % 10 in (1, 2, 3):
            out.append(Ingest(DAY + (i % 8) * 3_600, i, "email.opened", "initial-email", f"ev-{i:03d}-open-1"))
            if i % 7 == 0:
                out.append(Ingest(4 * DAY + (i % 4) * 3_600, i, "email.replied", "warm-follow-up", f"ev-{i:03d}-reply-2"))
    return sorted(out, key=lambda e: (e.tick, e.contact))


@dataclass
class Figures:
    seed: int = SEED
    kills: int = 0
    kills_while_busy: int = 0
    restarts: int = 0
    unavailable_retries: int = 0
    # writes committed whose answer never came (EngineUnavailableError, then a retry), by kind
    answers_lost: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    completed: int = 0
    trace_mismatches: int = 0
    entry_mismatches: int = 0
    replays_diverged: int = 0
    chains_broken: int = 0
    duplicate_sends: int = 0
    steps_with_several_keys: int = 0
    sends_not_in_reference: int = 0
    reference_sends_missing: int = 0
    redeliveries_absorbed: int = 0
    executes_lost: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    dead_letters: int = 0
    workload_s: float = 0.0
    reference_s: float = 0.0


class Driver:
    """The client's side of the workload, the same for the daemon and the in-memory reference."""

    def __init__(self, engine: Engine, figures: Figures | None = None, clock_db: asyncpg.Pool | None = None) -> None:
        self.engine = engine
        self.figures = figures
        self.clock_db = clock_db  # where the daemon deployment's manual clock lives
        self.plan = load_plan(OUTREACH)

    async def retrying(
        self, call: Callable[[], Awaitable[T]], committed: str | None = None, key: str = "", what: str = ""
    ) -> T:
        """Call until answered. `committed` (SQL, $1 = key) says whether a write that went
        unanswered had in fact been committed: its answer was lost, not the write."""
        while True:
            try:
                return await call()
            except EngineUnavailableError:
                if self.figures is None:
                    raise
                self.figures.unavailable_retries += 1
                if committed is not None and self.clock_db is not None and await self.clock_db.fetchval(committed, key):
                    self.figures.answers_lost[what] += 1

    async def now(self) -> int:
        if self.clock_db is None:
            return self.engine.current_tick
        return int(await self.clock_db.fetchval("SELECT manual_tick FROM dee_meta"))

    async def advance_to(self, target: int) -> None:
        """Move the clock to `target` (stopping at every due timer), resuming after a failure."""

        async def step() -> None:
            now = await self.now()
            if now < target:
                await self.engine.advance_clock(target - now)
            await self.engine.run_until_idle()

        await self.retrying(step)
        assert await self.now() == target

    async def enrol(self) -> dict[int, str]:
        backend = self.engine._backend
        version = await backend.register(self.plan)

        async def one(i: int) -> str:
            async def call() -> str:
                backend.new_run_id = lambda: RUN_IDS[i]  # read before this call's first await
                return await backend.execute(self.plan.id, version, as_contact(contact(i)), dict(VARIABLES), None, f"crash-{i}")

            return await self.retrying(call, "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $1)", RUN_IDS[i], "execute")

        ids = await asyncio.gather(*(one(i) for i in range(CONTACTS)))
        return dict(enumerate(ids))

    async def ingest(self, batch: list[Ingest]) -> None:
        async def one(e: Ingest) -> None:
            attempts = 0

            async def call() -> list[str]:
                nonlocal attempts
                attempts += 1
                return await self.engine.ingest_event(e.type, cid(e.contact), {}, step_id=e.step, event_id=e.event_id)

            runs = await self.retrying(
                call, "SELECT EXISTS (SELECT 1 FROM received WHERE message_id = $1)", e.event_id, "event"
            )
            # a retried event may be answered as the duplicate it is; whether it was applied (once)
            # is checked in the audit log
            assert runs == [RUN_IDS[e.contact]] or (attempts > 1 and runs == []), (e, runs, attempts)

        await asyncio.gather(*(one(e) for e in batch))

    async def workload(self) -> dict[int, str]:
        ids = await self.enrol()
        await self.retrying(self.engine.run_until_idle)
        by_tick: dict[int, list[Ingest]] = defaultdict(list)
        for e in events():
            by_tick[e.tick].append(e)
        for tick in sorted(by_tick):
            await self.advance_to(tick)
            await self.ingest(by_tick[tick])
        await self.advance_to(END)
        return ids


def entry_view(e: AuditEntry) -> tuple[Any, ...]:
    """Everything of an entry but its id, wall-clock timestamp and the checksums covering them."""
    return (e.seq, e.action, e.step_id, e.tick, msgspec.to_builtins(e.input), msgspec.to_builtins(e.output))


async def reference_run() -> tuple[dict[int, list[AuditEntry]], dict[str, int], float]:
    config = EngineConfig(
        database="memory://", scheduler=SchedulerConfig(clock="manual", partitions=PARTITIONS),
        metrics=MetricsConfig(enabled=False),
    )  # fmt: skip
    started = time.monotonic()
    async with Engine(config) as engine:
        ids = await Driver(engine).workload()
        assert ids == RUN_IDS
        audit = {i: await engine.audit.get_by_run(RUN_IDS[i]) for i in range(CONTACTS)}
        adapters = engine._backend.adapters
        sends = {**adapters["email"].ledger.sends, **adapters["voice"].ledger.sends}
    return audit, dict(sends), time.monotonic() - started


async def owned_afresh(database: str, instance: str, epochs: dict[int, int]) -> bool:
    """Every partition held by `instance` under a newer epoch than `epochs` (it restarted)."""
    rows = await lease_table(database)
    return all(r["owner"] == instance and r["live"] and r["epoch"] > epochs.get(r["partition"], -1) for r in rows)


async def until_stalled(work: Awaitable[T], db: asyncpg.Pool, guard: asyncio.Task[None]) -> T:
    """Run `work`; fail as soon as the deployment stops making progress (nothing committed for
    STALL_S seconds: a lost message leaves a run waiting forever), or after WORKLOAD_TIMEOUT_S,
    or when `guard` (the killer) fails."""
    task = asyncio.ensure_future(work)
    started = last_change = time.monotonic()
    seen = None
    try:
        while not task.done():
            watched = {task} if guard.done() else {task, guard}
            await asyncio.wait(watched, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if guard.done() and guard.exception() is not None:
                raise guard.exception()  # type: ignore[misc]
            now = await db.fetchrow(
                "SELECT (SELECT manual_tick FROM dee_meta) AS t, (SELECT count(*) FROM audit_log) AS a, "
                "(SELECT count(*) FROM received) AS r"
            )
            if now != seen:
                seen, last_change = now, time.monotonic()
            if time.monotonic() - last_change > STALL_S or time.monotonic() - started > WORKLOAD_TIMEOUT_S:
                raise AssertionError(f"the workload is stuck (no progress for {time.monotonic() - last_change:.0f} s, "
                                     f"{time.monotonic() - started:.0f} s in all): {await stuck(db)}")  # fmt: skip
        return task.result()
    finally:
        task.cancel()


async def stuck(db: asyncpg.Pool) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT (SELECT manual_tick FROM dee_meta) AS tick, (SELECT count(*) FROM inbox) AS inbox, "
        "(SELECT count(*) FROM outbox) AS outbox, (SELECT count(*) FROM runs WHERE awaiting) AS awaiting, "
        "(SELECT count(*) FROM runs WHERE status <> 'completed') AS unfinished"
    )  # fmt: skip
    return dict(row)


async def chaos(
    daemon: Daemon, db: asyncpg.Pool, database: str, rng: random.Random, done: asyncio.Event, figures: Figures,
    total_entries: int,
) -> None:  # fmt: skip
    """SIGKILL the daemon at random points of its progress, and restart it at once.

    The kill points are drawn (seeded) as audit-entry counts between 2 % and 95 % of what the
    reference wrote, so the number of kills does not depend on how fast the machine is; the
    daemon is killed as soon as the count passes a point (just after a commit: before its acks,
    replies or publishes) or a few milliseconds later (anywhere in the next iterations). A point
    already passed when the daemon comes back kills it during its recovery.
    """
    points = sorted(rng.sample(range(total_entries // 50, total_entries * 95 // 100), KILLS))
    epochs: dict[int, int] = {}
    async def back() -> bool:
        return await owned_afresh(database, daemon.instance, epochs)

    for point in points:
        await wait_for(back, 30, f"{daemon.instance} to come back")
        while not done.is_set() and await db.fetchval("SELECT count(*) FROM audit_log") < point:  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0.002)
        if done.is_set():
            return
        if rng.random() < 0.5:
            await asyncio.sleep(rng.uniform(0.0, 0.1))
        busy = await has_work(db)
        epochs = {r["partition"]: r["epoch"] for r in await lease_table(database)}
        await daemon.kill()
        figures.kills += 1
        figures.kills_while_busy += busy
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        daemon.start()


async def test_sigkill_loop_changes_no_trace_sends_nothing_twice_and_loses_nothing(
    e2e_deployment: EngineConfig, daemons: DaemonFactory
) -> None:
    config = e2e_deployment
    figures = Figures()
    reference, reference_sends, figures.reference_s = await reference_run()

    daemon = daemons("crash")
    daemon.start()
    rng = random.Random(SEED)
    done = asyncio.Event()
    pool = await asyncpg.create_pool(config.database, min_size=1, max_size=4)
    redis = aioredis.from_url(config.redis)
    try:
        async with engine_client(config) as client:
            started = time.monotonic()
            total = sum(len(entries) for entries in reference.values())
            killer = asyncio.create_task(chaos(daemon, pool, config.database, rng, done, figures, total))
            try:
                ids = await until_stalled(Driver(client, figures, pool).workload(), pool, killer)
            finally:
                done.set()
                await killer
            if not daemon.alive:
                daemon.start()
            await Driver(client, figures, pool).advance_to(END)  # settle whatever the last kill left
            figures.workload_s = time.monotonic() - started
            figures.restarts = daemon.starts - 1
            assert ids == RUN_IDS

            await check(client, pool, redis, config, reference, reference_sends, figures)
        assert await daemon.terminate() == 0
    finally:
        print_figures(figures)
        await redis.aclose()
        await pool.close()
    assert figures.kills == KILLS, f"only {figures.kills} of the {KILLS} kills happened"
    assert "Traceback" not in daemon.log(), "the daemon logged a traceback"


async def check(
    client: Engine, db: asyncpg.Pool, redis: aioredis.Redis, config: EngineConfig,
    reference: dict[int, list[AuditEntry]], reference_sends: dict[str, int], figures: Figures,
) -> None:  # fmt: skip
    """Compare with the reference and count duplicates and losses; assert at the end so that
    every figure is known even when something is wrong."""
    failures: list[str] = []

    # every execute acknowledged made its run (once, with the fixed id) and every run completed
    rows = await db.fetch("SELECT run_id, contact_id, status, outcome FROM runs ORDER BY run_id")
    figures.runs = len(rows)
    figures.executes_lost = len(set(RUN_IDS.values()) - {r["run_id"] for r in rows})
    figures.completed = sum(1 for r in rows if r["status"] == "completed")
    if sorted(r["run_id"] for r in rows) != sorted(RUN_IDS.values()):
        failures.append(f"runs: expected exactly one run per contact with the fixed ids, got {len(rows)} rows")
    if figures.completed != CONTACTS:
        failures.append(f"runs: {figures.completed}/{CONTACTS} completed: {Counter(r['status'] for r in rows)}")

    # traces (outcomes included) and whole entries identical to the uninterrupted reference
    audit: dict[int, list[AuditEntry]] = {}
    for i in range(CONTACTS):
        audit[i] = await client.audit.get_by_run(RUN_IDS[i])
        got, want = trace(audit[i]), trace(reference[i])
        if got != want:
            figures.trace_mismatches += 1
            if figures.trace_mismatches <= 3:
                failures.append(f"trace of {cid(i)} differs:\n  daemon    {_show(got)}\n  reference {_show(want)}")
        if [entry_view(e) for e in audit[i]] != [entry_view(e) for e in reference[i]]:
            figures.entry_mismatches += 1
            if figures.entry_mismatches <= 3:
                failures.append(f"audit entries of {cid(i)} differ:\n{_entry_diff(audit[i], reference[i])}")
        if not (await client.verify_audit_chain(RUN_IDS[i])).valid:
            figures.chains_broken += 1
        if i % 5 == 0 and not (await client.replay(RUN_IDS[i])).identical:
            figures.replays_diverged += 1
    if figures.chains_broken or figures.replays_diverged:
        failures.append(f"{figures.chains_broken} broken chains, {figures.replays_diverged} replays diverged")

    # nothing sent twice: the adapters' durable ledger, by idempotency key
    keys = Keys(config.namespace)
    sends: dict[str, int] = {}
    requests = 0
    for channel in ("email", "voice"):
        raw = await redis.hgetall(keys.simulated(channel, "sends"))
        sends.update({k.decode(): int(v) for k, v in raw.items()})
        requests += sum(int(v) for v in (await redis.hgetall(keys.simulated(channel, "requests"))).values())
    figures.duplicate_sends = sum(n - 1 for n in sends.values() if n > 1)
    figures.redeliveries_absorbed = requests - sum(sends.values())
    figures.sends_not_in_reference = len(set(sends) - set(reference_sends))
    figures.reference_sends_missing = len(set(reference_sends) - set(sends))
    dispatched: dict[tuple[str, str], set[str]] = defaultdict(set)
    for entries in audit.values():
        for e in entries:
            if e.action == "step.dispatched" and e.output:
                dispatched[(e.run_id, e.step_id or "")].add(e.output["idempotencyKey"])
    figures.steps_with_several_keys = sum(1 for k in dispatched.values() if len(k) != 1)
    ledger_keys = {k.split("#", 1)[0] for k in sends}
    audit_keys = set().union(*dispatched.values())
    if figures.duplicate_sends or figures.steps_with_several_keys:
        failures.append(f"sent twice: {figures.duplicate_sends} repeated keys, {figures.steps_with_several_keys} steps with several keys")
    if figures.sends_not_in_reference or figures.reference_sends_missing:
        failures.append(f"sends differ from the reference: {figures.sends_not_in_reference} extra, "
                        f"{figures.reference_sends_missing} missing")  # fmt: skip
    if ledger_keys != audit_keys:
        failures.append(f"ledger keys and audited dispatches differ: {len(ledger_keys ^ audit_keys)} keys")

    # no acknowledged event lost or applied twice
    for e in events():
        seen = sum(1 for a in audit[e.contact] if a.action == "event.received" and (a.input or {}).get("eventId") == e.event_id)
        figures.events_lost += seen == 0
        figures.events_duplicated += seen > 1
    if figures.events_lost or figures.events_duplicated:
        failures.append(f"events: {figures.events_lost} lost, {figures.events_duplicated} applied more than once")

    # no dead letters, nothing left over
    dead = [keys.dead(p) for p in range(PARTITIONS)] + [keys.dispatch_dead(c) for c in ("email", "voice")]
    figures.dead_letters = sum([await redis.xlen(s) for s in dead])
    if figures.dead_letters:
        failures.append(f"{figures.dead_letters} dead letters")
    leftovers = await db.fetchrow("SELECT (SELECT count(*) FROM inbox) AS inbox, (SELECT count(*) FROM outbox) AS outbox")
    if leftovers["inbox"] or leftovers["outbox"]:
        failures.append(f"left over: {dict(leftovers)}")

    assert not failures, "\n".join(failures)


def _show(results: list[Any]) -> str:
    return str([(r.step_id, r.type, r.tick, r.outcome) for r in results])


def _entry_diff(got: list[AuditEntry], want: list[AuditEntry]) -> str:
    lines = []
    for n in range(max(len(got), len(want))):
        a = entry_view(got[n]) if n < len(got) else None
        b = entry_view(want[n]) if n < len(want) else None
        if a != b:
            lines.append(f"  #{n}: daemon    {a}\n       reference {b}")
        if len(lines) >= 3:
            break
    return "\n".join(lines)


def print_figures(figures: Figures) -> None:
    print("\ncrash-loop figures:")
    for name, value in vars(figures).items():
        shown = f"{value:.1f}" if isinstance(value, float) else dict(value) if isinstance(value, Counter) else value
        print(f"  {name:<24} {shown}")
