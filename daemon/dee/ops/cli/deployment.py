"""`dee migrate`, `dee run`, `dee health`: setting up, running and checking a deployment."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from dee.config import EngineConfig
from dee.errors import ConfigError
from dee.ops.cli.output import emit


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    migrate = sub.add_parser("migrate", parents=[common], help="create the database if needed and apply migrations")
    migrate.add_argument("--daemon-role", metavar="ROLE", help="make ROLE (if needed) the daemons' role: every table but "
                         "the audit log, which it may only append to and read; kept up to date by later migrates")  # fmt: skip
    migrate.set_defaults(func=cmd_migrate)
    sub.add_parser("run", parents=[common], help="run the daemon (SIGTERM drains and exits 0)").set_defaults(func=cmd_run)
    sub.add_parser("ingress", parents=[common], help="serve the HTTP ingress: opens, clicks, unsubscribes, webhooks, "
                   "call status callbacks, inbound mail").set_defaults(func=cmd_ingress)  # fmt: skip
    health = sub.add_parser("health", parents=[common], help="check PostgreSQL, Redis, migrations, partitions and plugins")
    health.add_argument("--json", action="store_true")
    health.set_defaults(func=cmd_health)


def cmd_migrate(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.stores.postgres.admin import ensure_database
    from dee.stores.postgres.connect import connect
    from dee.stores.postgres.migrate import migrate

    async def go() -> list[str]:
        await ensure_database(config.database)
        conn = await connect(config.database)
        try:
            return await migrate(conn, config, args.daemon_role)
        finally:
            await conn.close()

    applied = asyncio.run(go())
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0


def cmd_run(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.ops.daemon import run

    if config.database.startswith("memory:"):
        raise ConfigError("the daemon needs a PostgreSQL database (database = postgresql://...)")
    return run(config)


def cmd_ingress(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.ops.daemon import run

    if config.database.startswith("memory:"):
        raise ConfigError("the ingress serves a PostgreSQL deployment (database = postgresql://...)")
    return run(config, scheduler=False, ingress=True)


def cmd_health(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.ops.health import check

    report = asyncio.run(check(config))
    healthy = all(c.ok for c in report.values())
    emit({"healthy": healthy, "checks": report}, args.json,
         lambda: "\n".join(f"{'ok  ' if c.ok else 'FAIL'}  {name:<12} {c.detail}" for name, c in report.items()))  # fmt: skip
    return 0 if healthy else 1
