"""The partition worker: the single writer of one partition.

Each iteration reads a batch from `dee:{p}:in` and takes one of three paths, chosen in
`iterate`:

- **accept and tick** (the common one): one transaction records the batch as accepted, stamped
  with the current tick (`shell.intake`), and advances the due runs (`shell.tick`), the batch's
  inputs going to their runs directly (those of runs over the cap wait in `inbox`);
- **take in**: a batch of enrolments only is accepted and answered (what `bulk_execute` waits
  for); the runs start at their logical tick all the same, a few iterations later. This is also
  the first half of the fallback when the one transaction fails: intake alone, answered and
  acknowledged, then the tick; a failure in between loses nothing, the inputs wait in `inbox`;
- **tick only**: nothing arrived; with nothing due (two index probes) there is no transaction.

Every transaction first checks the fencing epoch (a stale writer's commit is refused there).
After a commit, in one Redis round trip, the worker answers, publishes the outbox to the
dispatch streams and acknowledges the stream entries; the published outbox rows are deleted by
the next transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from dee.bus import messages as wire
from dee.bus.streams import FIELD, GROUP, Entry, GroupReader, Keys, dead_letter, refusal_record, trim_acknowledged
from dee.config import EngineConfig
from dee.errors import LeaseLostError
from dee.ids import MonotonicUlid, now_iso
from dee.metrics import Metrics
from dee.privacy.keys import MasterKey
from dee.privacy.vault import Vault
from dee.scheduler import tuning
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.observer import WorkerObserver
from dee.scheduler.outages import TRANSIENT_ERRORS, Outages, describe
from dee.scheduler.runcounts import Census
from dee.shell.envs import KernelEnvs
from dee.shell.intake import Intake, accept
from dee.shell.store import OutboxItem, Queued
from dee.shell.tally import Tally
from dee.shell.tick import Advanced, advance_due
from dee.stores.postgres import rows
from dee.stores.postgres.partition import PostgresPartitionStore
from dee.stores.postgres.plans import PlanCache

log = logging.getLogger("dee.worker")

# a JSON escape of NUL (an odd number of backslashes before u0000; an even one is a literal backslash)
DEAD_LETTERS_KEPT = 100_000  # a partition's dead-letter stream keeps about this many entries
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# never a batch's fault: a lost lease, or a service away (raised past the batch handling)
_NOT_THE_BATCH: tuple[type[BaseException], ...] = (LeaseLostError, *TRANSIENT_ERRORS)
# what a hostile value makes PostgreSQL or the driver refuse: the entry is dead-lettered, no traceback
_UNSTORABLE: tuple[type[BaseException], ...] = (
    asyncpg.DataError, asyncpg.exceptions._base.DataError, asyncpg.ProgramLimitExceededError, OverflowError,
)  # fmt: skip

Replies = list[tuple[str, wire.Reply]]
Record = dict[FieldT, EncodableT]
T = TypeVar("T")


class TickFailed(Exception):
    """The tick transaction failed after its batch was accepted (never the batch's fault)."""


@dataclass
class TickWrites:
    """What a committed transaction still owes: answers, and channel actions to publish."""

    replies: Replies = field(default_factory=list)
    outbox: list[tuple[int, OutboxItem]] = field(default_factory=list)
    dropped: int = 0  # how many published outbox rows the transaction deleted
    refused: list[Record] = field(default_factory=list)  # dead letters of what was refused


@dataclass
class TickReport:
    """What one iteration did (for metrics and for the idle check)."""

    tick: int
    accepted: int = 0
    processed: int = 0
    entries: int = 0
    tally: Tally = field(default_factory=Tally)  # what the runs did, new runs included


@dataclass
class Batch:
    """A read batch, decoded: the valid messages and the entries that are not (with why)."""

    entries: Sequence[Entry]
    messages: list[wire.Inbound]
    dead: list[tuple[Entry, str]]

    @property
    def carries_input(self) -> bool:
        return any(not isinstance(m, wire.Wake) for m in self.messages)  # a wake alone carries nothing

    @property
    def enrolments_only(self) -> bool:
        return bool(self.messages) and all(isinstance(m, wire.Execute | wire.ExecuteBatch) for m in self.messages)

    @property
    def acks(self) -> list[bytes]:
        return [entry[0] for entry in self.entries]


class PartitionWorker:
    def __init__(
        self, partition: int, epoch: int, instance: str, config: EngineConfig, pool: asyncpg.Pool,
        redis: aioredis.Redis, plans: PlanCache, clock: DeploymentClock, metrics: Metrics | None = None,
        outages: Outages | None = None, *, result_key: bytes, census: Census | None = None, master: MasterKey | None = None,
    ) -> None:  # fmt: skip
        self.partition = partition
        self.epoch = epoch
        self.instance = instance
        self.config = config
        self.pool = pool
        self.redis = redis
        self.plans = plans
        self.clock = clock
        self.observer = WorkerObserver(metrics, partition, clock, census)
        self.outages = outages or Outages()
        self.result_key = result_key
        # contact keys: the cache lives as long as this ownership of the partition (`dee.privacy`)
        self.vault = None if master is None else Vault.of(config.privacy, master)
        self.keys = Keys(config.namespace)
        self.reader = GroupReader(redis, self.keys.inbound(partition), GROUP, instance)
        self.envs = KernelEnvs(config, plans.templates, plans.plugins.policy_gates(config).values())
        self.cap = config.scheduler.max_runs_per_tick
        self._stop = asyncio.Event()
        self.committed_tick = -1
        self._enrolments_deferred = 0
        self._fenced_out: str | None = None  # why this worker's commit was refused, once it was
        self._new_id = MonotonicUlid()  # ids of this worker's audit entries and new runs
        self._published: list[int] = []  # outbox rows published, to delete with the next transaction
        self._republish = False  # a commit's channel actions may not have reached Redis: publish again
        self._last_failure = ""  # the tick failure logged last (the same one again is not logged again)

    def stop(self) -> None:
        """Drain: finish the current iteration, then return from `run`."""
        self._stop.set()

    async def run(self) -> None:
        self.observer.started()
        try:
            await self._run()
        finally:
            self.observer.stopped()

    async def _run(self) -> None:
        while not self._stop.is_set() and not await self._unless_away(self._start):
            pass
        iterations = 0
        busy = True  # a new owner looks at the partition once even without input
        last_tick = -1
        while not self._stop.is_set():
            entries = await self._unless_away(self._read, busy)
            if entries is None:
                continue  # Redis is away (the outage is logged): read again
            if not entries and not busy and self.clock.cached(last_tick):
                continue  # nothing arrived, the clock did not move, nothing left over: no transaction
            await self.observer.before_iteration()
            report = await self.guarded(entries)
            # after any activity look once more: new runs, fanned-out inputs or leftovers may be due
            busy = bool(entries) or report.processed > 0 or report.tick < 0
            last_tick = report.tick
            iterations += 1
            if iterations % tuning.TRIM_EVERY_ITERATIONS == 0:
                await self._unless_away(trim_acknowledged, self.redis, self.reader.stream, GROUP)
        if self._fenced_out is None:
            await self._drop_published()

    async def _start(self) -> bool:
        """A new owner takes over what the partition's previous consumers left: their pending
        stream entries and the outbox rows they committed and may not have published."""
        await self.reader.claim_idle(0)
        await self._deliver([], await self._unpublished(), [])
        return True

    async def _read(self, busy: bool) -> list[Entry]:
        entries = await self.reader.read(tuning.READ_COUNT, tuning.BUSY_BLOCK_MS if busy else tuning.IDLE_BLOCK_MS)
        self.outages.recovered("Redis")
        return entries

    async def _unless_away(self, step: Callable[..., Awaitable[T]], *args: Any) -> T | None:
        """A step outside the iteration (reading or trimming the stream); None when storage is
        away, after the outage is logged (once) and a pause."""
        try:
            return await step(*args)
        except TRANSIENT_ERRORS as exc:
            self.outages.failed(exc, f"partition {self.partition}")
            self.reader.repending()  # entries a lost reply delivered are read again from the pending list
            await asyncio.sleep(tuning.STORAGE_PAUSE_S)
            return None

    async def guarded(self, entries: Sequence[Entry]) -> TickReport:
        """One iteration; a batch that cannot commit is retried entry by entry, and an entry
        that alone cannot commit (a poison message) is dead-lettered with the reason."""
        try:
            report = await self.iterate(entries)
        except LeaseLostError:
            raise
        except TickFailed as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, TRANSIENT_ERRORS):
                self.outages.failed(cause, f"partition {self.partition}")
            elif describe(cause) != self._last_failure:
                self._last_failure = describe(cause)
                log.error("partition %s: the tick failed; its inputs wait in the inbox, retrying",
                          self.partition, exc_info=cause)  # fmt: skip
            await asyncio.sleep(tuning.TICK_FAILED_PAUSE_S)
            return TickReport(tick=-1)
        except TRANSIENT_ERRORS as exc:
            self.outages.failed(exc, f"partition {self.partition}")
            self.reader.repending()
            await asyncio.sleep(tuning.STORAGE_PAUSE_S)
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
            self.observer.dead_letters("inbound", 1)
            return TickReport(tick=-1)
        self.outages.recovered("PostgreSQL")
        self._last_failure = ""
        return report

    # ---- one iteration: three paths --------------------------------------------------------
    async def iterate(self, entries: Sequence[Entry]) -> TickReport:
        """Decode the batch and take its path: accept and tick (falling back to take in, then
        tick, when the one transaction fails), take in (a burst of enrolments), or tick only."""
        started = time.perf_counter()
        if self._fenced_out is not None:  # once refused, always refused (even with nothing to write)
            raise LeaseLostError(self.partition, self._fenced_out)
        if self._republish:
            await self._publish_leftovers()
        batch = self._decode(entries, self.keys.reply(""))
        if not batch.carries_input:
            await self._bury(batch)
            await self._deliver([], [], batch.acks)
            report = await self._tick_guarded(started, probe_first=True)
            report.accepted = len(batch.messages)
            return report
        if batch.enrolments_only and self._enrolments_deferred < tuning.MAX_DEFERRED_TICKS:
            self._enrolments_deferred += 1
            report = await self._take_in(batch, started)
            report.tick = -1  # look again at once
            return report
        self._enrolments_deferred = 0
        together = await self._accept_and_tick(batch, started)
        if together is not None:
            return together
        await self._take_in(batch, started)
        return await self._tick_guarded(started, probe_first=False)

    async def _accept_and_tick(self, batch: Batch, started: float) -> TickReport | None:
        """Accept the batch and advance the due runs in one transaction. None when that
        transaction failed: the caller then takes the batch in two, where a failure is judged
        entry by entry."""
        try:
            async with self.pool.acquire() as conn:
                tick = await self.clock.tick(conn, self.partition)
                report = TickReport(tick, accepted=len(batch.messages))
                async with conn.transaction():
                    store = await self._fenced_store(conn)
                    intake = await self._intake(store, tick, batch, report)
                    writes = await self._advance(conn, store, tick, report, intake.inputs)
        except _NOT_THE_BATCH:
            raise
        except _UNSTORABLE as exc:  # a value PostgreSQL cannot hold (too large a number, too long a key): no bug of ours
            log.warning("partition %s: a value of the batch cannot be stored (%s: %s); taking it entry by entry",
                        self.partition, type(exc).__name__, exc)  # fmt: skip
            return None
        except Exception:
            log.warning("partition %s: accepting and advancing in one transaction failed; "
                        "taking the batch in two", self.partition, exc_info=True)  # fmt: skip
            return None
        writes.replies[:0] = [*intake.replies, *intake.duplicates]
        writes.refused[:0] = self._refusals(intake)
        self._committed(tick)
        self.observer.committed(report)
        await self._bury(batch)
        await self._after_commit(writes, report, started, batch.acks)
        return report

    async def _take_in(self, batch: Batch, started: float) -> TickReport:
        """Accept the batch on its own (its inputs to `inbox`), answer and acknowledge it."""
        async with self.pool.acquire() as conn:
            tick = await self.clock.tick(conn, self.partition)
            report = TickReport(tick, accepted=len(batch.messages))
            async with conn.transaction():
                store = await self._fenced_store(conn)
                intake = await self._intake(store, tick, batch, report)
                await store.queue(intake.inputs)
        self.observer.committed(report)
        await self._bury(batch)
        await self._deliver([*intake.replies, *intake.duplicates], [], batch.acks, self._refusals(intake))
        self._observe(report, started)
        return report

    async def _tick_guarded(self, started: float, probe_first: bool) -> TickReport:
        """The tick on its own; its failure is never a batch's fault (TickFailed)."""
        try:
            return await self._tick(started, probe_first)
        except _NOT_THE_BATCH:
            raise
        except Exception as exc:
            raise TickFailed(str(exc)) from exc

    async def _tick(self, started: float, probe_first: bool) -> TickReport:
        """Advance what is due. An iteration that accepted no input first asks whether anything
        is due (two index probes): with nothing due there is no transaction at all."""
        async with self.pool.acquire() as conn:
            tick = await self.clock.tick(conn, self.partition)
            report = TickReport(tick)
            if probe_first and not await rows.anything_due(conn, self.partition, tick):
                await self._drop_published(conn)
                self.observer.processed(tick)
                self._observe(report, started)
                return report
            async with conn.transaction():
                store = await self._fenced_store(conn)
                writes = await self._advance(conn, store, tick, report, [])
        self._committed(tick)
        self.observer.committed(report)
        await self._after_commit(writes, report, started, [])
        return report

    # ---- inside a transaction ----------------------------------------------------------------
    async def _fenced_store(self, conn: asyncpg.Connection) -> PostgresPartitionStore:
        """This partition's store on `conn`, once the fencing epoch is checked (FOR UPDATE: a
        newer owner's epoch refuses this commit)."""
        row = await conn.fetchrow("SELECT epoch, owner FROM partitions WHERE partition = $1 FOR UPDATE", self.partition)
        if row is None or row["epoch"] != self.epoch or row["owner"] != self.instance:
            self._stop.set()
            self._fenced_out = f"epoch {row['epoch'] if row else '?'} != held {self.epoch}"
            raise LeaseLostError(self.partition, self._fenced_out)
        return PostgresPartitionStore(conn, self.partition, self.plans, self.clock.epoch_ms)

    async def _intake(self, store: PostgresPartitionStore, tick: int, batch: Batch, report: TickReport) -> Intake:
        intake = await accept(store, tick, batch.messages, now_iso(), self._new_id, self.config.scheduler.partitions,
                              self.result_key, self.envs.history_ticks, self.vault)  # fmt: skip
        inserted = await store.add_runs(intake.runs, intake.audit)
        intake.settle(inserted)
        report.tally.moves["pending"] += len(inserted)  # a new run is pending until its start tick
        report.entries += sum(1 for row in intake.audit if row.run_id in inserted)
        await store.store_replies([reply for _, reply in intake.replies])
        return intake

    async def _advance(
        self, conn: asyncpg.Connection, store: PostgresPartitionStore, tick: int, report: TickReport, fresh: list[Queued]
    ) -> TickWrites:
        """Advance the due runs and write what they did; drop the outbox rows published after
        earlier commits; move the partition's clock."""
        dropped = len(self._published)
        if dropped:
            await rows.delete_outbox(conn, self._published)
        done: Advanced = await advance_due(store, self.envs, tick, self.cap, fresh, now_iso(), self._new_id, self.vault)
        report.processed = len(done.states)
        report.tally.update(done.tally)
        await store.append_audit(done.audit)
        report.entries += len(done.audit)
        seqs = await store.add_outbox(done.outbox)
        if tick > self.committed_tick:
            await conn.execute("UPDATE partitions SET tick = greatest(tick, $2) WHERE partition = $1", self.partition, tick)
        await store.store_replies([reply for _, reply in done.replies])
        refused = [refusal_record(self.reader.stream, wire.encode(r), f"{r.error_type}: {r.error}") for r in done.refused]
        return TickWrites(done.replies, list(zip(seqs, done.outbox, strict=True)), dropped, refused)

    # ---- after a commit ----------------------------------------------------------------------
    async def _bury(self, batch: Batch) -> None:
        """Dead-letter the entries that are no valid message, with why (they are acknowledged
        with the rest of the batch, so they never block the entries behind them)."""
        for entry, reason in batch.dead:
            await dead_letter(self.redis, self.keys.dead(self.partition), self.reader.stream, entry, reason)
        self.observer.dead_letters("inbound", len(batch.dead))

    def _refusals(self, intake: Intake) -> list[Record]:
        return [refusal_record(self.reader.stream, wire.encode(m), why) for m, why in intake.refused]

    def _committed(self, tick: int) -> None:
        self.committed_tick = max(self.committed_tick, tick)

    async def _after_commit(self, writes: TickWrites, report: TickReport, started: float, acks: list[bytes]) -> None:
        del self._published[: writes.dropped]
        self.observer.processed(report.tick)
        await self._deliver(writes.replies, writes.outbox, acks, writes.refused)
        self._observe(report, started)

    def _observe(self, report: TickReport, started: float) -> None:
        self.observer.iteration(report, time.perf_counter() - started)

    async def _deliver(
        self, replies: Replies, outbox: list[tuple[int, OutboxItem]], acks: list[bytes], refused: Sequence[Record] = ()
    ) -> None:
        """After a commit, in one round trip and in this order: the dead letters of what was
        refused, the answers, the channel actions (XADD to their dispatch streams), the
        acknowledgement of the stream entries. A crash part-way re-reads what was not
        acknowledged and answers or publishes again; duplicates are dropped downstream (by
        command id, by idempotency key)."""
        if not (replies or outbox or acks or refused):
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for record in refused:
                    pipe.xadd(self.keys.dead(self.partition), record, maxlen=DEAD_LETTERS_KEPT, approximate=True)
                for stream, reply in replies:
                    pipe.xadd(stream, {FIELD: wire.encode(reply)}, maxlen=tuning.REPLY_STREAM_MAXLEN, approximate=True)
                for _, item in outbox:
                    pipe.xadd(self.keys.dispatch(item.request.channel), {FIELD: msgspec.json.encode(item)})
                if acks:
                    pipe.xack(self.reader.stream, self.reader.group, *acks)
                await pipe.execute()
            self.observer.dead_letters("refused", len(refused))
        except BaseException:
            # committed but perhaps not published (the entries, not acknowledged, come back and
            # are answered again; the channel actions have only their outbox rows)
            self._republish = self._republish or bool(outbox)
            raise
        self._published.extend(seq for seq, _ in outbox)

    async def _unpublished(self) -> list[tuple[int, OutboxItem]]:
        async with self.pool.acquire() as conn:
            return await rows.unpublished(conn, self.partition)

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

    @staticmethod
    def _decode(entries: Sequence[Entry], reply_prefix: str) -> Batch:
        """Strictly decoded messages, and the entries that are not valid messages (with why). A
        replyTo outside the deployment's reply streams is refused: the daemon writes (and trims)
        no key but its own."""
        messages: list[wire.Inbound] = []
        dead: list[tuple[Entry, str]] = []
        for entry in entries:
            raw = entry[1].get(FIELD)
            try:
                if raw is None:
                    raise ValueError("entry has no 'm' field")
                if b"\\u0000" in raw and _ESCAPED_NUL.search(raw):
                    raise ValueError("strings may not contain NUL (\\u0000): PostgreSQL text cannot store it")
                message = wire.decode(raw)
                if message.reply_to is not None and not (message.reply_to.startswith(reply_prefix) and
                                                         len(message.reply_to) > len(reply_prefix)):  # fmt: skip
                    raise ValueError(f"replyTo must be a stream under {reply_prefix}")
                messages.append(message)
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError, RecursionError) as exc:
                dead.append((entry, f"{type(exc).__name__}: {exc}"))  # RecursionError: JSON nested too deep
        return Batch(entries, messages, dead)
