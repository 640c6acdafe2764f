"""`dee audit archive`: the retention job, one pass (run it daily from cron or a Kubernetes
CronJob, with the schema owner's database URL).

One pass makes the partitions due by now (and moves rows waiting in the DEFAULT partition),
archives and drops every partition past retention (`dee.archive.retention` says which), and
forgets message ids past the dedupe window. One pass runs at a time (a session advisory lock);
a partition that fails to archive is kept and reported, and the others go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
import msgspec

from dee.archive.archiver import archive_partition, drop_unarchived
from dee.archive.received import prune_received
from dee.archive.retention import PartitionPlan, plan_retention
from dee.archive.s3 import Bucket, Location, open_bucket
from dee.config import EngineConfig
from dee.errors import ArchiveError, ConfigError
from dee.stores.postgres.audit_partitions import current_tick, ensure_partitions, fix_partition_days
from dee.stores.postgres.connect import connect
from dee.stores.postgres.migrate import pending_migrations

LOCK_KEY = 0x0DEE_0A4C


class PartitionReport(msgspec.Struct, frozen=True):
    name: str
    start_from: int
    start_to: int
    action: str  # kept, due (a dry run), archived, dropped, failed
    detail: str
    object_key: str | None = None


class ArchiveReport(msgspec.Struct, frozen=True):
    now_tick: int
    dry_run: bool
    created: list[str]
    partitions: list[PartitionReport]
    received_pruned: int

    @property
    def failed(self) -> int:
        return sum(1 for p in self.partitions if p.action == "failed")


@asynccontextmanager
async def deployment(config: EngineConfig, exclusive: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a migrated PostgreSQL deployment (`exclusive`, to change it: holding the
    archive job's lock, refused while another pass runs, and with `audit.partition_days` checked)."""
    if config.database.startswith("memory:"):
        raise ConfigError("the audit archive works on a PostgreSQL deployment (database = postgresql://...)")
    conn = await connect(config.database)
    try:
        pending = await pending_migrations(conn)
        if pending:
            raise ConfigError(f"the database needs `dee migrate` ({', '.join(pending)} pending)")
        if exclusive:
            await fix_partition_days(conn, config)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                raise ConfigError("another `dee audit archive` or `dee audit restore` is running on this deployment")
        yield conn
    finally:
        await conn.close()


async def run_archive(config: EngineConfig, dry_run: bool = False, no_archive: bool = False, drop_restored: bool = False) -> ArchiveReport:
    audit = config.audit
    if no_archive and audit.archive_to is not None:
        raise ConfigError("--no-archive while audit.archive_to is set: drop the option, or unset archive_to")
    async with deployment(config, exclusive=True) as conn, AsyncExitStack() as stack:
        now = await current_tick(conn, config.scheduler.clock)
        created: list[str] = []
        if not dry_run:
            async with conn.transaction():
                created = await ensure_partitions(conn, now)
        tick_ms = int(await conn.fetchval("SELECT tick_interval_ms FROM dee_meta"))
        plans = await plan_retention(conn, audit.retention_days, tick_ms, now, drop_restored)
        due = [p for p in plans if p.due]
        if due and audit.archive_to is None and not no_archive:
            raise ConfigError(f"{len(due)} partitions are past audit.retention_days but audit.archive_to is not set: "
                              "set it, or pass --no-archive to drop them without an archive")  # fmt: skip
        bucket = await stack.enter_async_context(open_bucket(audit)) if due and audit.archive_to and not dry_run else None
        deployment_id = str(await conn.fetchval("SELECT deployment_id FROM dee_meta"))
        reports = [await _apply(conn, bucket, deployment_id, p, dry_run, audit.archive_to) for p in plans]
        pruned = await prune_received(conn, config.bus.dedupe_days, tick_ms, now, dry_run)
    return ArchiveReport(now, dry_run, created, reports, pruned)


async def _apply(conn: asyncpg.Connection, bucket: Bucket | None, deployment_id: str, plan: PartitionPlan, dry_run: bool,
                 archive_to: str | None) -> PartitionReport:  # fmt: skip
    def report(action: str, detail: str, key: str | None = None) -> PartitionReport:
        return PartitionReport(plan.name, plan.start_from, plan.start_to, action, detail, key)

    if not plan.due:
        return report("kept", plan.why)
    if dry_run:
        where = f"archived to {Location.parse(archive_to).uri('')} and dropped" if archive_to else "dropped without an archive"
        return report("due", f"{plan.why}: would be {where}")
    try:
        if bucket is None:
            outcome = await drop_unarchived(conn, plan.partition)
        else:
            outcome = await archive_partition(conn, bucket, deployment_id, plan.partition)
    except ArchiveError as exc:
        return report("failed", f"{exc} (kept)")
    if not outcome.dropped:
        return report("kept", outcome.why, outcome.object_key)
    return report("archived" if outcome.object_key else "dropped", outcome.why, outcome.object_key)
