"""The partition worker: the single writer of one partition.

Each iteration reads a batch from `dee:{p}:in`. Every transaction first checks the fencing
epoch (a stale writer's commit is refused there). Normally one transaction does it all:
1. intake: records the batch as accepted and stamps it with the current tick (`received`, new
   runs), then
2. the tick: advances the runs that are due or got input, ordered by run id, at most
   `max_runs_per_tick` (the batch's inputs go to their runs directly; those of runs over the cap
   wait in `inbox`), and writes runs, audit entries (COPY), outbox rows and the partition clock;
after the commit, in one Redis round trip, it answers, publishes the outbox to the dispatch
streams and acknowledges the stream entries (the published outbox rows are deleted by the next
transaction). When that transaction fails, the batch is taken in two: intake (inputs to
`inbox`, then answer and acknowledge), then the tick; a crash or failure in between loses
nothing, the accepted inputs wait in `inbox`. A burst of enrolments alone is only taken in (the
tick follows a few iterations later), which is what `bulk_execute` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import msgspec
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from dee.bus import messages as wire
from dee.bus.streams import FIELD, GROUP, Entry, GroupReader, Keys, dead_letter, trim_acknowledged
from dee.config import EngineConfig
from dee.errors import LeaseLostError
from dee.ids import MonotonicUlid, now_iso
from dee.scheduler.advance import Advancer
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.intake import InboxRow, Intake, accept
from dee.stores.postgres import rows
from dee.stores.postgres.plans import PlanCache

log = logging.getLogger("dee.worker")
MAX_DEFERRED_TICKS = 8  # enrolment-only batches taken in a row before a tick must run

# a JSON escape of NUL (an odd number of backslashes before u0000; an even one is a literal backslash)
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class TickFailed(Exception):
    """The tick transaction failed after its batch was accepted (never the batch's fault)."""


@dataclass
class TickWrites:
    """What a committed tick still owes: answers to commands, channel actions to publish, and
    (when the batch was accepted in the same transaction) the answers of its intake."""

    replies: list[tuple[str, wire.Reply]]
    outbox: list[tuple[int, rows.OutboxItem]]
    accepted: list[tuple[str, wire.Reply]] = field(default_factory=list)
    dropped: int = 0  # how many published outbox rows the transaction deleted


@dataclass
class TickReport:
    """What one iteration did (for metrics and for the idle check)."""

    tick: int
    accepted: int = 0
    processed: int = 0
    entries: int = 0
    transitions: int = 0
    dead: int = 0


class PartitionWorker:
    def __init__(
        self, partition: int, epoch: int, instance: str, config: EngineConfig, pool: asyncpg.Pool,
        redis: aioredis.Redis, plans: PlanCache, clock: DeploymentClock, metrics: object | None = None,
    ) -> None:  # fmt: skip
        self.partition = partition
        self.epoch = epoch
        self.instance = instance
        self.config = config
        self.pool = pool
        self.redis = redis
        self.plans = plans
        self.clock = clock
        self.metrics = metrics
        self.keys = Keys(config.namespace)
        self.reader = GroupReader(redis, self.keys.inbound(partition), GROUP, instance)
        self._stop = asyncio.Event()
        self.committed_tick = -1
        self._enrolments_deferred = 0
        self._fenced_out: str | None = None  # why this worker's commit was refused, once it was
        self._new_id = MonotonicUlid()  # ids of this worker's audit entries and new runs
        self.advancer = Advancer(partition, config, plans, self._new_id)
        self._published: list[int] = []  # outbox rows published, to delete with the next transaction
        self._republish = False  # a commit's channel actions may not have reached Redis: publish again

    def stop(self) -> None:
        """Drain: finish the current iteration, then return from `run`."""
        self._stop.set()

    async def run(self) -> None:
        await self.reader.claim_idle(0)
        await self._deliver([], await self._unpublished(), [])
        iterations = 0
        busy = True  # a new owner looks at the partition once even without input
        last_tick = -1
        while not self._stop.is_set():
            entries = await self.reader.read(count=1000, block_ms=5 if busy else 50)
            if not entries and not busy and self.clock.cached(last_tick):
                continue  # nothing arrived, the clock did not move, nothing left over: no transaction
            report = await self.guarded(entries)
            # after any activity look once more: new runs, fanned-out inputs or leftovers may be due
            busy = bool(entries) or report.processed > 0 or report.tick < 0
            last_tick = report.tick
            iterations += 1
            if iterations % 500 == 0:
                await trim_acknowledged(self.redis, self.reader.stream, GROUP)
        if self._fenced_out is None:
            await self._drop_published()

    async def guarded(self, entries: Sequence[Entry]) -> TickReport:
        """One iteration; a batch that cannot commit is retried entry by entry, and an entry
        that alone cannot commit (a poison message) is dead-lettered with the reason."""
        try:
            return await self.iterate(entries)
        except LeaseLostError:
            raise
        except TickFailed:
            log.exception("partition %s: the tick failed; its inputs wait in the inbox, retrying", self.partition)
            await asyncio.sleep(1.0)
            return TickReport(tick=-1)
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, TimeoutError,
                redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:  # fmt: skip
            log.warning("partition %s: storage unavailable (%s); retrying", self.partition, exc)
            self.reader.repending()
            await asyncio.sleep(0.5)
            return TickReport(tick=-1)
        except Exception as exc:
            if len(entries) > 1:
                report = TickReport(tick=-1)
                for entry in entries:
                    report = await self.guarded([entry])
                return report
            reason = f"refused at commit: {type(exc).__name__}: {exc}"
            await dead_letter(self.redis, self.keys.dead(self.partition), self.reader.stream, entries[0], reason)
            await self.reader.ack([entries[0][0]])
            return TickReport(tick=-1, dead=1)

    async def _unpublished(self) -> list[tuple[int, rows.OutboxItem]]:
        async with self.pool.acquire() as conn:
            return await rows.unpublished(conn, self.partition)

    async def iterate(self, entries: Sequence[Entry]) -> TickReport:
        """Accept the batch and run the tick: in one transaction when it can (the batch's inputs
        then reach their runs directly), else in two (accept, ack and answer; then the tick)."""
        started = time.perf_counter()
        if self._fenced_out is not None:  # once refused, always refused (even with nothing to write)
            raise LeaseLostError(self.partition, self._fenced_out)
        if self._republish:
            await self._publish_leftovers()
        valid, dead = self._decode(entries)
        messages = [m for _, m in valid]
        carries_input = any(not isinstance(m, wire.Wake) for m in messages)  # a wake alone carries nothing
        # a burst of enrolments is taken in first (what bulk_execute waits for); the runs start
        # at their logical tick all the same, a few iterations later
        deferring = bool(messages) and self._enrolments_deferred < MAX_DEFERRED_TICKS and all(
            isinstance(m, wire.Execute | wire.ExecuteBatch) for m in messages
        )
        accepted: list[tuple[str, wire.Reply]] = []
        ticked: TickWrites | None = None
        async with self.pool.acquire() as conn:
            tick = await self.clock.tick(conn, self.partition)
            report = TickReport(tick, accepted=len(valid), dead=len(dead))
            if carries_input and not deferring:
                ticked = await self._accept_and_tick(conn, tick, messages, report)
            if carries_input and ticked is None:
                async with conn.transaction():
                    await self._fence(conn)
                    intake, duplicates = await self._intake(conn, tick, messages, queue=True)
                    report.entries += await self._insert_runs(conn, intake)
                    await self._store_replies(conn, intake.replies)
                accepted = [*intake.replies, *duplicates]
        for entry, reason in dead:
            await dead_letter(self.redis, self.keys.dead(self.partition), self.reader.stream, entry, reason)
        acks = [e[0] for e in entries]
        if ticked is not None:
            self.committed_tick = max(self.committed_tick, tick)
            self._enrolments_deferred = 0
            await self._after_tick(ticked, report, started, acks)
            return report
        await self._deliver(accepted, [], acks)
        if deferring:
            self._enrolments_deferred += 1
            report.tick = -1  # look again at once
            return report
        self._enrolments_deferred = 0
        try:
            return await self._tick(tick, report, started, probe_first=not carries_input)
        except LeaseLostError:
            raise
        except Exception as exc:  # the batch is already accepted: nothing here is its fault
            raise TickFailed(str(exc)) from exc

    async def _accept_and_tick(
        self, conn: asyncpg.Connection, tick: int, messages: list[wire.Inbound], report: TickReport
    ) -> TickWrites | None:
        """Accept a batch and advance the due runs in one transaction; the batch's inputs go to
        their runs directly instead of through the `inbox` table (only those of runs over the
        cap are queued there). None when that transaction failed: the caller then takes the
        two-transaction path, where a failure is judged entry by entry."""
        counted = (report.entries, report.processed, report.transitions)
        try:
            async with conn.transaction():
                await self._fence(conn)
                intake, duplicates = await self._intake(conn, tick, messages, queue=False)
                report.entries += await self._insert_runs(conn, intake)
                await self._store_replies(conn, intake.replies)
                ticked = await self._advance_due(conn, tick, report, intake.inbox)
        except (LeaseLostError, OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, TimeoutError):
            raise
        except Exception:
            log.warning("partition %s: accepting and advancing in one transaction failed; "
                        "taking the batch in two", self.partition, exc_info=True)  # fmt: skip
            report.entries, report.processed, report.transitions = counted
            return None
        ticked.accepted = [*intake.replies, *duplicates]
        return ticked

    async def _insert_runs(self, conn: asyncpg.Connection, intake: Intake) -> int:
        """Write the runs the batch enrolled; returns how many audit entries that wrote."""
        inserted = await rows.insert_new_runs(conn, intake.runs, intake.audit)
        return sum(1 for e in intake.audit if e.run_id in inserted)

    async def _tick(self, tick: int, report: TickReport, started: float, probe_first: bool) -> TickReport:
        """The tick transaction: advance what is due, write it, then answer and publish. An
        iteration that accepted no input first asks whether anything is due (two index
        probes): with nothing due there is no transaction at all."""
        async with self.pool.acquire() as conn:
            if probe_first and not await rows.anything_due(conn, self.partition, tick):
                await self._drop_published(conn)
                self._observe(report, started)
                return report
            async with conn.transaction():
                await self._fence(conn)
                ticked = await self._advance_due(conn, tick, report, [])
        self.committed_tick = max(self.committed_tick, tick)
        await self._after_tick(ticked, report, started, [])
        return report

    async def _advance_due(self, conn: asyncpg.Connection, tick: int, report: TickReport, fresh: list[InboxRow]) -> TickWrites:
        """Inside the tick transaction: advance the due runs and write what they did (and drop
        the outbox rows published after earlier commits)."""
        dropped = len(self._published)
        if dropped:
            await rows.delete_outbox(conn, self._published)
        done = await self.advancer.advance_due(conn, tick, fresh)
        report.processed, report.transitions = len(done.states), report.transitions + done.transitions
        replies, outbox = done.replies, done.outbox
        report.entries += await rows.copy_audit(conn, done.audit)
        outbox_seqs = await rows.add_outbox(conn, self.partition, outbox)
        if tick > self.committed_tick:
            await conn.execute("UPDATE partitions SET tick = greatest(tick, $2) WHERE partition = $1", self.partition, tick)
        await self._store_replies(conn, replies)
        return TickWrites(replies, list(zip(outbox_seqs, outbox, strict=True)), dropped=dropped)

    async def _after_tick(self, ticked: TickWrites, report: TickReport, started: float, acks: list[bytes]) -> None:
        """After the tick's commit: answer, publish its channel actions, acknowledge the batch."""
        del self._published[: ticked.dropped]
        await self._deliver([*ticked.accepted, *ticked.replies], ticked.outbox, acks)
        self._observe(report, started)

    def _observe(self, report: TickReport, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_tick(self.partition, report, time.perf_counter() - started)  # type: ignore[attr-defined]

    @staticmethod
    def _decode(entries: Sequence[Entry]) -> tuple[list[tuple[bytes, wire.Inbound]], list[tuple[Entry, str]]]:
        """Strictly decoded messages, and the entries that are not valid messages (with why)."""
        valid: list[tuple[bytes, wire.Inbound]] = []
        dead: list[tuple[Entry, str]] = []
        for entry in entries:
            raw = entry[1].get(FIELD)
            try:
                if raw is None:
                    raise ValueError("entry has no 'm' field")
                if b"\\u0000" in raw and _ESCAPED_NUL.search(raw):
                    raise ValueError("strings may not contain NUL (\\u0000): PostgreSQL text cannot store it")
                valid.append((entry[0], wire.decode(raw)))
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                dead.append((entry, f"{type(exc).__name__}: {exc}"))
        return valid, dead

    async def _fence(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow("SELECT epoch, owner FROM partitions WHERE partition = $1 FOR UPDATE", self.partition)
        if row is None or row["epoch"] != self.epoch or row["owner"] != self.instance:
            self._stop.set()
            self._fenced_out = f"epoch {row['epoch'] if row else '?'} != held {self.epoch}"
            raise LeaseLostError(self.partition, self._fenced_out)

    async def _intake(
        self, conn: asyncpg.Connection, tick: int, messages: list[wire.Inbound], queue: bool
    ) -> tuple[Intake, list[tuple[str, wire.Reply]]]:
        """Dedupe and accept; `queue` writes the accepted inputs to the inbox (else the caller
        hands `intake.inbox` to the tick in the same transaction)."""
        intake = Intake(tick, self.partition)
        keyed = [m for m in messages if not isinstance(m, wire.Wake)]
        if not keyed:
            return intake, []
        ids = [m.command_id for m in keyed]
        fresh = {
            r["message_id"]
            for r in await conn.fetch(
                "INSERT INTO received (message_id, partition, tick) SELECT unnest($1::text[]), $2, $3 "
                "ON CONFLICT DO NOTHING RETURNING message_id",
                list(dict.fromkeys(ids)), self.partition, tick,
            )
        }  # fmt: skip
        new, seen = [], set()
        duplicates: list[wire.Inbound] = []
        for m in keyed:
            (new if m.command_id in fresh and m.command_id not in seen else duplicates).append(m)
            seen.add(m.command_id)
        stamp = now_iso()
        await accept(conn, intake, new, self.plans, stamp, self._new_id)
        if queue:
            await rows.add_inbox(conn, self.partition, intake.inbox)
        return intake, await self._stored_replies(conn, duplicates)

    async def _stored_replies(self, conn: asyncpg.Connection, duplicates: list[wire.Inbound]) -> list[tuple[str, wire.Reply]]:
        """A retried message gets the reply of its first delivery (if it is known yet)."""
        wanted = [m for m in duplicates if m.reply_to]
        if not wanted:
            return []
        stored = {
            r["message_id"]: r["reply"]
            for r in await conn.fetch("SELECT message_id, reply FROM received WHERE message_id = ANY($1::text[])",
                                      [m.command_id for m in wanted])  # fmt: skip
        }
        return [
            (m.reply_to, msgspec.json.decode(stored[m.command_id], type=wire.Reply))
            for m in wanted
            if stored.get(m.command_id) is not None and m.reply_to
        ]

    async def _store_replies(self, conn: asyncpg.Connection, replies: list[tuple[str, wire.Reply]]) -> None:
        if replies:
            await conn.execute(
                "UPDATE received SET reply = u.reply FROM unnest($1::text[], $2::bytea[]) AS u(id, reply) "
                "WHERE message_id = u.id",
                [reply.command_id for _, reply in replies], [wire.encode(reply) for _, reply in replies],
            )  # fmt: skip

    async def _deliver(
        self, replies: list[tuple[str, wire.Reply]], outbox: list[tuple[int, rows.OutboxItem]], acks: list[bytes]
    ) -> None:
        """After a commit, in one round trip and in this order: the answers, the channel actions
        (XADD to their dispatch streams), the acknowledgement of the stream entries. A crash
        part-way re-reads what was not acknowledged and answers or publishes again; duplicates
        are dropped downstream (by command id, by idempotency key). Published outbox rows are
        deleted with the next transaction (or when the partition goes idle)."""
        if not (replies or outbox or acks):
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, reply in replies:
                    pipe.xadd(stream, {FIELD: wire.encode(reply)}, maxlen=10_000, approximate=True)
                for _, item in outbox:
                    pipe.xadd(self.keys.dispatch(item.request.channel), {FIELD: msgspec.json.encode(item)})
                if acks:
                    pipe.xack(self.reader.stream, self.reader.group, *acks)
                await pipe.execute()
        except BaseException:
            # committed but perhaps not published (the entries, not acknowledged, come back and
            # are answered again; the channel actions have only their outbox rows)
            self._republish = self._republish or bool(outbox)
            raise
        self._published.extend(seq for seq, _ in outbox)

    async def _publish_leftovers(self) -> None:
        """Publish the outbox rows a failed delivery may have left (a duplicate is harmless:
        adapters answer a repeated idempotency key with its first answer)."""
        published = set(self._published)
        leftovers = [(seq, item) for seq, item in await self._unpublished() if seq not in published]
        self._republish = False
        await self._deliver([], leftovers, [])

    async def _drop_published(self, conn: asyncpg.Connection | None = None) -> None:
        """Delete the outbox rows already published (on their own, outside a tick)."""
        if not self._published:
            return
        if conn is None:
            async with self.pool.acquire() as own:
                await rows.delete_outbox(own, self._published)
        else:
            await rows.delete_outbox(conn, self._published)
        self._published.clear()
