"""`dee audit verify --archive`: the chains of runs whose partitions were archived, from their
archived entries and whatever of them is live (a restored partition; entries journaled after
the archive), against each run's recorded head in `runs`, which never leaves the database:
that head is what ties the archived part of a chain to the live one.

Each archived range is read object by object, every object's SHA-256 checked against its
record, and a run is verified as soon as all its entries were seen (its rows are consecutive
in an object). Only runs whose entries are spread over several sources wait in memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

import asyncpg

from dee.archive.objects import Reading, row_of
from dee.archive.s3 import Bucket
from dee.errors import ConfigError
from dee.kernel.audit import AuditRow, ChainVerification, verify_chain
from dee.stores.postgres.rows import AUDIT_COLUMNS


class Verified:
    """Verdicts by run, and the archives that are not what was recorded."""

    def __init__(self) -> None:
        self.chains: dict[str, ChainVerification] = {}
        self.archives: list[str] = []  # "s3://...: why"
        self.unverifiable: list[str] = []  # runs whose entries were dropped without an archive (--no-archive)


async def archived_runs(conn: asyncpg.Connection, run_ids: Collection[str] | None) -> dict[str, tuple[int, int]]:
    """Run id -> the range (start_from, start_to) of its archived partition, for the runs (all,
    or these) whose partition was archived or dropped."""
    found = await conn.fetch(
        "SELECT DISTINCT ON (r.run_id) r.run_id, a.start_from, a.start_to FROM runs r "
        "JOIN audit_archives a ON a.start_from <= r.start_tick AND r.start_tick < a.start_to "
        "WHERE $1::text[] IS NULL OR r.run_id = ANY($1::text[]) ORDER BY r.run_id",
        None if run_ids is None else list(run_ids),
    )  # fmt: skip
    return {r["run_id"]: (r["start_from"], r["start_to"]) for r in found}


async def verify_archived(conn: asyncpg.Connection, bucket: Bucket | None, runs: dict[str, tuple[int, int]]) -> Verified:
    out = Verified()
    by_range: dict[tuple[int, int], set[str]] = defaultdict(set)
    for run_id, bounds in runs.items():
        by_range[bounds].add(run_id)
    for bounds, wanted in sorted(by_range.items()):
        await _verify_range(conn, bucket, bounds, wanted, out)
    return out


async def _verify_range(conn: asyncpg.Connection, bucket: Bucket | None, bounds: tuple[int, int], wanted: set[str], out: Verified) -> None:
    heads = {r["run_id"]: (r["seq"], r["head"]) for r in await conn.fetch(
        "SELECT run_id, seq, head FROM runs WHERE start_tick >= $1 AND start_tick < $2 AND run_id = ANY($3::text[])",
        *bounds, sorted(wanted))}  # fmt: skip
    seen: dict[str, dict[int, AuditRow]] = defaultdict(dict)
    conflicts: dict[str, str] = {}
    for r in await conn.fetch(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log WHERE start_tick >= $1 AND start_tick < $2 "
                              "AND run_id = ANY($3::text[])", *bounds, sorted(wanted)):  # fmt: skip
        seen[r["run_id"]][r["seq"]] = AuditRow(*r.values())

    def add(row: AuditRow) -> None:
        kept = seen[row.run_id].setdefault(row.seq, row)
        if kept != row:
            conflicts.setdefault(row.run_id, f"two different entries with seq {row.seq} (archived and live, or in two archives)")

    def settle(run_id: str) -> None:
        seq, head = heads[run_id]
        chain = seen.pop(run_id, {})
        rows = [chain[s] for s in sorted(chain)]
        why = conflicts.get(run_id)
        out.chains[run_id] = ChainVerification(False, len(rows), None, None, 1, why) if why else verify_chain(rows, seq, head)

    archives = await conn.fetch("SELECT object_key, sha256, bytes FROM audit_archives WHERE start_from = $1 AND start_to = $2 "
                                "AND object_key IS NOT NULL ORDER BY id", *bounds)  # fmt: skip
    if archives and bucket is None:
        raise ConfigError("audit.archive_to is not set, but archived entries are to be verified: set it to the archive's location")
    for archive in archives:
        assert bucket is not None
        where = bucket.location.uri(archive["object_key"])
        reading = Reading(bucket.stream(archive["object_key"]), where)
        async for line in reading.lines():
            if line.run_id in heads and line.run_id not in out.chains:
                add(row_of(line))
                if line.seq == heads[line.run_id][0] and len(seen[line.run_id]) == line.seq:
                    settle(line.run_id)  # every entry seen: no need to keep it
        if (reading.sha256, reading.bytes) != (archive["sha256"], archive["bytes"]):
            out.archives.append(f"{where}: {reading.bytes} bytes with SHA-256 {reading.sha256}, recorded "
                                f"{archive['bytes']} bytes with {archive['sha256']}")  # fmt: skip
    for run_id in sorted(heads):
        if not archives and run_id not in seen:
            out.unverifiable.append(run_id)
        elif run_id not in out.chains:
            settle(run_id)
