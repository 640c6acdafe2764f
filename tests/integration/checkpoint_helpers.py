"""What the checkpoint tests share: a deployment with a signing key and finished runs, the CLI
in a thread, and tampering as the database superuser with the append-only triggers bypassed
(`session_replication_role = replica`), re-chaining what a careful insider would re-chain."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dee import Duration, Engine, EngineConfig, create_plan, steps, transitions
from dee.config import AuditConfig
from dee.kernel.audit import AuditRow, row_checksum
from dee.privacy.keys import MasterKey
from dee.privacy.seal import ContactKey, key_id, open_value, seal_value
from dee.stores.postgres.rows import AUDIT_COLUMNS, decode_state, encode_state
from tests.integration.archive_helpers import DAY, contact, dee

PLAN = create_plan(id="tamper", name="Tamper test", steps=[
    steps.send_email(id="hello", template_id="tmpl_welcome", subject="Hi {{ contact.attributes.first_name }}"),
    steps.wait(id="pause", duration=Duration(days=2)),
    steps.end(id="done", outcome="no_response"),
], transitions=transitions.linear())  # fmt: skip


class Signed(NamedTuple):
    config: EngineConfig
    runs: list[str]
    checkpoint: Path  # taken after the runs ended, before any tampering
    folder: Path


def with_key(config: EngineConfig, key_file: Path, **audit: Any) -> EngineConfig:
    return msgspec.structs.replace(config, audit=AuditConfig(signing_key_file=str(key_file), **audit))


def new_key(path: Path) -> Path:
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def cli_environment(config: EngineConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"DATABASE_URL": config.database, "REDIS_URL": config.redis, "DEE_NAMESPACE": config.namespace,
           "DEE_SCHEDULER_PARTITIONS": str(config.scheduler.partitions), "DEE_SCHEDULER_CLOCK": config.scheduler.clock,
           "DEE_AUDIT_SIGNING_KEY_FILE": config.audit.signing_key_file or ""}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def verify(checkpoint: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out = await dee("audit", "verify", "--checkpoint", str(checkpoint), "--json", *extra)
    return code, json.loads(out)


def checks(report: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(f["check"], f["run_id"]) for f in report["findings"]}


async def start(engine: Engine, first: int, count: int) -> list[str]:
    ids = [(await engine.execute(PLAN, contact(n), {"product": "DEE"})).id for n in range(first, first + count)]
    await engine.run_until_idle()
    await engine.advance_clock(3 * DAY)
    return ids


@asynccontextmanager
async def superuser(config: EngineConfig) -> AsyncIterator[asyncpg.Connection]:
    """The owner (a superuser here) with triggers off: what an insider with the database can do."""
    conn = await asyncpg.connect(config.database)
    try:
        await conn.execute("SET session_replication_role = replica")
        yield conn
    finally:
        await conn.close()


async def rows_of(conn: asyncpg.Connection, run_id: str) -> list[AuditRow]:
    found = await conn.fetch(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log WHERE run_id = $1 ORDER BY seq", run_id)
    return [AuditRow(*r.values()) for r in found]


async def rechain(conn: asyncpg.Connection, run_id: str, change: Callable[[AuditRow], AuditRow]) -> None:
    """Rewrite every entry through `change`, recompute every checksum, and move the run's head:
    a chain that verifies on its own."""
    previous = "0" * 64
    for row in await rows_of(conn, run_id):
        changed = change(row)._replace(previous_checksum=previous)
        changed = changed._replace(checksum=row_checksum(changed))
        await conn.execute("UPDATE audit_log SET ts = $3, output = $4, previous_checksum = $5, checksum = $6 "
                           "WHERE run_id = $1 AND seq = $2", run_id, row.seq, changed.timestamp, changed.output,
                           changed.previous_checksum, changed.checksum)  # fmt: skip
        previous = changed.checksum
    state = msgspec.structs.replace(decode_state(await conn.fetchval("SELECT state FROM runs WHERE run_id = $1", run_id)),
                                    audit_head=previous)  # fmt: skip
    await conn.execute("UPDATE runs SET head = $2, state = $3 WHERE run_id = $1", run_id, previous, encode_state(state))


async def edit_row(conn: asyncpg.Connection, run_id: str, **changes: Any) -> None:
    """Change a run's row, its columns and the state the API shows alike."""
    state = decode_state(await conn.fetchval("SELECT state FROM runs WHERE run_id = $1", run_id))
    state = msgspec.structs.replace(state, **changes)
    sets = ", ".join(f"{column} = ${i + 3}" for i, column in enumerate(changes))
    await conn.execute(f"UPDATE runs SET state = $2, {sets} WHERE run_id = $1", run_id, encode_state(state), *changes.values())


async def insider_key(conn: asyncpg.Connection, run_id: str) -> ContactKey:
    """The run's contact key as an insider with the database unwraps it: the master key is kept
    in the database when no master key file is configured (as in these tests)."""
    master = MasterKey(await conn.fetchval("SELECT privacy_key FROM dee_meta"))
    contact_id, wrapped = await conn.fetchrow(
        "SELECT k.contact_id, k.wrapped FROM runs r JOIN contact_keys k USING (contact_id) WHERE r.run_id = $1", run_id)
    return ContactKey(AESGCM(master.unwrap(contact_id, wrapped)), key_id(wrapped))


def resealed(key: ContactKey, row: AuditRow, change: Callable[[dict[str, Any]], dict[str, Any]]) -> AuditRow:
    """The row with its sealed output opened, changed and sealed again: a careful insider's edit."""
    assert row.output is not None
    opened = open_value(key, row.run_id, row.seq, "output", json.loads(row.output))
    return row._replace(output=json.dumps(seal_value(key, row.run_id, row.seq, "output", change(opened))))
