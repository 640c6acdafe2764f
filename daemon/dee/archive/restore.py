"""`dee audit restore`: archived rows back into `audit_log`, so chains verify and exports,
timelines and replays read them again.

The rows go back into their range partition (made again if it was dropped), from every
archive recorded for the partition, or only a run's rows (`--run`). Each object is read in
full into a temporary table and its SHA-256 checked against the record before any row of it
is inserted, all in one transaction: a corrupt or missing object restores nothing. Rows
already present are left as they are. The partition is then kept until `dee audit archive
--drop-restored`.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from dee.archive.objects import Reading, row_of
from dee.archive.s3 import Bucket
from dee.errors import ArchiveError, ConfigError, RunNotFoundError
from dee.stores.postgres.audit_partitions import Partition, create_partition, ensure_partitions, layout, live_partitions
from dee.stores.postgres.rows import AUDIT_COPY_COLUMNS

BATCH_ROWS = 5000


class Restored(NamedTuple):
    partition: str
    archives: int
    rows: int  # inserted
    present: int  # read from the archives but already in the log


async def archives_of(conn: asyncpg.Connection, partition: str | None, run_id: str | None) -> list[asyncpg.Record]:
    """The archive records to read: a partition's, or those of the range a run started in."""
    if run_id is not None:
        start = await conn.fetchval("SELECT start_tick FROM runs WHERE run_id = $1", run_id)
        if start is None:
            raise RunNotFoundError(run_id)
        found: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM audit_archives WHERE start_from <= $1 AND $1 < start_to AND object_key IS NOT NULL ORDER BY id", start
        )
        if not found:
            raise ConfigError(f"no archive holds run {run_id} (its partition was never archived)")
        return found
    found = list(await conn.fetch("SELECT * FROM audit_archives WHERE partition = $1 AND object_key IS NOT NULL ORDER BY id", partition))
    if not found:
        known = await conn.fetchval("SELECT count(*) FROM audit_archives WHERE partition = $1", partition)
        raise ConfigError(f"partition {partition} was dropped without an archive" if known else f"no archive of partition {partition}")
    return found


async def restore(conn: asyncpg.Connection, bucket: Bucket, now_tick: int, partition: str | None = None,
                  run_id: str | None = None) -> Restored:  # fmt: skip
    records = await archives_of(conn, partition, run_id)
    first = records[0]
    target = Partition(first["partition"], first["start_from"], first["start_to"])
    inserted = present = 0
    async with conn.transaction():
        await ensure_partitions(conn, now_tick)  # rows of the range waiting in the DEFAULT partition get their partition
        if target.start_from not in {p.start_from for p in await live_partitions(conn)}:
            await conn.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
            shape = await layout(conn)
            await create_partition(conn, shape.partition(shape.period_of(target.start_from)))
        await conn.execute("CREATE TEMP TABLE audit_restoring (LIKE audit_log) ON COMMIT DROP")
        for record in records:
            await _load(conn, bucket, record, run_id)
            added = await conn.fetchval(
                "WITH added AS (INSERT INTO audit_log SELECT * FROM audit_restoring ON CONFLICT DO NOTHING RETURNING 1) "
                "SELECT count(*) FROM added"
            )
            read = await conn.fetchval("SELECT count(*) FROM audit_restoring")
            inserted, present = inserted + added, present + read - added
            await conn.execute("DELETE FROM audit_restoring")
        await conn.execute("INSERT INTO audit_restored (partition, start_from, start_to) VALUES ($1, $2, $3) "
                           "ON CONFLICT (partition) DO UPDATE SET restored_at = now()", *target)  # fmt: skip
    return Restored(target.name, len(records), inserted, present)


async def _load(conn: asyncpg.Connection, bucket: Bucket, record: asyncpg.Record, run_id: str | None) -> None:
    """One archive's rows (of `run_id` only, if given) into the temporary table, once the
    object proved to be the one recorded."""
    where = bucket.location.uri(record["object_key"])
    reading = Reading(bucket.stream(record["object_key"]), where)
    batch: list[tuple[object, ...]] = []
    async for line in reading.lines():
        if run_id is None or line.run_id == run_id:
            batch.append((*row_of(line), line.start_tick))
        if len(batch) >= BATCH_ROWS:
            await conn.copy_records_to_table("audit_restoring", records=batch, columns=AUDIT_COPY_COLUMNS)
            batch = []
    if batch:
        await conn.copy_records_to_table("audit_restoring", records=batch, columns=AUDIT_COPY_COLUMNS)
    if reading.sha256 != record["sha256"] or reading.bytes != record["bytes"]:
        raise ArchiveError(f"{where}: {reading.bytes} bytes with SHA-256 {reading.sha256}, but the archive recorded "
                           f"{record['bytes']} bytes with {record['sha256']}: not restored")  # fmt: skip
