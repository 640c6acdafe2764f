"""Archiving one partition: write it out, upload it, read it back, and only then drop it.

1. dump: the partition's rows in (run, seq) order, in one repeatable-read snapshot, to a gzip
   JSON lines file, each run's chain checked against its run's recorded head on the way;
2. upload the object, then its manifest, under keys named by the partition and the object's
   SHA-256 (a rerun after a crash writes the same keys again);
3. read both back from S3: the object's size, SHA-256, rows and every run's first seq, last
   seq and head must be what was dumped, the manifest what was written;
4. drop, in one transaction under an ACCESS EXCLUSIVE lock on `audit_log`: the partition
   still holds exactly the rows dumped (the log is append-only, so the same count is the same
   rows) and its runs have all still ended; the archive is recorded in `audit_archives`, the
   partition detached and dropped.

A failure at any step leaves the partition in place: nothing is dropped that was not read back
from S3 and verified. `drop_unarchived` is retention without an archive (steps 1 to 3 skipped).
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from pathlib import Path
from typing import NamedTuple

import asyncpg

from dee.archive.chains import check_rows
from dee.archive.objects import FORMAT, Manifest, Tally, check_object, encode_line, encode_manifest
from dee.archive.s3 import Bucket
from dee.errors import ArchiveError
from dee.kernel.audit import AuditRow
from dee.stores.postgres.audit_partitions import Partition
from dee.stores.postgres.rows import AUDIT_COPY_COLUMNS, TERMINAL_SQL

FETCH_ROWS = 5000  # rows the dump's cursor fetches at a time
LOCK_TIMEOUT = "10s"  # the drop waits this long at most for the ticks in flight


class Dumped(NamedTuple):
    path: Path
    bytes: int
    sha256: str
    tally: Tally
    broken: list[str]  # "run: why" of each run whose chain does not check


class Outcome(NamedTuple):
    dropped: bool
    why: str  # what was done, or why the partition was kept
    object_key: str | None = None


async def dump(conn: asyncpg.Connection, partition: Partition, folder: Path) -> Dumped:
    path = folder / f"{partition.name}.jsonl.gz"
    tally, broken = Tally(), []
    columns = ", ".join(AUDIT_COPY_COLUMNS)

    def check(rows: list[AuditRow], heads: dict[str, tuple[int, str]]) -> None:
        head = heads.get(rows[0].run_id)
        why = "no run row" if head is None else check_rows(rows, *head)
        if why:
            broken.append(f"{rows[0].run_id}: {why}")

    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            heads = {r["run_id"]: (r["seq"], r["head"]) for r in await conn.fetch(
                "SELECT run_id, seq, head FROM runs WHERE start_tick >= $1 AND start_tick < $2",
                partition.start_from, partition.start_to)}  # fmt: skip
            run: list[AuditRow] = []
            async for record in conn.cursor(f'SELECT {columns} FROM "{partition.name}" ORDER BY run_id, seq', prefetch=FETCH_ROWS):
                values = tuple(record.values())
                out.write(encode_line(values))
                row = AuditRow(*values[:-1])
                tally.add(row.run_id, row.seq, row.checksum)
                if run and run[-1].run_id != row.run_id:
                    check(run, heads)
                    run = []
                run.append(row)
            if run:
                check(run, heads)
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return Dumped(path, path.stat().st_size, digest.hexdigest(), tally, broken)


def keys(bucket: Bucket, deployment: str, partition: Partition, sha256: str) -> tuple[str, str]:
    stem = bucket.location.key(deployment, "audit", f"{partition.name}-{sha256[:16]}")
    return f"{stem}.jsonl.gz", f"{stem}.manifest.json"


async def upload_and_verify(bucket: Bucket, deployment: str, partition: Partition, dumped: Dumped) -> Manifest:
    """Steps 2 and 3: raises ArchiveError unless S3 holds exactly what was dumped."""
    object_key, manifest_key = keys(bucket, deployment, partition, dumped.sha256)
    manifest = Manifest(FORMAT, deployment, partition.name, partition.start_from, partition.start_to, object_key,
                        dumped.tally.rows, len(dumped.tally.chains), dumped.bytes, dumped.sha256, dumped.tally.chains)  # fmt: skip
    await bucket.put_file(object_key, dumped.path)
    await bucket.put_bytes(manifest_key, encode_manifest(manifest))
    where = bucket.location.uri(object_key)
    back = await check_object(bucket.stream(object_key), where)
    if (back.bytes, back.sha256) != (dumped.bytes, dumped.sha256):
        raise ArchiveError(f"{where}: read back {back.bytes} bytes with SHA-256 {back.sha256}, "
                           f"wrote {dumped.bytes} bytes with {dumped.sha256}")  # fmt: skip
    if back.tally.rows != dumped.tally.rows or back.tally.chains != dumped.tally.chains:
        raise ArchiveError(f"{where}: read back {back.tally.rows} rows of {len(back.tally.chains)} runs that differ from "
                           f"the {dumped.tally.rows} rows of {len(dumped.tally.chains)} runs written")  # fmt: skip
    if await bucket.read(manifest_key) != encode_manifest(manifest):
        raise ArchiveError(f"{bucket.location.uri(manifest_key)}: the manifest read back is not the one written")
    return manifest


async def drop(
    conn: asyncpg.Connection, partition: Partition, rows: int, manifest: Manifest | None, manifest_key: str | None
) -> str | None:
    """Step 4; returns why the partition was kept instead (it changed, or a run reopened)."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        now = await conn.fetchval(f'SELECT count(*) FROM "{partition.name}"')
        if now != rows:
            return f"it holds {now} rows now, {rows} when it was archived (archived again on the next run)"
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM runs WHERE start_tick >= $1 AND start_tick < $2 "
                               f"AND status NOT IN {TERMINAL_SQL})", partition.start_from, partition.start_to):  # fmt: skip
            return "a run of it is no longer ended"
        runs = await conn.fetchval(f'SELECT count(DISTINCT run_id) FROM "{partition.name}"')
        await conn.execute(
            "INSERT INTO audit_archives (partition, start_from, start_to, rows, runs, object_key, manifest_key, bytes, sha256) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            partition.name, partition.start_from, partition.start_to, rows, runs,
            manifest and manifest.object_key, manifest_key, manifest and manifest.bytes, manifest and manifest.sha256,
        )  # fmt: skip
        await conn.execute("DELETE FROM audit_restored WHERE partition = $1", partition.name)
        await conn.execute(f'ALTER TABLE audit_log DETACH PARTITION "{partition.name}"')
        await conn.execute(f'DROP TABLE "{partition.name}"')
    return None


async def archive_partition(conn: asyncpg.Connection, bucket: Bucket, deployment: str, partition: Partition) -> Outcome:
    """Steps 1 to 4 (an empty partition, which has nothing to lose, is dropped without an object)."""
    with tempfile.TemporaryDirectory(prefix="dee-archive-") as folder:
        dumped = await dump(conn, partition, Path(folder))
        if dumped.tally.rows == 0:
            kept = await drop(conn, partition, 0, None, None)
            return Outcome(False, kept) if kept else Outcome(True, "empty: dropped")
        if dumped.broken:
            return Outcome(False, f"{len(dumped.broken)} chains do not verify ({'; '.join(dumped.broken[:3])}); "
                                  "see dee audit verify")  # fmt: skip
        manifest = await upload_and_verify(bucket, deployment, partition, dumped)
    kept = await drop(conn, partition, dumped.tally.rows, manifest, keys(bucket, deployment, partition, dumped.sha256)[1])
    where = bucket.location.uri(manifest.object_key)
    if kept:
        return Outcome(False, f"{kept}; uploaded to {where}", manifest.object_key)
    done = f"archived {dumped.tally.rows} rows of {manifest.runs} runs to {where}, verified, dropped"
    return Outcome(True, done, manifest.object_key)


async def drop_unarchived(conn: asyncpg.Connection, partition: Partition) -> Outcome:
    rows = await conn.fetchval(f'SELECT count(*) FROM "{partition.name}"')
    kept = await drop(conn, partition, rows, None, None)
    return Outcome(False, kept) if kept else Outcome(True, f"dropped {rows} rows without an archive (--no-archive)")
