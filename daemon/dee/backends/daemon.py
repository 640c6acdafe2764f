"""The daemon backend: writes are stream messages answered after commit; reads are Postgres.

Every write goes to the inbound stream of its partition with a `commandId` and a `replyTo`
stream owned by this client; the call returns when the owning daemon's reply arrives, and
raises `EngineUnavailableError` naming the partition when it does not in time. A write is
therefore never applied twice (the commandId) and never acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from dee.backends.client import Publisher
from dee.bus import connect as redis_connect
from dee.bus import messages as wire
from dee.bus.scripts import PipelinedScript
from dee.bus.streams import FIELD, Keys, StreamReply
from dee.config import EngineConfig
from dee.errors import ConfigError, EngineUnavailableError, RunNotFoundError
from dee.ids import now_iso, ulid
from dee.kernel.audit import AuditEntry
from dee.kernel.contact import Contact
from dee.metrics import Metrics
from dee.plan.compiled import CompiledPlan
from dee.plan.model import Plan
from dee.plan.prepare import prepare_plan
from dee.plugin.contracts import ChannelAdapter, TemplateStore
from dee.plugin.manager import CHANNELS, PluginManager
from dee.privacy.keys import master_key
from dee.privacy.vault import Vault
from dee.records import BulkResult, ConsentRecord, ExecutionRun, RunPage, Suppression, run_view
from dee.routing import partition_for
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.outages import Outages
from dee.shell.enrol import enrol
from dee.shell.envs import history_ticks
from dee.shell.numbers import Listed, Listing
from dee.stores.postgres import connect as postgres
from dee.stores.postgres import contact_keys, rows
from dee.stores.postgres import numbers as numbers_sql
from dee.stores.postgres.migrate import check_constants, pending_migrations
from dee.stores.postgres.partition import PostgresPartitionStore
from dee.stores.postgres.plans import PlanCache, register_plan

log = logging.getLogger("dee.backends.daemon")
_STREAM_BUSY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  for i = 1, #group, 2 do
    if (group[i] == 'pending' or group[i] == 'lag') and group[i + 1] and group[i + 1] ~= 0 then return 1 end
  end
end
return 0
"""
_BUSY_ROWS = (
    ("inbox", "inputs accepted, not yet applied"),
    ("outbox", "channel actions committed, not yet published"),
    ("awaiting", "a run awaits a channel outcome"),
    ("due", "a run's timer is due"),
)  # what keeps a partition busy, in the order run_until_idle reports it
FAST_PATH_MIN = 1000  # contacts from which bulk_execute writes with COPY instead of messages


class DaemonBackend(Publisher):
    reply_stream: str  # its own, always

    def __init__(
        self, config: EngineConfig, plugins: PluginManager, templates: TemplateStore,
        adapters: dict[str, ChannelAdapter] | None, scheduler: bool,
    ) -> None:  # fmt: skip
        """`adapters`: what this process dispatches with (a scheduler); a client has None and
        asks the plugins only if it must send (a replay with dry_run=False)."""
        super().__init__()
        self.config = config
        self.plugins = plugins
        self.templates = templates
        self._adapters = adapters
        self.scheduler = scheduler
        self.partitions = config.scheduler.partitions
        self.plans = PlanCache(plugins, templates)
        self.client_id = ulid()
        self.keys = Keys(config.namespace)
        self.reply_stream = self.keys.reply(self.client_id)
        self._waiting: dict[str, asyncio.Future[wire.Reply]] = {}
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.runtime: Any = None
        self.clock: DeploymentClock | None = None
        self.vault: Vault  # once started: the master key is the deployment's (`dee_meta`, or the configured file)
        self._manual_tick = 0
        self.metrics = Metrics()
        self.outages = Outages()

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.pool = await postgres.create_pool(self.config.database, min_size=2, max_size=max(4, self.partitions // 2 + 4))
        # blocking reads hold a connection each (one per partition worker, dispatch channel and the
        # reply reader); a bounded pool that waits for a free connection absorbs bursts of writes
        self.redis = redis_connect.client(self.config.redis, max_connections=2 * self.partitions + 48)
        await redis_connect.ping(self.redis, self.config.redis, self.config.namespace)
        self._stream_busy = PipelinedScript(self.redis, _STREAM_BUSY)
        async with self.pool.acquire() as conn:
            missing = await pending_migrations(conn)
            if missing:
                raise ConfigError(f"the database needs `dee migrate` first (pending: {', '.join(missing)})")
            meta = await conn.fetchrow(
                "SELECT epoch_ms, tick_interval_ms, partitions, result_key, link_key, privacy_key FROM dee_meta")
        check_constants(meta["tick_interval_ms"], meta["partitions"], self.config)
        self.result_key = bytes(meta["result_key"])
        self.config = self.config.with_link_key(bytes(meta["link_key"]).hex())
        self.clock = DeploymentClock(self.config, meta["epoch_ms"])
        master = master_key(self.config.privacy, bytes(meta["privacy_key"]))
        self.vault = Vault.of(self.config.privacy, master, owner=False)  # reads, and the COPY enrolment path
        self._tasks.append(asyncio.create_task(self._read_replies(), name="dee-replies"))
        if self.scheduler:
            from dee.scheduler.runtime import Runtime

            self.runtime = Runtime(self.config, self.pool, self.redis, self.plans, self.clock, self.adapters,
                                   metrics=self.metrics, outages=self.outages, result_key=self.result_key,
                                   master=master)  # fmt: skip
            await self.runtime.start()

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        # the flag ends the reply reader even where a blocking read swallows the cancellation
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=2.0) if self._tasks else None
        if self.redis is not None:
            try:
                await self.redis.delete(self.reply_stream)
            except redis_connect.ERRORS:
                pass  # the stream expires with its namespace; nothing depends on it
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()

    @property
    def adapters(self) -> dict[str, ChannelAdapter]:
        if self._adapters is None:
            self._adapters = self.plugins.selected_adapters(self.config)
        return self._adapters

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "use the engine inside `async with`"
        return self.pool

    @property
    def current_tick(self) -> int:
        assert self.clock is not None
        return self.clock.wall_tick() if self.clock.mode == "wall" else self._manual_tick

    async def now_tick(self) -> int:
        """The deployment's tick now (a manual clock is read from the database: another process
        may have moved it)."""
        assert self.clock is not None
        if self.clock.mode == "wall":
            return self.clock.wall_tick()
        self._manual_tick = max(self._manual_tick, int(await self.db.fetchval("SELECT manual_tick FROM dee_meta")))
        return self._manual_tick

    async def ready(self) -> bool:
        """Storage answers and, for a scheduler, it has joined (owns partitions or is balanced)."""
        try:
            await self.db.fetchval("SELECT 1")
            assert self.redis is not None
            await self.redis.ping()
        except Exception:
            return False
        return True

    # ---- request / reply ---------------------------------------------------------------
    async def _read_replies(self) -> None:
        """Route replies to the waiting calls; a Redis hiccup is retried, never fatal."""
        assert self.redis is not None
        last: bytes | str = "0-0"
        while not self._closing:
            try:
                reply = cast(StreamReply, await self.redis.xread({self.reply_stream: last}, count=1000, block=250))
            except redis_connect.ERRORS as exc:
                self.outages.failed(exc, "the client's reply reader")
                await asyncio.sleep(0.2)
                continue
            self.outages.recovered("Redis")
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    answer = msgspec.json.decode(fields[FIELD], type=wire.Reply)
                    future = self._waiting.pop(answer.command_id, None)
                    if future is not None and not future.done():
                        future.set_result(answer)

    async def send(self, partition: int, message: wire.Inbound, timeout: float | None = None) -> wire.Reply:
        """Publish a message and wait for the daemon's reply after commit.

        Without an answer by half the timeout the same message (same commandId) is published
        again: if the daemon crashed after committing but before answering, the retry is
        recognised as a duplicate and answered from the stored reply; it is never applied twice.
        """
        assert self.redis is not None
        timeout = self.config.client.reply_timeout_ms / 1000 if timeout is None else timeout
        future: asyncio.Future[wire.Reply] = asyncio.get_running_loop().create_future()
        self._waiting[message.command_id] = future
        entry: dict[FieldT, EncodableT] = {FIELD: wire.encode(message)}
        try:
            for wait in (timeout / 2, timeout / 2):
                await self.redis.xadd(self.keys.inbound(partition), entry)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                except TimeoutError:
                    continue
        finally:
            self._waiting.pop(message.command_id, None)
        raise EngineUnavailableError(partition, f"no reply within {timeout:.1f} s")

    # ---- plans -------------------------------------------------------------------------
    async def register(self, plan: Plan) -> int:
        compiled = prepare_plan(plan, self.plugins.step_types(), self.templates)
        async with self.db.acquire() as conn:
            version = await register_plan(conn, compiled.plan)
        self.plans.put(compiled.plan, version)
        return version

    async def compiled(self, plan_id: str, version: int) -> CompiledPlan:
        async with self.db.acquire() as conn:
            return await self.plans.get(conn, plan_id, version)

    # ---- writes ------------------------------------------------------------------------
    async def bulk_execute(
        self, plan_id: str, version: int, contacts: list[Contact], variables: dict[str, Any], batch_size: int
    ) -> BulkResult:
        """Large batches take the COPY fast path; smaller ones go to the partitions as messages."""
        if len(contacts) >= FAST_PATH_MIN:
            return await self._bulk_copy(plan_id, version, contacts, variables)
        return await self._bulk_messages(plan_id, version, contacts, variables, batch_size)

    async def _bulk_copy(self, plan_id: str, version: int, contacts: list[Contact], variables: dict[str, Any]) -> BulkResult:
        """Enrol with batched reads and COPY, one transaction per partition, all at once; then
        wake the partitions, whose workers start the new runs at their tick. A contact whose
        number is listed and not yet applied to it is enrolled by its partition instead (as a
        message), which suppresses it with its other runs."""
        assert self.clock is not None and self.redis is not None
        compiled = await self.compiled(plan_id, version)
        by_partition: dict[int, list[tuple[str, Contact]]] = defaultdict(list)
        history = history_ticks(self.plugins.policy_gates(self.config).values(), self.config.scheduler.tick_interval_ms)
        for contact in contacts:
            by_partition[partition_for(contact.id, self.partitions)].append((self.new_run_id(), contact))
        stamp = now_iso()

        async def one(partition: int, items: list[tuple[str, Contact]]) -> tuple[list[str], list[str], list[Contact]]:
            async with self.db.acquire() as conn, conn.transaction():
                tick = await self.clock.tick(conn, partition)  # type: ignore[union-attr]
                assert self.clock is not None
                store = PostgresPartitionStore(conn, partition, self.plans, self.clock.epoch_ms)
                done = await enrol(store, tick, compiled, items, variables, tick, None, stamp, self.new_run_id,
                                   history_ticks=history, defer_listed=True, vault=self.vault)  # fmt: skip
                inserted = await store.add_runs(done.runs, done.audit)
            created = set(done.created)
            lost = [contact.id for run_id, contact in items if run_id in created and run_id not in inserted]
            return [r for r in done.created if r in inserted], [c for c, _ in done.refused] + lost, [c for _, c in done.deferred]

        results = await asyncio.gather(*(one(p, items) for p, items in sorted(by_partition.items())))
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in sorted(by_partition):
                pipe.xadd(self.keys.inbound(partition), {FIELD: wire.encode(wire.Wake(command_id="wake"))})
            await pipe.execute()
        created = [run_id for ids, _, _ in results for run_id in ids]
        skipped = sum(len(refused) for _, refused, _ in results)
        deferred = [contact for _, _, later in results for contact in later]
        if not deferred:
            return BulkResult(len(created), skipped, [], sorted(created))
        rest = await self._bulk_messages(plan_id, version, deferred, variables, 100)
        return BulkResult(len(created) + rest.created, skipped + rest.skipped, rest.errors, sorted([*created, *rest.run_ids]))

    async def list_numbers(self, listing: Listing, numbers: Sequence[str], tick: int) -> Listed:
        async with self.db.acquire() as conn:
            return await numbers_sql.list_numbers(conn, listing, numbers, tick)

    async def partition_of_run(self, run_id: str) -> int:
        partition = await self.db.fetchval("SELECT partition FROM runs WHERE run_id = $1", run_id)
        if partition is None:
            raise RunNotFoundError(run_id)
        return int(partition)

    async def run_keys(self, run_ids: list[str]) -> dict[str, tuple[str, bytes | None]]:
        async with self.db.acquire() as conn:
            return await contact_keys.run_keys(conn, "r.run_id = ANY($1::text[])", run_ids)

    async def contacts_of(self, run_ids: list[str]) -> dict[str, Contact]:
        found = await self.db.fetch("SELECT run_id, state FROM runs WHERE run_id = ANY($1::text[])", run_ids)
        return {r["run_id"]: rows.decode_state(r["state"]).contact for r in found}

    async def consents_until(self, contact_ids: list[str], tick: int) -> list[ConsentRecord]:
        found = await self.db.fetch(
            "SELECT contact_id, channel, status, source, tick, expires_tick, evidence FROM consents "
            "WHERE contact_id = ANY($1::text[]) AND tick <= $2 ORDER BY id", contact_ids, tick,
        )  # fmt: skip
        return [ConsentRecord(**{**dict(r), "evidence": msgspec.json.decode(r["evidence"])}) for r in found]

    async def suppressions_between(self, from_tick: int, to_tick: int) -> list[Suppression]:
        found = await self.db.fetch(
            "SELECT contact_id, level, reason, source, channel, plan_id, tick FROM suppressions "
            "WHERE tick BETWEEN $1 AND $2 ORDER BY id", from_tick, to_tick,
        )  # fmt: skip
        return [Suppression(**dict(r)) for r in found]

    # ---- reads -------------------------------------------------------------------------
    def _view(self, row: asyncpg.Record, plan: CompiledPlan) -> ExecutionRun:
        state = rows.decode_state(row["state"])
        done = row["completed_at"].isoformat(timespec="milliseconds") if row["completed_at"] else None
        return run_view(state, plan, row["started_at"].isoformat(timespec="milliseconds"), done)

    async def get_run(self, run_id: str) -> ExecutionRun:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow("SELECT state, started_at, completed_at, plan_id, plan_version FROM runs WHERE run_id = $1", run_id)
            if row is None:
                raise RunNotFoundError(run_id)
            return self._view(row, await self.plans.get(conn, row["plan_id"], row["plan_version"]))

    async def list_runs(
        self, statuses: list[str] | None, plan_id: str | None, contact_id: str | None,
        started_after: int | datetime | None, started_before: int | datetime | None, limit: int, offset: int,
    ) -> RunPage:  # fmt: skip
        where, args = ["true"], []

        def add(clause: str, value: Any) -> None:
            args.append(value)
            where.append(clause.replace("?", f"${len(args)}"))

        if statuses:
            add("status = ANY(?::text[])", statuses)
        if plan_id:
            add("plan_id = ?", plan_id)
        if contact_id:
            add("contact_id = ?", contact_id)
        for bound, op in ((started_after, ">"), (started_before, "<")):
            if isinstance(bound, int):
                add(f"start_tick {op} ?", bound)
            elif bound is not None:
                add(f"started_at {op} ?", bound)
        clause = " AND ".join(where)
        async with self.db.acquire() as conn:
            total = await conn.fetchval(f"SELECT count(*) FROM runs WHERE {clause}", *args)
            found = await conn.fetch(
                f"SELECT state, started_at, completed_at, plan_id, plan_version FROM runs WHERE {clause} "
                f"ORDER BY run_id LIMIT {int(limit)} OFFSET {int(offset)}", *args)  # fmt: skip
            views = [self._view(r, await self.plans.get(conn, r["plan_id"], r["plan_version"])) for r in found]
        return RunPage(views, int(total))

    async def audit_entries(self, run_id: str) -> list[AuditEntry]:
        async with self.db.acquire() as conn:
            entries = await rows.audit_of(conn, run_id)
            if not entries and await conn.fetchval("SELECT 1 FROM runs WHERE run_id = $1", run_id) is None:
                raise RunNotFoundError(run_id)
            return entries

    async def audit_query(
        self, run_id: str | None, actions: list[str] | None, from_tick: int | None, to_tick: int | None
    ) -> list[AuditEntry]:
        found = await self.db.fetch(
            f"SELECT {', '.join(rows.AUDIT_COLUMNS)} FROM audit_log WHERE ($1::text IS NULL OR run_id = $1) "
            "AND ($2::text[] IS NULL OR action = ANY($2::text[])) AND ($3::bigint IS NULL OR tick >= $3) "
            "AND ($4::bigint IS NULL OR tick <= $4) ORDER BY run_id, seq",
            run_id, actions, from_tick, to_tick,
        )  # fmt: skip
        return [rows.audit_from_row(r) for r in found]

    async def chain_head(self, run_id: str) -> tuple[int, str]:
        row = await self.db.fetchrow("SELECT seq, head FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise RunNotFoundError(run_id)
        return int(row["seq"]), row["head"]

    async def chains(self, run_ids: list[str]) -> dict[str, tuple[list[AuditEntry], int, str]]:
        """Each run's entries and recorded chain head, in two queries for all of them."""
        heads = {r["run_id"]: (int(r["seq"]), r["head"]) for r in await self.db.fetch(
            "SELECT run_id, seq, head FROM runs WHERE run_id = ANY($1::text[])", run_ids)}  # fmt: skip
        for run_id in run_ids:
            if run_id not in heads:
                raise RunNotFoundError(run_id)
        logs: dict[str, list[AuditEntry]] = defaultdict(list)
        for row in await self.db.fetch(
            f"SELECT {', '.join(rows.AUDIT_COLUMNS)} FROM audit_log WHERE run_id = ANY($1::text[]) ORDER BY run_id, seq",
            run_ids,
        ):  # fmt: skip
            logs[row["run_id"]].append(rows.audit_from_row(row))
        return {run_id: (logs[run_id], *heads[run_id]) for run_id in run_ids}

    # ---- manual clock ------------------------------------------------------------------
    async def advance_clock(self, ticks: int) -> None:
        """Step the deployment clock to each tick where a timer is due, up to `ticks` ahead."""
        target = await self.db.fetchval("SELECT manual_tick FROM dee_meta") + ticks
        await self.run_until_idle()
        while True:
            now = await self.db.fetchval("SELECT manual_tick FROM dee_meta")
            wake = await self.db.fetchval(
                "SELECT min((SELECT min(wake_tick) FROM runs WHERE partition = p AND wake_tick > $1 AND status <> 'paused')) "
                "FROM generate_series(0, $2 - 1) AS p", now, self.partitions,
            )  # one probe of the runs_due index per partition
            step = target if wake is None or wake > target else wake
            await self._set_clock(step)
            await self.run_until_idle()
            if step >= target:
                return

    async def _set_clock(self, tick: int) -> None:
        """Move the manual clock and wake the partitions that have a timer due by then (the
        others read the clock when they next have work: nothing of theirs depends on it)."""
        assert self.redis is not None
        await self.db.execute("UPDATE dee_meta SET manual_tick = greatest(manual_tick, $1)", tick)
        self._manual_tick = tick
        due = await self.db.fetch(
            "SELECT p AS partition FROM generate_series(0, $2 - 1) AS p WHERE "
            "(SELECT 1 FROM runs WHERE partition = p AND wake_tick <= $1 AND status <> 'paused' LIMIT 1) IS NOT NULL",
            tick, self.partitions,
        )  # fmt: skip
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in due:
                pipe.xadd(self.keys.inbound(row["partition"]), {FIELD: wire.encode(wire.Wake(command_id="wake"))})
            await pipe.execute()

    async def run_until_idle(self) -> None:
        """Poll until no partition has anything due, queued or in flight at the clock's tick."""
        deadline = time.monotonic() + self.config.client.idle_timeout_ms / 1000
        pause = 0.002
        while True:
            busy = await self._busy()
            if busy is None:
                return
            if time.monotonic() > deadline:
                partition, why = busy
                raise EngineUnavailableError(partition, f"not idle before the timeout ({why})")
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.02)  # quick for short waits, light on the database for long ones

    async def _busy(self) -> tuple[int, str] | None:
        """A partition that still has work and what the work is, or None when the whole
        deployment is idle (the reason goes into the timeout error: a stuck deployment should
        say what it is stuck on)."""
        assert self.redis is not None
        row = await self.db.fetchrow(
            """
            WITH m AS (SELECT manual_tick AS t FROM dee_meta)
            SELECT (SELECT min(partition) FROM inbox) AS inbox,
              (SELECT min(partition) FROM outbox) AS outbox,
              (SELECT min(partition) FROM runs WHERE awaiting) AS awaiting,
              (SELECT min(p) FROM generate_series(0, $1 - 1) AS p WHERE (
                 SELECT 1 FROM runs WHERE partition = p AND wake_tick <= (SELECT t FROM m) AND status <> 'paused'
                 LIMIT 1) IS NOT NULL) AS due,
              (SELECT t FROM m) AS tick
            """,
            self.partitions,
        )  # index probes only (a LIMIT 1 subquery per partition: an EXISTS became a hash join
        #    over every run), since this runs every few milliseconds while a caller waits
        self._manual_tick = row["tick"]
        for column, why in _BUSY_ROWS:
            if row[column] is not None:
                return int(row[column]), why
        # a stream is busy while a consumer group has entries pending or not yet read; asked in
        # Redis (one script call per stream, one round trip): parsing XINFO replies in the
        # client cost a millisecond of CPU per poll
        streams = [self.keys.inbound(p) for p in range(self.partitions)] + [self.keys.dispatch(c) for c in CHANNELS]
        flags = await self._stream_busy.run_all([([stream], ()) for stream in streams])
        for index, flag in enumerate(flags):
            if flag:
                stream = streams[index]
                return (index if index < self.partitions else -1), f"{stream} has entries unread or unacknowledged"
        return None
