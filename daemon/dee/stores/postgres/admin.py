"""Creating and dropping whole databases (for `dee simulate`, `dee bench` and the tests)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from dee.stores.postgres.connect import connect


def with_database(dsn: str, name: str) -> str:
    """The same server and credentials, another database name."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


async def recreate_database(dsn: str) -> None:
    """Drop (if it exists) and create the database `dsn` names, via the `postgres` database."""
    name = database_name(dsn)
    admin = await connect(with_database(dsn, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def drop_database(dsn: str) -> None:
    admin = await connect(with_database(dsn, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database_name(dsn)}" WITH (FORCE)')
    finally:
        await admin.close()


async def ensure_database(dsn: str) -> None:
    """Create the database if it does not exist yet (what `dee migrate` needs on a new server)."""
    name = database_name(dsn)
    admin = await connect(with_database(dsn, "postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
