"""The partition worker: the single writer of one partition, one transaction per iteration.

Each iteration reads a batch from `dee:{p}:in` and runs two transactions, each of which first
checks the fencing epoch (a stale writer's commit is refused there):
1. intake: records the batch as accepted and stamps it with the current tick (`received`,
   `inbox`, new runs); after commit the stream entries are acknowledged and answered;
2. the tick: advances the runs that are due, ordered by run id, at most `max_runs_per_tick`,
   and writes runs, audit entries (COPY), outbox rows and the partition clock; after commit it
   answers commands and publishes the outbox to the dispatch streams.
A crash between the two loses nothing: accepted inputs wait in the `inbox` table.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec
import redis.asyncio as aioredis

from dee.bus import messages as wire
from dee.bus.streams import FIELD, GROUP, Entry, GroupReader, Keys, dead_letter, trim_acknowledged
from dee.config import EngineConfig
from dee.errors import LeaseLostError, error_fields
from dee.ids import MonotonicUlid
from dee.kernel.audit import AuditRow, seal_rows
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.inputs import AnyInput, ContactChanged
from dee.kernel.machine import KernelEnv, advance, quarantine
from dee.kernel.state import RunState
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.intake import Intake, accept
from dee.store import runs as rows
from dee.store.plans import PlanCache

log = logging.getLogger("dee.worker")
MAX_DEFERRED_TICKS = 8  # enrolment-only batches taken in a row before a tick must run

# a JSON escape of NUL (an odd number of backslashes before u0000; an even one is a literal backslash)
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class TickFailed(Exception):
    """The tick transaction failed after its batch was accepted (never the batch's fault)."""


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
        self.settings = config.kernel_settings()
        self.committed_tick = -1
        self._enrolments_deferred = 0
        self._fenced_out: str | None = None  # why this worker's commit was refused, once it was
        self._envs: dict[tuple[str, int], KernelEnv] = {}
        self._new_id = MonotonicUlid()  # ids of this worker's audit entries and new runs

    def stop(self) -> None:
        """Drain: finish the current iteration, then return from `run`."""
        self._stop.set()

    async def run(self) -> None:
        await self.reader.claim_idle(0)
        await self.publish(await self._unpublished())
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
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, TimeoutError) as exc:
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
        """Accept the batch (one transaction, then ack and answer), then run the tick (another)."""
        started = time.perf_counter()
        if self._fenced_out is not None:  # once refused, always refused (even with nothing to write)
            raise LeaseLostError(self.partition, self._fenced_out)
        valid, dead = self._decode(entries)
        async with self.pool.acquire() as conn:
            tick = await self.clock.tick(conn, self.partition)
            report = TickReport(tick, accepted=len(valid), dead=len(dead))
            accepted: list[tuple[str, wire.Reply]] = []
            carries_input = any(not isinstance(m, wire.Wake) for _, m in valid)  # a wake alone carries nothing
            if carries_input:
                async with conn.transaction():
                    await self._fence(conn)
                    intake, duplicates = await self._intake(conn, tick, [m for _, m in valid])
                    inserted = await rows.insert_new_runs(conn, intake.runs, intake.audit)
                    report.entries += sum(1 for e in intake.audit if e.run_id in inserted)
                    await self._store_replies(conn, intake.replies)
                accepted = [*intake.replies, *duplicates]
        for entry, reason in dead:
            await dead_letter(self.redis, self.keys.dead(self.partition), self.reader.stream, entry, reason)
        await self._reply(accepted)  # before the ack: a crash in between re-reads, and re-answers
        await self.reader.ack([e[0] for e in entries])
        if valid and self._enrolments_deferred < MAX_DEFERRED_TICKS and all(
            isinstance(m, wire.Execute | wire.ExecuteBatch) for _, m in valid
        ):
            # a burst of enrolments: take it in first (what bulk_execute waits for); the runs
            # start at their logical tick all the same, a few iterations later
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

    async def _tick(self, tick: int, report: TickReport, started: float, probe_first: bool) -> TickReport:
        """The tick transaction: advance what is due, write it, then answer and publish. An
        iteration that accepted no input first asks whether anything is due (two index
        probes): with nothing due there is no transaction at all."""
        async with self.pool.acquire() as conn:
            if probe_first and not await rows.anything_due(conn, self.partition, tick):
                self._observe(report, started)
                return report
            async with conn.transaction():
                await self._fence(conn)
                replies, outbox, audit = await self._process(conn, tick, report)
                report.entries += await rows.copy_audit(conn, audit)
                outbox_seqs = await rows.add_outbox(conn, self.partition, outbox)
                if tick > self.committed_tick:
                    await conn.execute("UPDATE partitions SET tick = greatest(tick, $2) WHERE partition = $1", self.partition, tick)
                await self._store_replies(conn, replies)
        self.committed_tick = max(self.committed_tick, tick)
        await self._reply(replies)
        await self.publish(list(zip(outbox_seqs, outbox, strict=True)))
        self._observe(report, started)
        return report

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

    async def _intake(self, conn: asyncpg.Connection, tick: int, messages: list[wire.Inbound]) -> tuple[Intake, list[tuple[str, wire.Reply]]]:
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
        stamp = _now_iso()
        await accept(conn, intake, new, self.plans, stamp, self._new_id)
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

    async def _process(
        self, conn: asyncpg.Connection, tick: int, report: TickReport
    ) -> tuple[list[tuple[str, wire.Reply]], list[rows.OutboxItem], list[AuditRow]]:
        """Advance the due runs through the kernel; stage their writes."""
        cap = self.config.scheduler.max_runs_per_tick
        due = await rows.due_runs(conn, self.partition, tick, cap)
        pending = await rows.inbox_of(conn, self.partition, [s.run_id for s in due])
        by_run: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for record in pending:
            by_run[record["run_id"]].append(record)
        stamp = _now_iso()
        states: list[RunState] = []
        audit: list[AuditRow] = []
        outbox: list[rows.OutboxItem] = []
        replies: list[tuple[str, wire.Reply]] = []
        flagged: list[ContactFlagged] = []
        for state in due:
            records = by_run.get(state.run_id, [])
            inputs: list[AnyInput] = [rows.decode_input(r["body"]) for r in records]
            try:
                result = advance(state, inputs, tick, await self._env(conn, state))
            except Exception as exc:  # a kernel or plugin bug must stop this run, not the partition
                log.exception("run %s: advance raised; the run is stopped", state.run_id)
                result = quarantine(state, f"{type(exc).__name__}: {exc}", tick)
            sealed = seal_rows(result.entries, state.audit_head, stamp, self._new_id)
            new_state = msgspec.structs.replace(result.state, audit_head=sealed[-1].checksum) if sealed else result.state
            states.append(new_state)
            audit.extend(sealed)
            report.transitions += sum(1 for e in result.entries if e.action == "step.entered")
            rejected = {getattr(r.input, "command_id", None): r for r in result.rejected}
            for record in records:
                if record["reply_to"]:
                    refusal = rejected.get(record["message_id"])
                    if refusal is None:
                        reply = wire.Reply(record["message_id"], True, run_id=state.run_id)
                    else:
                        error = refusal.error(state.run_id)
                        reply = wire.Reply(record["message_id"], False, type(error).__name__, str(error),
                                           state.run_id, details=error_fields(error))  # fmt: skip
                    replies.append((record["reply_to"], reply))
            for effect in result.effects:
                if isinstance(effect, DispatchRequest):
                    outbox.append(rows.OutboxItem(self.partition, state.contact.id, effect))
                elif isinstance(effect, ContactFlagged):
                    flagged.append(effect)
        report.processed = len(due)
        await rows.delete_inbox(conn, [r["seq"] for r in pending])
        await rows.update_runs(conn, states)
        await self._fan_out(conn, tick, flagged)
        return replies, outbox, audit

    async def _env(self, conn: asyncpg.Connection, state: RunState) -> KernelEnv:
        key = (state.plan_id, state.plan_version)
        env = self._envs.get(key)
        if env is None:  # one per plan version: everything in it is configuration
            env = self._envs[key] = KernelEnv(
                plan=await self.plans.get(conn, *key), templates=self.plans.templates,
                tick_interval_ms=self.config.scheduler.tick_interval_ms, settings=self.settings,
                message_domain=self.config.message_domain,
            )  # fmt: skip
        return env

    async def _fan_out(self, conn: asyncpg.Connection, tick: int, flagged: list[ContactFlagged]) -> None:
        """A contact flag set by one run (hard bounce) reaches the contact's other runs."""
        for effect in flagged:
            await conn.execute(
                f"UPDATE contacts SET {effect.flag} = true, updated_tick = $2 WHERE contact_id = $1",
                effect.contact_id, tick,
            )  # fmt: skip
            others = await conn.fetch(
                f"SELECT run_id FROM runs WHERE contact_id = $1 AND status NOT IN {rows.TERMINAL_SQL}", effect.contact_id
            )
            body = rows.encode_input(ContactChanged(tick, **{effect.flag: True}))
            await rows.add_inbox(conn, self.partition, [(r["run_id"], tick, body, None, None) for r in others])

    async def _store_replies(self, conn: asyncpg.Connection, replies: list[tuple[str, wire.Reply]]) -> None:
        if replies:
            await conn.execute(
                "UPDATE received SET reply = u.reply FROM unnest($1::text[], $2::bytea[]) AS u(id, reply) "
                "WHERE message_id = u.id",
                [reply.command_id for _, reply in replies], [wire.encode(reply) for _, reply in replies],
            )  # fmt: skip

    async def _reply(self, replies: list[tuple[str, wire.Reply]]) -> None:
        if not replies:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, reply in replies:
                pipe.xadd(stream, {FIELD: wire.encode(reply)}, maxlen=10_000, approximate=True)
            await pipe.execute()

    async def publish(self, items: list[tuple[int, rows.OutboxItem]]) -> None:
        """XADD committed channel actions to their dispatch streams, then drop the outbox rows."""
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, item in items:
                pipe.xadd(self.keys.dispatch(item.request.channel), {FIELD: msgspec.json.encode(item)})
            await pipe.execute()
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", [seq for seq, _ in items])


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
