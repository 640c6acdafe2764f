"""`dee.stores.postgres.migrate.migrate` on the real PostgreSQL (issue 3, DESIGN section 5): numbered SQL
files applied once under an advisory lock, safe from several connections at once; deployment
constants fixed at the first migrate and a contradicting config refused; the audit log is
append-only in the database itself."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dee import ConfigError, Engine, EngineConfig
from dee.stores.postgres.admin import drop_database, recreate_database
from dee.stores.postgres.migrate import migrate, migration_files, pending_migrations
from tests.integration.conftest import deployment_config, replace_scheduler

EXPECTED = ["0001_init.sql", "0002_run_indexes.sql", "0003_audit_tick_brin.sql", "0004_runs_inline_state.sql", "0005_bus_identity.sql",
            "0006_contact_sends.sql", "0007_suppressed_numbers.sql", "0008_audit_partitions.sql",
            "0009_audit_checkpoints.sql", "0010_contact_keys.sql"]  # fmt: skip
TABLES = {
    "dee_meta", "dee_migrations", "plans", "partitions", "instances", "contacts", "suppressions", "consents",
    "runs", "received", "inbox", "outbox", "audit_log", "contact_sends", "suppressed_numbers", "contact_phones",
    "audit_archives", "audit_restored", "audit_checkpoint_leaves", "audit_checkpoints", "contact_keys",
    # the audit log's partitions: the default one, and 30 days of run starts each from the manual epoch on
    "audit_log_default", "audit_log_20260105", "audit_log_20260204", "audit_log_20260306",
}  # fmt: skip


@pytest.fixture
async def fresh() -> AsyncIterator[EngineConfig]:
    """A config whose database exists but was never migrated."""
    config = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}")
    await recreate_database(config.database)
    yield config
    await drop_database(config.database)


async def state(dsn: str) -> dict[str, object]:
    """What migrating leaves behind: applied files, constants, partition rows, tables."""
    conn = await asyncpg.connect(dsn)
    try:
        meta = await conn.fetch("SELECT tick_interval_ms, partitions, manual_tick FROM dee_meta")
        return {
            "migrations": [tuple(r) for r in await conn.fetch("SELECT number, name FROM dee_migrations ORDER BY number")],
            "meta": [tuple(r) for r in meta],
            "partitions": [r["partition"] for r in await conn.fetch("SELECT partition FROM partitions ORDER BY partition")],
            "tables": {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")},
        }
    finally:
        await conn.close()


def test_the_shipped_migrations_are_numbered_from_one_without_gaps() -> None:
    files = migration_files()
    assert [n for n, _, _ in files] == list(range(1, len(files) + 1))
    assert files[0][1] == "0001_init.sql"


async def test_a_fresh_database_gets_every_migration_once(fresh: EngineConfig) -> None:
    conn = await asyncpg.connect(fresh.database)
    try:
        assert await pending_migrations(conn) == EXPECTED
        assert await migrate(conn, fresh) == EXPECTED
        assert await pending_migrations(conn) == []
        first = await state(fresh.database)
        assert first == {
            "migrations": [(int(name[:4]), name) for name in EXPECTED],
            "meta": [(1000, 4, 0)],
            "partitions": [0, 1, 2, 3],
            "tables": TABLES,
        }
        assert await migrate(conn, fresh) == []
        assert await migrate(conn, fresh) == []
    finally:
        await conn.close()
    assert await state(fresh.database) == first


async def test_five_concurrent_migrations_apply_once_and_all_succeed(fresh: EngineConfig) -> None:
    conns = [await asyncpg.connect(fresh.database) for _ in range(5)]
    try:
        results = await asyncio.gather(*(migrate(c, fresh) for c in conns), return_exceptions=True)
    finally:
        for conn in conns:
            await conn.close()
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sorted(results, key=len) == [[], [], [], [], EXPECTED]
    assert await state(fresh.database) == {
        "migrations": [(int(name[:4]), name) for name in EXPECTED],
        "meta": [(1000, 4, 0)],
        "partitions": [0, 1, 2, 3],
        "tables": TABLES,
    }


def named(message: str, *words: str) -> bool:
    return all(re.search(rf"(?<![\w.]){re.escape(w)}(?![\w.])", message) for w in words)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"partitions": 16}, ("partitions", "4", "16")),
        ({"tick_interval_ms": 250}, ("tick_interval_ms", "1000", "250")),
        ({"partitions": 8, "tick_interval_ms": 500}, ("partitions", "4", "8", "tick_interval_ms", "1000", "500")),
    ],
)
async def test_a_config_contradicting_the_deployment_is_refused_by_migrate(
    deployment: EngineConfig, changes: dict[str, int], words: tuple[str, ...]
) -> None:
    before = await state(deployment.database)
    other = replace_scheduler(deployment, **changes)
    conn = await asyncpg.connect(deployment.database)
    try:
        with pytest.raises(ConfigError) as caught:
            await migrate(conn, other)
        assert await migrate(conn, deployment) == []  # the connection is usable, the original config still fits
    finally:
        await conn.close()
    assert named(str(caught.value), *words), str(caught.value)
    assert await state(deployment.database) == before


@pytest.mark.parametrize("scheduler", [True, False])
async def test_a_config_contradicting_the_deployment_is_refused_by_the_engine(deployment: EngineConfig, scheduler: bool) -> None:
    for changes, words in (({"partitions": 16}, ("4", "16")), ({"tick_interval_ms": 250}, ("1000", "250"))):
        engine = Engine(replace_scheduler(deployment, **changes), scheduler=scheduler)
        with pytest.raises(ConfigError) as caught:
            async with engine:
                raise AssertionError("the engine started on a deployment its config contradicts")
        assert named(str(caught.value), *words), str(caught.value)
        await engine._backend.stop()  # close what start() opened before it refused
    async with Engine(deployment, scheduler=scheduler) as engine:  # the right config still starts
        assert (await engine.list_runs()).total == 0


async def test_an_unmigrated_database_is_refused_by_the_engine(fresh: EngineConfig) -> None:
    engine = Engine(fresh, scheduler=False)
    with pytest.raises(ConfigError) as caught:
        async with engine:
            pass
    assert "0001_init.sql" in str(caught.value)
    await engine._backend.stop()


async def test_the_audit_log_refuses_update_and_delete(deployment: EngineConfig) -> None:
    conn = await asyncpg.connect(deployment.database)
    try:
        row = ("run-1", 1, "01ENTRY", "plan", None, 0, "2026-01-01T00:00:00.000+00:00", "run.started",
               None, '{"status":"pending"}', None, "0" * 64, "f" * 64)  # fmt: skip
        await conn.execute(
            "INSERT INTO audit_log (run_id, seq, id, plan_id, step_id, tick, ts, action, input, output, context, "
            "previous_checksum, checksum, start_tick) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0)", *row,
        )  # fmt: skip
        for statement in (
            "UPDATE audit_log SET action = 'run.completed' WHERE run_id = 'run-1'",
            "UPDATE audit_log SET checksum = repeat('0', 64)",
            "DELETE FROM audit_log WHERE run_id = 'run-1'",
            "DELETE FROM audit_log",
        ):
            with pytest.raises(asyncpg.RaiseError) as caught:
                await conn.execute(statement)
            assert "audit_log is append-only" in str(caught.value), statement
        stored = await conn.fetch("SELECT run_id, seq, action, checksum FROM audit_log")
        assert [tuple(r) for r in stored] == [("run-1", 1, "run.started", "f" * 64)]
        # appending is what it is for
        await conn.execute(
            "INSERT INTO audit_log (run_id, seq, id, plan_id, tick, ts, action, previous_checksum, checksum, start_tick) "
            "VALUES ('run-1', 2, '01ENTRY2', 'plan', 1, 'x', 'run.completed', $1, $2, 0)", "f" * 64, "e" * 64,
        )  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2
    finally:
        await conn.close()


async def test_an_audit_log_with_rows_is_partitioned_by_its_runs_starts(fresh: EngineConfig) -> None:
    """A deployment at migration 0006, with audit rows, migrated to the partitioned log: every
    row moved, with its run's start tick, into its period's partition, in one migrate."""
    from dee.stores.postgres.migrate import fix_constants

    conn = await asyncpg.connect(fresh.database)
    try:
        async with conn.transaction():  # what a migrate of the release before did
            await conn.execute("CREATE TABLE dee_migrations (number integer PRIMARY KEY, name text NOT NULL, "
                               "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
            for number, name, sql in migration_files():
                if number <= 6:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO dee_migrations (number, name) VALUES ($1, $2)", number, name)
            await fix_constants(conn, fresh)
        day = 86_400
        for run_id, start in (("run-a", 5 * day), ("run-b", 40 * day)):
            await conn.execute(
                "INSERT INTO runs (run_id, partition, plan_id, plan_version, contact_id, status, start_tick, current_tick, seq, head, "
                "state) VALUES ($1, 0, 'p', 1, $1, 'completed', $2, $2, 2, 'h', '')", run_id, start)  # fmt: skip
        rows = [(run_id, seq, f"{run_id}-{seq}", "p", None, tick, "t", "step.entered", None, None, None, "0" * 64, "f" * 64)
                for run_id, ticks in (("run-a", (5 * day, 6 * day)), ("run-b", (39 * day, 41 * day)), ("orphan", (70 * day,)))
                for seq, tick in enumerate(ticks, start=1)]  # fmt: skip
        await conn.copy_records_to_table("audit_log", records=rows, columns=[
            "run_id", "seq", "id", "plan_id", "step_id", "tick", "ts", "action", "input", "output", "context",
            "previous_checksum", "checksum"])  # fmt: skip

        assert "0008_audit_partitions.sql" in await migrate(conn, fresh)
        placed = [tuple(r) for r in await conn.fetch(
            "SELECT tableoid::regclass::text, run_id, seq, start_tick, tick FROM audit_log ORDER BY run_id, seq")]  # fmt: skip
        assert placed == [
            ("audit_log_20260306", "orphan", 1, 70 * day, 70 * day),  # its run is missing: its first tick stands for its start
            ("audit_log_20260105", "run-a", 1, 5 * day, 5 * day), ("audit_log_20260105", "run-a", 2, 5 * day, 6 * day),
            ("audit_log_20260204", "run-b", 1, 40 * day, 39 * day), ("audit_log_20260204", "run-b", 2, 40 * day, 41 * day),
        ]
        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'audit_log'") == "p"
        assert await conn.fetchval("SELECT count(*) FROM audit_log_default") == 0
        assert await conn.fetchval("SELECT to_regclass('audit_log_unpartitioned')") is None
        brin = await conn.fetch("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                "JOIN pg_am a ON a.oid = c.relam JOIN pg_class t ON t.oid = i.indrelid "
                                "WHERE a.amname = 'brin' AND t.relname LIKE 'audit_log%'")  # fmt: skip
        assert "audit_tick" in {r["relname"] for r in brin} and len(brin) >= 5  # the parent's, and one per partition
        for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log_20260105"):
            with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
                await conn.execute(statement)
    finally:
        await conn.close()
