"""`dee migrate`: numbered SQL files applied once each, in order, under an advisory lock.

Safe to run from several processes at once: the transaction-scoped advisory lock serialises
them, and each sees what the one before it applied. The deployment constants (epoch, tick
length, partition count) are written at the first migrate and checked on every later one.
"""

from __future__ import annotations

import time
from importlib import resources

import asyncpg

from dee.config import EngineConfig
from dee.errors import ConfigError
from dee.stores.postgres.audit_partitions import current_tick, ensure_partitions, fix_partition_days
from dee.stores.postgres.roles import grant_daemon_role, record_daemon_role

LOCK_KEY = 0x0DEE_0001


def migration_files() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("dee.stores.postgres").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection, config: EngineConfig, daemon_role: str | None = None) -> list[str]:
    """Apply pending migrations and fix or check the deployment constants, make the audit log's
    partitions due by now, and grant the daemon role (`daemon_role`, or the one recorded
    before) its privileges; returns the migrations that ran."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS dee_migrations (number integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["number"] for r in await conn.fetch("SELECT number FROM dee_migrations")}
        for number, name, sql in migration_files():
            if number in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO dee_migrations (number, name) VALUES ($1, $2)", number, name)
            applied.append(name)
        await fix_constants(conn, config)
        await fix_partition_days(conn, config)
        await ensure_partitions(conn, await current_tick(conn, config.scheduler.clock))
        if daemon_role is not None:
            await record_daemon_role(conn, daemon_role)
        await grant_daemon_role(conn)
    return applied


async def fix_constants(conn: asyncpg.Connection, config: EngineConfig) -> None:
    scheduler = config.scheduler
    row = await conn.fetchrow("SELECT tick_interval_ms, partitions FROM dee_meta")
    if row is None:
        await conn.execute(
            "INSERT INTO dee_meta (epoch_ms, tick_interval_ms, partitions) VALUES ($1, $2, $3)",
            scheduler.epoch_ms(int(time.time() * 1000)), scheduler.tick_interval_ms, scheduler.partitions,
        )
        await conn.executemany(
            "INSERT INTO partitions (partition) VALUES ($1)", [(p,) for p in range(scheduler.partitions)]
        )
        return
    check_constants(row["tick_interval_ms"], row["partitions"], config)


def check_constants(tick_interval_ms: int, partitions: int, config: EngineConfig) -> None:
    """Refuse a configuration that contradicts the deployment's fixed constants."""
    scheduler = config.scheduler
    problems = []
    if tick_interval_ms != scheduler.tick_interval_ms:
        problems.append(f"tick_interval_ms is {tick_interval_ms} in this deployment, config says {scheduler.tick_interval_ms}")
    if partitions != scheduler.partitions:
        problems.append(f"partitions is {partitions} in this deployment, config says {scheduler.partitions}")
    if problems:
        raise ConfigError("configuration contradicts the deployment (fixed at first migrate): " + "; ".join(problems))


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('dee_migrations') IS NOT NULL")
    done = {r["number"] for r in await conn.fetch("SELECT number FROM dee_migrations")} if exists else set()
    return [name for number, name, _ in migration_files() if number not in done]
