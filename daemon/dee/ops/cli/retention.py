"""`dee audit archive|restore` and the archive's share of `dee audit verify`: audit retention,
run with the schema owner's database URL (the daemon role may not drop partitions)."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack
from typing import Any

from dee.archive.maintenance import ArchiveReport, deployment, run_archive
from dee.archive.restore import restore
from dee.archive.s3 import open_bucket
from dee.archive.verify import Verified, archived_runs, verify_archived
from dee.config import EngineConfig
from dee.errors import ArchiveError, ConfigError
from dee.ops.cli.output import emit
from dee.stores.postgres.audit_partitions import current_tick


def add_commands(audit: Any, common: argparse.ArgumentParser) -> None:
    archive = audit.add_parser("archive", parents=[common], help="retention: archive to S3 and drop the partitions past "
                               "audit.retention_days, make the next partitions, forget old message ids")  # fmt: skip
    archive.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    archive.add_argument("--no-archive", action="store_true", help="drop partitions past retention without archive_to")
    archive.add_argument("--drop-restored", action="store_true", help="let restored partitions go again")
    archive.add_argument("--json", action="store_true")
    archive.set_defaults(func=cmd_archive)
    back = audit.add_parser("restore", parents=[common], help="bring an archived partition, or one run's entries, back")
    back.add_argument("partition", nargs="?", help="a partition's name, as `dee audit archive` lists it (audit_log_YYYYMMDD)")
    back.add_argument("--run", dest="run_id", metavar="RUN", help="restore only this run's entries")
    back.add_argument("--json", action="store_true")
    back.set_defaults(func=cmd_restore)


def cmd_archive(args: argparse.Namespace, config: EngineConfig) -> int:
    report = asyncio.run(run_archive(config, args.dry_run, args.no_archive, args.drop_restored))
    emit(report, args.json, lambda: archive_text(report, config.bus.dedupe_days))
    return 1 if report.failed else 0


def archive_text(report: ArchiveReport, dedupe_days: int) -> str:
    lines = [f"at tick {report.now_tick}{' (dry run: nothing done)' if report.dry_run else ''}"]
    if report.created:
        lines.append(f"made partitions: {', '.join(report.created)}")
    for p in report.partitions:
        lines.append(f"{p.name}  runs started {p.start_from}..{p.start_to - 1}  {p.action}: {p.detail}")
    verb = "would be forgotten" if report.dry_run else "forgotten"
    lines.append(f"received: {report.received_pruned:,} message ids older than {dedupe_days} days {verb}")
    if report.failed:
        lines.append(f"{report.failed} partitions failed to archive and were kept")
    return "\n".join(lines)


def cmd_restore(args: argparse.Namespace, config: EngineConfig) -> int:
    if (args.partition is None) == (args.run_id is None):
        raise ConfigError("name a partition or --run RUN (one of them)")

    async def go() -> Any:
        async with deployment(config, exclusive=True) as conn, open_bucket(config.audit) as bucket:
            return await restore(conn, bucket, await current_tick(conn, config.scheduler.clock), args.partition, args.run_id)

    try:
        done = asyncio.run(go())
    except ArchiveError as exc:  # an object that is not what was recorded: the check failed, nothing restored
        from dee.ops.cli import CHECK_FAILED, fail

        return fail(str(exc), CHECK_FAILED)
    emit(done._asdict(), args.json, lambda: (
        f"{done.partition}: {done.rows:,} rows restored from {done.archives} archive{'s' if done.archives != 1 else ''} "
        f"({done.present:,} already there); "
        "kept until `dee audit archive --drop-restored`"))  # fmt: skip
    return 0


async def archived_share(config: EngineConfig, run_ids: list[str] | None, check: bool) -> tuple[set[str], Verified]:
    """The runs (of these, or all) whose partitions left the live log, and, when `check`, the
    verdicts of their chains across the archive (an empty verdict otherwise)."""
    if config.database.startswith("memory:"):
        if check:
            raise ConfigError("--archive: a memory:// engine keeps no archive")
        return set(), Verified()
    async with deployment(config) as conn, AsyncExitStack() as stack:
        runs = await archived_runs(conn, run_ids)
        if not check or not runs:
            return set(runs), Verified()
        needed = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM audit_archives WHERE object_key IS NOT NULL)")
        bucket = await stack.enter_async_context(open_bucket(config.audit)) if needed else None
        return set(runs), await verify_archived(conn, bucket, runs)
