"""Append-only, really: TRUNCATE of the audit log or of any partition of it is refused to every
role, and the daemon role `dee migrate --daemon-role` sets up may append to and read the audit
log and nothing more, while a whole workload runs under it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest

from dee import Engine, EngineConfig
from dee.stores.postgres.migrate import migrate
from tests.integration.archive_helpers import DAY, start_runs

ROW = ("run-x", 1, "01ENTRY", "plan", None, 0, "2026-01-01T00:00:00.000+00:00", "run.started", None, None, None, "0" * 64, "f" * 64, 0)
INSERT = ("INSERT INTO audit_log (run_id, seq, id, plan_id, step_id, tick, ts, action, input, output, context, "
          "previous_checksum, checksum, start_tick) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")  # fmt: skip


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{user}@{parts.hostname}:{parts.port}", parts.path, parts.query, parts.fragment))


@pytest.fixture
async def daemon_role(deployment: EngineConfig) -> AsyncIterator[str]:
    """A role made by `migrate(..., daemon_role=...)` and allowed to log in (trust auth here;
    a deployment gives it a password), dropped afterwards."""
    role = f"dee_daemon_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(deployment.database)
    try:
        assert await migrate(conn, deployment, role) == []
        await conn.execute(f'ALTER ROLE "{role}" LOGIN')
        yield role
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
        await conn.close()


async def partition_name(conn: asyncpg.Connection) -> str:
    name: str = await conn.fetchval("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                    "WHERE i.inhparent = 'audit_log'::regclass AND c.relname <> 'audit_log_default' LIMIT 1")  # fmt: skip
    return name


async def test_truncate_is_refused_on_the_audit_log_and_on_each_of_its_partitions(deployment: EngineConfig) -> None:
    conn = await asyncpg.connect(deployment.database)  # the owner, a superuser here: only the triggers stand in the way
    try:
        await conn.execute(INSERT, *ROW)
        partition = await partition_name(conn)
        for statement in ("TRUNCATE audit_log", f'TRUNCATE "{partition}"', "TRUNCATE audit_log_default", "TRUNCATE audit_log CASCADE"):
            with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1
        # a partition made later (by dee audit archive) refuses it too
        await conn.execute("UPDATE dee_meta SET manual_tick = $1", 400 * DAY)
        await migrate(conn, deployment)
        newest = await conn.fetchval("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                     "WHERE i.inhparent = 'audit_log'::regclass AND c.relname <> 'audit_log_default' "
                                     "ORDER BY c.relname DESC LIMIT 1")  # fmt: skip
        assert newest == "audit_log_20270331"  # the period of day 400 (day 390) and two ahead: from day 450
        with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
            await conn.execute(f'TRUNCATE "{newest}"')
    finally:
        await conn.close()


async def test_the_daemon_role_may_append_and_read_the_audit_log_and_nothing_more(deployment: EngineConfig, daemon_role: str) -> None:
    owner = await asyncpg.connect(deployment.database)
    daemon = await asyncpg.connect(as_user(deployment.database, daemon_role))
    try:
        partition = await partition_name(owner)
        await daemon.execute(INSERT, *ROW)
        assert await daemon.fetchval("SELECT count(*) FROM audit_log") == 1
        for statement in (
            "UPDATE audit_log SET action = 'run.completed'", "DELETE FROM audit_log", "TRUNCATE audit_log",
            f'TRUNCATE "{partition}"', f'DELETE FROM "{partition}"', f'SELECT * FROM "{partition}"',
            f"INSERT INTO \"{partition}\" SELECT * FROM audit_log", "UPDATE dee_meta SET tick_interval_ms = 1",
            "DELETE FROM audit_archives", "INSERT INTO dee_migrations VALUES (99, 'x')", "TRUNCATE runs",
        ):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await daemon.execute(statement)
        for statement in ("DROP TABLE audit_log", f'DROP TABLE "{partition}"', "ALTER TABLE audit_log DISABLE TRIGGER audit_append_only",
                          f'ALTER TABLE audit_log DETACH PARTITION "{partition}"', "CREATE TABLE mine (x int)"):  # fmt: skip
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.exceptions.InsufficientPrivilegeError)):
                await daemon.execute(statement)
        assert await owner.fetchval("SELECT count(*) FROM audit_log") == 1
        # a table a later migration adds is granted on the next migrate, without naming the role again
        await owner.execute("CREATE TABLE later_feature (x int)")
        await migrate(owner, deployment)
        await daemon.execute("INSERT INTO later_feature VALUES (1)")
    finally:
        await daemon.close()
        await owner.close()


async def test_a_workload_runs_under_the_daemon_role(deployment: EngineConfig, daemon_role: str) -> None:
    config = msgspec.structs.replace(deployment, database=as_user(deployment.database, daemon_role))
    async with Engine(config, scheduler=True) as engine:
        started = await start_runs(engine, months=1)
        await engine.advance_clock(10 * DAY)
        runs = [run_id for ids in started.values() for run_id in ids]
        assert [(await engine.get_run(r)).status for r in runs] == ["completed", "completed"]
        assert all(v.valid for v in (await engine.verify_audit_chains(runs)).values())
        assert (await engine.replay(runs[0])).identical
