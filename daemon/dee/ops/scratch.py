"""Throwaway deployments: a recreated, migrated database and an emptied Redis namespace.

`dee simulate`, `dee bench` and the tests each start from nothing, so their figures and
outcomes never depend on what an earlier run left behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis

from dee.config import EngineConfig
from dee.stores.postgres.admin import drop_database, recreate_database
from dee.stores.postgres.migrate import migrate


async def clear_namespace(url: str, namespace: str) -> None:
    """Delete every Redis key of a namespace."""
    client = aioredis.from_url(url)
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
    """A fresh deployment for the duration of a block, dropped afterwards even on failure."""
    await create_deployment(config)
    try:
        yield config
    finally:
        await destroy_deployment(config)
