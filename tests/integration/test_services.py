"""The real services the integration tests run against answer a round trip.

PostgreSQL and Redis are started by `make services` (scripts/ensure-services.sh). These tests
fail, never skip, when a service is down: a green run must mean the integration suite really
talked to both.
"""

import os
import uuid

import asyncpg
import redis.asyncio as redis

PG_DSN = os.environ.get("DEE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def test_postgres_round_trip() -> None:
    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        assert await conn.fetchval("SELECT 41 + 1") == 42
        version = int(await conn.fetchval("SHOW server_version_num"))
        assert version >= 130000, f"PostgreSQL 13 or newer is required, got {version}"
    finally:
        await conn.close()


async def test_redis_round_trip() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    key = f"dee:test:services:{uuid.uuid4()}"
    value = uuid.uuid4().hex
    try:
        # the expiry only matters if the test dies between SET and DEL
        assert await client.set(key, value, ex=60)
        assert await client.get(key) == value.encode()
        assert await client.delete(key) == 1
        assert await client.exists(key) == 0
    finally:
        await client.aclose()
