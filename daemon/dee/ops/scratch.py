"""Throwaway deployments: a recreated, migrated database and an emptied Redis namespace.

`dee simulate`, `dee bench` and the tests each start from nothing, so their figures and
outcomes never depend on what an earlier run left behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from dee.bus import connect as redis_connect
from dee.config import EngineConfig
from dee.errors import ScratchInUseError
from dee.stores.postgres.admin import database_name, drop_database, recreate_database, with_database
from dee.stores.postgres.connect import connect
from dee.stores.postgres.migrate import migrate


async def clear_namespace(url: str, namespace: str) -> None:
    """Delete every Redis key of a namespace (on a cluster: SCAN asks every master, and the
    DEL of a batch is split by slot)."""
    client = redis_connect.client(url, max_connections=4)
    try:
        batch = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(batch), 1000):
            await client.delete(*batch[start : start + 1000])
    finally:
        await client.aclose()


async def create_deployment(config: EngineConfig) -> None:
    """(Re)create `config.database`, migrate it, and empty `config.namespace` in Redis."""
    await recreate_database(config.database)
    conn = await asyncpg.connect(config.database)
    try:
        await migrate(conn, config)
    finally:
        await conn.close()
    await clear_namespace(config.redis, config.namespace)


async def destroy_deployment(config: EngineConfig) -> None:
    await drop_database(config.database)
    await clear_namespace(config.redis, config.namespace)


@asynccontextmanager
async def scratch_deployment(config: EngineConfig) -> AsyncIterator[EngineConfig]:
    """A fresh deployment for the duration of a block, dropped afterwards even on failure.

    The block holds a session advisory lock named after the database on the server's `postgres`
    database: a second block for the same database (two `dee bench` on one server) refuses with
    `ScratchInUseError` instead of dropping the first one's database in the middle of its run."""
    name = database_name(config.database)
    admin = await connect(with_database(config.database, "postgres"))
    try:
        if not await admin.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(name)):
            raise ScratchInUseError(name)
        await create_deployment(config)
        try:
            yield config
        finally:
            await destroy_deployment(config)
    finally:
        await admin.close()  # ends the session, and with it the lock


def _lock_key(database: str) -> int:
    """The advisory lock of a scratch database: 64 bits of a digest of its name."""
    digest = hashlib.blake2b(f"dee scratch {database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
