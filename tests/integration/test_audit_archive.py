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
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from dee import Engine, EngineConfig
from dee.ops.cli import main
from tests.integration.archive_helpers import (
    DAY,
    PERIOD,
    audit_rows,
    environment,
    keys_in,
    live_partitions,
    new_bucket,
    s3_client,
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


async def dee(*argv: str) -> tuple[int, str]:
    """The CLI in a thread (its own event loop), with the environment as set; exit code and output."""
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    out = StringIO()

    def call() -> int:
        with redirect_stdout(out), redirect_stderr(out):
            return main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue()


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
        bucket = config.audit.archive_to.removeprefix("s3://").split("/")[0]  # type: ignore[union-attr]
        keys = await keys_in(config.audit.s3_endpoint_url, bucket)  # type: ignore[arg-type]
        assert len(keys) == 2 and all(k.startswith("dee/prod/") and "/audit/audit_log_20260105-" in k for k in keys)
        async with s3_client(config.audit.s3_endpoint_url) as client:  # type: ignore[arg-type]
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
        assert len(await keys_in(config.audit.s3_endpoint_url, bucket)) == 2  # the same content: the same keys  # type: ignore[arg-type]
