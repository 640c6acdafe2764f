"""`dee health`: can this deployment run? Postgres, Redis, migrations, partitions, plugins."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from dee.config import EngineConfig
from dee.errors import DeeError
from dee.plugin.manager import PluginManager
from dee.stores.postgres.migrate import check_constants, pending_migrations

Check = tuple[bool, str]


async def check(config: EngineConfig) -> dict[str, Check]:
    report: dict[str, Check] = {}
    try:
        plugins = PluginManager.load(disabled=config.plugins.disabled)
        report["plugins"] = (True, ", ".join(p.name for p in plugins.plugins))
    except DeeError as exc:
        report["plugins"] = (False, str(exc))
    try:
        client = aioredis.from_url(config.redis)
        await client.ping()
        report["redis"] = (True, config.redis)
        await client.aclose()
    except Exception as exc:  # any failure to reach Redis is the finding
        report["redis"] = (False, f"{type(exc).__name__}: {exc}")
    try:
        conn = await asyncpg.connect(config.database, timeout=5)
    except Exception as exc:
        report["postgres"] = (False, f"{type(exc).__name__}: {exc}")
        return report
    try:
        report["postgres"] = (True, str(conn.get_server_version()))
        pending = await pending_migrations(conn)
        report["migrations"] = (not pending, "pending: " + ", ".join(pending) if pending else "up to date")
        if not pending:
            meta = await conn.fetchrow("SELECT tick_interval_ms, partitions FROM dee_meta")
            try:
                check_constants(meta["tick_interval_ms"], meta["partitions"], config)
                report["config"] = (True, f"{meta['partitions']} partitions, {meta['tick_interval_ms']} ms ticks")
            except DeeError as exc:
                report["config"] = (False, str(exc))
            owned = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE lease_until > now()) AS owned, count(*) AS total, "
                "count(DISTINCT owner) FILTER (WHERE lease_until > now()) AS owners FROM partitions"
            )
            ok = owned["owned"] == owned["total"]
            report["partitions"] = (ok, f"{owned['owned']}/{owned['total']} owned by {owned['owners']} instance(s)")
    finally:
        await conn.close()
    return report
