"""`dee health`: can this deployment run? Plugins, Redis, PostgreSQL, migrations, the config's
fixed constants, and who owns the partitions. Every detail names its service without its
password."""

from __future__ import annotations

import msgspec

from dee.bus import connect as redis_connect
from dee.config import EngineConfig
from dee.errors import DeeError
from dee.plugin.manager import PluginManager
from dee.redact import redact
from dee.stores.postgres import connect as postgres
from dee.stores.postgres.migrate import check_constants, pending_migrations


class Check(msgspec.Struct, frozen=True):
    ok: bool
    detail: str


async def check(config: EngineConfig) -> dict[str, Check]:
    report: dict[str, Check] = {}
    try:
        plugins = PluginManager.load(disabled=config.plugins.disabled)
        report["plugins"] = Check(True, ", ".join(p.name for p in plugins.plugins))
    except DeeError as exc:
        report["plugins"] = Check(False, str(exc))
    report["redis"] = await redis_check(config)
    try:
        conn = await postgres.connect(config.database)
    except DeeError as exc:
        report["postgres"] = Check(False, str(exc))
        return report
    try:
        version = conn.get_server_version()
        report["postgres"] = Check(True, f"{redact(config.database)} (PostgreSQL {version.major}.{version.minor})")
        pending = await pending_migrations(conn)
        report["migrations"] = Check(not pending, "pending: " + ", ".join(pending) if pending else "up to date")
        if not pending:
            meta = await conn.fetchrow("SELECT tick_interval_ms, partitions FROM dee_meta")
            try:
                check_constants(meta["tick_interval_ms"], meta["partitions"], config)
                report["config"] = Check(True, f"{meta['partitions']} partitions, {meta['tick_interval_ms']} ms ticks")
            except DeeError as exc:
                report["config"] = Check(False, str(exc))
            owned = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE lease_until > now()) AS owned, count(*) AS total, "
                "count(DISTINCT owner) FILTER (WHERE lease_until > now()) AS owners FROM partitions"
            )
            ok = owned["owned"] == owned["total"]
            report["partitions"] = Check(ok, f"{owned['owned']}/{owned['total']} owned by {owned['owners']} instance(s)")
    finally:
        await conn.close()
    return report


async def redis_check(config: EngineConfig) -> Check:
    """Redis answers at the configured URL, the kind of server (cluster or not) it names."""
    try:
        client = redis_connect.client(config.redis, max_connections=2)
    except DeeError as exc:  # a cluster URL that cannot work (a database number)
        return Check(False, str(exc))
    try:
        await redis_connect.ping(client, config.redis, config.namespace)
        return Check(True, redact(config.redis))
    except DeeError as exc:
        return Check(False, str(exc))
    finally:
        await client.aclose()
