"""Audit retention against a real S3 endpoint (moto's server on a loopback port) and the real
PostgreSQL: partitions archived as gzip JSON lines with a manifest, read back, verified and
only then dropped; a crash or a corrupt object between upload and drop loses nothing and drops
nothing; restore; chains verified across the archive and the live log; a year of audit archived
partition by partition with nothing lost."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from moto.server import ThreadedMotoServer

from dee import Engine, EngineConfig
from dee.archive.maintenance import run_archive
from tests.integration.archive_helpers import (
    DAY,
    PERIOD,
    audit_rows,
    bucket_of,
    contact,
    dee,
    environment,
    keys_in,
    live_partitions,
    new_bucket,
    s3_client,
    s3_proxy,
    short_plan,
    start_runs,
    with_archive,
)  # fmt: skip


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in the CLI's output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def archived(deployment: EngineConfig, s3_endpoint: str) -> EngineConfig:
    """The test deployment with an archive in a bucket of its own, retention 30 days."""
    return with_archive(deployment, s3_endpoint, await new_bucket(s3_endpoint))


@pytest.fixture
def cli_env(archived: EngineConfig, monkeypatch: pytest.MonkeyPatch) -> EngineConfig:
    for name, value in environment(archived).items():
        monkeypatch.setenv(name, value)
    return archived


async def test_a_partition_past_retention_is_archived_verified_and_dropped(cli_env: EngineConfig) -> None:
    config = cli_env
    async with Engine(config, scheduler=True) as engine:
        started = await start_runs(engine, months=2)
        await engine.advance_clock(2 * PERIOD + 5 * DAY)  # every run ended; only the first period is past retention
        before = await audit_rows(config.database)
        code, out = await dee("audit", "archive", "--dry-run")
        assert code == 0, out
        assert "audit_log_20260105  runs started 0..2591999  due:" in out and "would be archived" in out
        assert await live_partitions(config.database) == sorted(await live_partitions(config.database))
        assert "audit_log_20260105" in await live_partitions(config.database)  # a dry run does nothing

        code, out = await dee("audit", "archive")
        assert code == 0, out
        assert "audit_log_20260105  runs started 0..2591999  archived: archived" in out
        assert "audit_log_20260204  runs started 2592000..5183999  kept: runs start in it until tick 5183999, within retention" in out
        assert "audit_log_20260105" not in await live_partitions(config.database)
        first = started[0]
        gone = [r for r in before if r[0] in first]
        assert gone and [r for r in await audit_rows(config.database) if r[0] in first] == []

        # the object: gzip JSON lines of the rows in (run, seq) order, as stored; the manifest says what it holds
        bucket = bucket_of(config)
        keys = await keys_in(config.audit.s3_endpoint_url, bucket)
        assert len(keys) == 2 and all(k.startswith("dee/prod/") and "/audit/audit_log_20260105-" in k for k in keys)
        async with s3_client(config.audit.s3_endpoint_url) as client:
            manifest = json.loads(await (await client.get_object(Bucket=bucket, Key=keys[1]))["Body"].read())
            body = await (await client.get_object(Bucket=bucket, Key=keys[0]))["Body"].read()
        lines = [json.loads(line) for line in gzip.decompress(body).splitlines()]
        assert [tuple(line.values()) for line in lines] == gone
        assert (manifest["format"], manifest["rows"], manifest["runs"], manifest["startFrom"], manifest["startTo"]) == (
            "dee.audit-archive/1", len(gone), 2, 0, PERIOD)
        assert {c["runId"]: (c["firstSeq"], c["lastSeq"]) for c in manifest["chains"]} == {
            run_id: (1, max(r[1] for r in gone if r[0] == run_id)) for run_id in first}

        # plain verify counts the archived runs apart; --archive verifies them from S3 against their heads
        code, out = await dee("audit", "verify")
        assert (code, out.strip().splitlines()[-1]) == (0, "2/4 chains valid, 2 archived (dee audit verify --archive checks them)")
        code, out = await dee("audit", "verify", "--archive")
        assert (code, out.strip()) == (0, "4/4 chains valid"), out

        # restored, the run reads and replays again; the partition stays until --drop-restored
        code, out = await dee("audit", "restore", "audit_log_20260105")
        assert code == 0 and out.strip() == (f"audit_log_20260105: {len(gone)} rows restored from 1 archive (0 already there); "
                                             "kept until `dee audit archive --drop-restored`")  # fmt: skip
        assert await audit_rows(config.database) == before
        assert (await engine.replay(first[0])).identical
        code, out = await dee("audit", "archive")
        assert code == 0 and "audit_log_20260105  runs started 0..2591999  kept: restored" in out
        code, out = await dee("audit", "archive", "--drop-restored")
        assert code == 0 and "audit_log_20260105  runs started 0..2591999  archived:" in out, out
        assert len(await keys_in(config.audit.s3_endpoint_url, bucket)) == 2  # the same content: the same keys


async def archive_in_process(config: EngineConfig, endpoint: str) -> Any:
    """`dee audit archive` through `endpoint` (a proxy in front of the S3 server)."""
    through = msgspec.structs.replace(config, audit=msgspec.structs.replace(config.audit, s3_endpoint_url=endpoint))
    return await run_archive(through)


async def archive_count(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit_archives"))
    finally:
        await conn.close()


async def one_partition_due(config: EngineConfig) -> tuple[str, str, list[tuple[Any, ...]]]:
    """Two runs in the first partition, ended, and the clock past its retention; the S3 endpoint,
    the bucket, and every audit row."""
    async with Engine(config, scheduler=True) as engine:
        await start_runs(engine, months=1)
        await engine.advance_clock(PERIOD + 31 * DAY)
    assert config.audit.s3_endpoint_url is not None
    return config.audit.s3_endpoint_url, bucket_of(config), await audit_rows(config.database)


async def test_a_crash_between_upload_and_drop_loses_nothing_and_the_rerun_archives_the_same_keys(archived: EngineConfig) -> None:
    """`dee audit archive` is killed (SIGKILL) while it reads the object back: the partition and
    every row stay, nothing is recorded as archived; the next pass writes the same keys and drops."""
    config = archived
    endpoint, bucket, before = await one_partition_due(config)
    reading = asyncio.Event()

    async def stall(key: str) -> None:
        reading.set()
        await asyncio.sleep(3600)  # the process is killed meanwhile

    async with s3_proxy(endpoint, stall) as proxy:
        env = {**os.environ, **environment(config), "DEE_AUDIT_S3_ENDPOINT_URL": proxy}
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "dee", "audit", "archive", env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        try:
            await asyncio.wait_for(reading.wait(), 60)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
    uploaded = await keys_in(endpoint, bucket)
    assert len(uploaded) == 2  # the object and its manifest went up, unverified
    assert "audit_log_20260105" in await live_partitions(config.database)
    assert await audit_rows(config.database) == before and await archive_count(config.database) == 0

    report = await run_archive(config)
    assert [p.action for p in report.partitions if p.name == "audit_log_20260105"] == ["archived"]
    assert await keys_in(endpoint, bucket) == uploaded
    assert "audit_log_20260105" not in await live_partitions(config.database)


@pytest.mark.parametrize("fault", ["corrupted", "deleted", "truncated"])
async def test_an_object_spoiled_in_s3_before_it_is_read_back_keeps_the_partition(archived: EngineConfig, fault: str) -> None:
    config = archived
    endpoint, bucket, before = await one_partition_due(config)

    async def spoil(key: str) -> None:
        async with s3_client(endpoint) as client:
            stored = await (await client.get_object(Bucket=bucket, Key=key))["Body"].read()
            if fault == "deleted":
                await client.delete_object(Bucket=bucket, Key=key)
            elif fault == "truncated":
                await client.put_object(Bucket=bucket, Key=key, Body=stored[: len(stored) // 2])
            else:  # the same rows but one, gzipped again: a valid object of other content
                lines = gzip.decompress(stored).splitlines(keepends=True)
                await client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"".join(lines[1:])))

    async with s3_proxy(endpoint, spoil) as proxy:
        report = await archive_in_process(config, proxy)
    [first] = [p for p in report.partitions if p.name == "audit_log_20260105"]
    assert first.action == "failed" and first.detail.endswith("(kept)") and "s3://" in first.detail
    expected = {"deleted": "NoSuchKey", "truncated": "truncated", "corrupted": "read back"}[fault]
    assert expected in first.detail, first.detail
    assert "testing" not in first.detail  # no credential in the report
    assert "audit_log_20260105" in await live_partitions(config.database)
    assert await audit_rows(config.database) == before and await archive_count(config.database) == 0

    report = await run_archive(config)  # S3 behaves again: archived and dropped
    assert [p.action for p in report.partitions if p.name == "audit_log_20260105"] == ["archived"]
    assert await archive_count(config.database) == 1


async def test_a_year_of_audit_is_archived_and_dropped_partition_by_partition_with_nothing_lost(archived: EngineConfig) -> None:
    """Runs start over thirteen 30-day partitions; each month the job archives what retention
    lets go. A run still waiting holds its partition until it ends (plus retention). At the end
    every chain verifies across the archive, and restoring every partition gives back every row."""
    config = archived
    seen: dict[tuple[str, int], tuple[Any, ...]] = {}
    actions: dict[str, list[str]] = {}
    async with Engine(config, scheduler=True) as engine:
        started = await start_runs(engine, months=13)
        long_run = (await engine.execute(short_plan(wait_days=120, plan_id="archive-long"), contact(900), {"product": "DEE"},
                                         start_at=PERIOD + 10 * DAY)).id  # fmt: skip
        # a contact without the attribute the subject needs: the send fails, and a failed run may be retried
        failed_run = (await engine.execute(short_plan(), {"id": "c-failing", "email": "f@acme.test"}, {"product": "DEE"},
                                           start_at=2 * PERIOD + 10 * DAY)).id  # fmt: skip
        for month in range(15):
            await engine.advance_clock(PERIOD)
            if month == 6:
                await engine.cancel_run(failed_run, "given up")
                await engine.run_until_idle()
            seen.update(((r[0], r[1]), r) for r in await audit_rows(config.database))
            report = await run_archive(config)
            assert report.failed == 0
            for p in report.partitions:
                actions.setdefault(p.name, []).append(p.action)
                if p.name == "audit_log_20260204" and month in range(3, 5):
                    assert f"held by runs not ended: 1 waiting ({long_run})" in p.detail, p.detail
                if p.name == "audit_log_20260306" and month in range(3, 6):
                    assert f"held by runs not ended: 1 failed ({failed_run}); a failed run holds until" in p.detail, p.detail
            live = await live_partitions(config.database)
            assert not any(name in live for name, done in actions.items() if "archived" in done or "dropped" in done)
        runs = [run_id for ids in started.values() for run_id in ids] + [long_run, failed_run]
        assert all(seen_run in runs for seen_run, _ in seen)

        # every partition with runs went exactly once, archived; the one the long run held went months after its neighbour
        with_runs = [f"audit_log_{day}" for day in ("20260105", "20260204", "20260306", "20260405", "20260505", "20260604", "20260704",
                                                    "20260803", "20260902", "20261002", "20261101", "20261201", "20261231")]  # fmt: skip
        assert all(actions[name].count("archived") == 1 for name in with_runs), actions
        # held months past the rule's first chance: by the waiting run, and by the failed one until it was cancelled
        first_chance = {name: month + 1 for month, name in enumerate(with_runs)}  # ended by then, plus 30 days of retention
        assert actions["audit_log_20260105"].index("archived") == first_chance["audit_log_20260105"]
        assert actions["audit_log_20260204"].index("archived") == 6  # the long run ended on day 160, then 30 days of retention
        assert actions["audit_log_20260306"].index("archived") == 7  # cancelled on day 210, then 30 days of retention
        assert all(actions[name].index("archived") == first_chance[name] for name in with_runs[3:])
        live = await live_partitions(config.database)
        assert all(name not in live for name in with_runs)
        assert await audit_rows(config.database) == []

        # across the archive, every chain verifies against its run's head
        code, out = await dee_with(config, "audit", "verify", "--archive")
        assert (code, out.strip()) == (0, f"{len(runs)}/{len(runs)} chains valid"), out
        # nothing dropped unarchived: every record names an object that is there, and restoring them gives back every row
        conn = await asyncpg.connect(config.database)
        try:
            records = await conn.fetch("SELECT partition, rows, object_key FROM audit_archives WHERE rows > 0 ORDER BY start_from")
        finally:
            await conn.close()
        assert [r["partition"] for r in records] == with_runs and all(r["object_key"] for r in records)
        assert sum(r["rows"] for r in records) == len(seen)
        bucket = bucket_of(config)
        stored = set(await keys_in(config.audit.s3_endpoint_url, bucket))
        assert {r["object_key"] for r in records} <= stored
        for name in with_runs:
            code, out = await dee_with(config, "audit", "restore", name)
            assert code == 0, out
        assert await audit_rows(config.database) == [seen[key] for key in sorted(seen)]
        assert all(v.valid for v in (await engine.verify_audit_chains(runs)).values())
        assert (await engine.replay(long_run)).identical


async def dee_with(config: EngineConfig, *argv: str) -> tuple[int, str]:
    """The CLI with the configuration in its environment (restored afterwards)."""
    saved = dict(os.environ)
    os.environ.update(environment(config))
    try:
        return await dee(*argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def test_entries_journaled_after_a_restore_are_archived_again_and_chains_verify_across_both_archives(cli_env: EngineConfig) -> None:
    config = cli_env
    async with Engine(config, scheduler=True) as engine:
        started = await start_runs(engine, months=1)
        await engine.advance_clock(PERIOD + 31 * DAY)
        assert (await dee("audit", "archive"))[0] == 0
        run_id = started[0][0]
        code, out = await dee("audit", "restore", "--run", run_id)  # only this run's entries come back
        assert code == 0 and out.startswith("audit_log_20260105: "), out
        assert {r[0] for r in await audit_rows(config.database)} == {run_id}
        await engine.replay(run_id, dry_run=False)  # journals replay.recorded: the run's chain grows past the archive
        await engine.run_until_idle()
        actions = [e.action for e in await engine.audit.get_by_run(run_id)]
        assert actions[-1] == "replay.recorded"

        code, out = await dee("audit", "archive", "--drop-restored")  # the new entry is kept for retention too
        assert code == 0 and "audit_log_20260105  runs started 0..2591999  kept: its last run ended at tick" in out, out
        await engine.advance_clock(31 * DAY)
        code, out = await dee("audit", "archive", "--drop-restored")
        assert code == 0 and "audit_log_20260105  runs started 0..2591999  archived:" in out, out
        conn = await asyncpg.connect(config.database)
        try:
            archives = [tuple(r) for r in await conn.fetch("SELECT partition, runs FROM audit_archives WHERE rows > 0 ORDER BY id")]
        finally:
            await conn.close()
        assert archives == [("audit_log_20260105", 2), ("audit_log_20260105", 1)]
        # one run's chain now spans both objects (the second holds it whole, with the new entry): it verifies
        code, out = await dee("audit", "verify", "--archive", *started[0])
        assert code == 0 and out.strip().splitlines()[-1] == "2/2 chains valid", out
        code, out = await dee("audit", "restore", "audit_log_20260105")
        assert code == 0 and "restored from 2 archives" in out, out
        assert [e.action for e in await engine.audit.get_by_run(run_id)] == actions
        assert all(v.valid for v in (await engine.verify_audit_chains(started[0])).values())


async def test_retention_without_an_archive_is_refused_unless_asked_for(deployment: EngineConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    config = msgspec.structs.replace(deployment, audit=msgspec.structs.replace(deployment.audit, retention_days=30))
    for name, value in environment(config).items():
        monkeypatch.setenv(name, value)
    async with Engine(config, scheduler=True) as engine:
        started = await start_runs(engine, months=1)
        await engine.advance_clock(PERIOD + 31 * DAY)
        code, out = await dee("audit", "archive")
        assert (code, out.strip()) == (2, "dee: 1 partitions are past audit.retention_days but audit.archive_to is not set: "
                                          "set it, or pass --no-archive to drop them without an archive")  # fmt: skip
        assert "audit_log_20260105" in await live_partitions(config.database)
        code, out = await dee("audit", "archive", "--no-archive")
        assert code == 0 and "audit_log_20260105  runs started 0..2591999  dropped: dropped 22 rows without an archive" in out, out
        code, out = await dee("audit", "verify", "--archive")
        assert (code, out.strip()) == (0, "0/2 chains valid, 2 dropped without an archive"), out
        code, out = await dee("audit", "restore", "audit_log_20260105")
        assert (code, out.strip()) == (2, "dee: audit.archive_to is not set: there is no archive to read or write"), out
    assert started


async def test_message_ids_past_the_dedupe_window_are_forgotten(deployment: EngineConfig) -> None:
    config = deployment
    conn = await asyncpg.connect(config.database)
    try:
        await conn.execute("UPDATE dee_meta SET manual_tick = $1", 40 * DAY)
        await conn.executemany("INSERT INTO received (message_id, partition, tick) VALUES ($1, 0, $2)",
                               [("old-1", 0), ("old-2", 9 * DAY), ("old-waiting", DAY), ("recent", 11 * DAY)])  # fmt: skip
        await conn.execute("INSERT INTO inbox (partition, run_id, tick, body, message_id) VALUES (0, 'r', 0, '', 'old-waiting')")
        report = await run_archive(config, dry_run=True)
        assert report.received_pruned == 2
        assert await conn.fetchval("SELECT count(*) FROM received") == 4
        report = await run_archive(config)
        assert report.received_pruned == 2
        kept = [r["message_id"] for r in await conn.fetch("SELECT message_id FROM received ORDER BY message_id")]
        assert kept == ["old-waiting", "recent"]  # dedupe_days 30 at tick 40 days: older ids go, unless still in the inbox
    finally:
        await conn.close()


async def test_a_large_object_goes_up_in_parts_and_reads_back_whole(
    s3_endpoint: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dee.archive import s3
    from dee.config import AuditConfig

    monkeypatch.setattr(s3, "PART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    bucket = await new_bucket(s3_endpoint)
    audit = AuditConfig(archive_to=f"s3://{bucket}/x", s3_endpoint_url=s3_endpoint, s3_access_key_id="testing",
                        s3_secret_access_key="testing", s3_region="us-east-1")  # fmt: skip
    async with s3.open_bucket(audit) as store:
        await store.put_file("x/big", tmp_path / "big")
        assert await store.read("x/big") == data
    async with s3_client(s3_endpoint) as client:
        head = await client.head_object(Bucket=bucket, Key="x/big")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts


async def test_an_archive_altered_in_s3_fails_verification_and_restores_nothing(cli_env: EngineConfig) -> None:
    config = cli_env
    endpoint, bucket, before = await one_partition_due(config)
    assert (await dee("audit", "archive"))[0] == 0
    [key] = [k for k in await keys_in(endpoint, bucket) if k.endswith(".jsonl.gz")]
    async with s3_client(endpoint) as client:
        lines = gzip.decompress(await (await client.get_object(Bucket=bucket, Key=key))["Body"].read()).splitlines(keepends=True)
        edited = lines[2].replace(b'"ts":"', b'"ts":"9')  # the entry's time, which its checksum covers
        assert edited != lines[2]
        await client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"".join([*lines[:2], edited, *lines[3:]])))
    code, out = await dee("audit", "verify", "--archive")
    assert code == 1 and f"archive BROKEN: s3://{bucket}/{key}: " in out and "BROKEN at seq 3: checksum does not match" in out, out
    code, out = await dee("audit", "restore", "audit_log_20260105")
    assert code == 1 and "but the archive recorded" in out and "not restored" in out, out
    assert await audit_rows(config.database) == [] and before
