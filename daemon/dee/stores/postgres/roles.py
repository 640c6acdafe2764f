"""The daemon's database role: everything the daemons and clients do, and on the audit log only
INSERT and SELECT.

The role that runs `dee migrate` owns the schema (and runs `dee audit archive`, which drops
partitions); `dee migrate --daemon-role NAME` makes NAME (NOLOGIN, unless it exists already:
give it LOGIN and a password, or grant it to the login roles of the daemons), records it in
`dee_meta`, and every later migrate grants it the same again, so tables added by later
migrations are covered. Privileges are set exactly (revoked, then granted), never added to.
"""

from __future__ import annotations

import asyncpg

from dee.errors import ConfigError

# tables the daemons read but never write; the audit log's partitions are reached only through it
READ_ONLY = ("dee_migrations", "audit_archives", "audit_restored")
APPEND_ONLY = ("audit_log", "audit_checkpoint_leaves", "audit_checkpoints")


def quoted(role: str) -> str:
    if not role or '"' in role or "\x00" in role:
        raise ConfigError(f"--daemon-role: {role!r} is not a role name")
    return f'"{role}"'


async def record_daemon_role(conn: asyncpg.Connection, role: str) -> None:
    """Make the role if it does not exist, and keep its name for later migrates."""
    name = quoted(role)
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        try:
            await conn.execute(f"CREATE ROLE {name} NOLOGIN")
        except asyncpg.InsufficientPrivilegeError:
            raise ConfigError(f"role {role} does not exist and this role may not create it (CREATEROLE): create it first") from None
    await conn.execute("UPDATE dee_meta SET daemon_role = $1", role)


async def grant_daemon_role(conn: asyncpg.Connection) -> str | None:
    """Set the recorded daemon role's privileges on every table of the schema; returns its name."""
    role = await conn.fetchval("SELECT daemon_role FROM dee_meta")
    if role is None:
        return None
    name = quoted(role)
    schema = await conn.fetchval("SELECT current_schema()")
    await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {name}')
    tables = await conn.fetch(
        "SELECT c.relname, c.relispartition FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        "AND c.relkind IN ('r', 'p')"
    )
    for t in tables:
        table = f'"{t["relname"]}"'
        await conn.execute(f"REVOKE ALL ON {table} FROM {name}")
        if t["relispartition"]:
            continue  # audit partitions: only through audit_log
        if t["relname"] in APPEND_ONLY:
            await conn.execute(f"GRANT SELECT, INSERT ON {table} TO {name}")
        elif t["relname"] in READ_ONLY:
            await conn.execute(f"GRANT SELECT ON {table} TO {name}")
        elif t["relname"] == "dee_meta":  # read the constants and keys; move the manual clock
            await conn.execute(f"GRANT SELECT, UPDATE (manual_tick) ON {table} TO {name}")
        else:
            await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {name}")
    await conn.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {name}')
    return str(role)
