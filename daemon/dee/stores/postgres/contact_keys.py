"""`contact_keys` and the rest of what erasing a contact changes in PostgreSQL (`dee.privacy`).

A key row is written by the partition that owns the contact (in its tick transaction, under its
fencing epoch), so two writers never race for one contact's key except across a lease change;
`ON CONFLICT` settles that one. Erasure turns the row into a tombstone (no key, the tick and the
reason code) and, in the same transaction, drops or scrubs the contact's personal data in the
other tables: queued inputs of its runs, channel actions in the outbox, its phone numbers,
the evidence of its consents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from dee.shell.store import KeyStatus


async def contact_keys(conn: asyncpg.Connection, contact_ids: Sequence[str]) -> dict[str, bytes]:
    found = await conn.fetch(
        "SELECT contact_id, wrapped FROM contact_keys WHERE contact_id = ANY($1::text[]) AND wrapped IS NOT NULL",
        list(contact_ids),
    )  # fmt: skip
    return {r["contact_id"]: bytes(r["wrapped"]) for r in found}


async def add_contact_keys(conn: asyncpg.Connection, partition: int, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
    """Insert these keys where a contact has none (a tombstone gets the new key: a contact
    enrolled again after its erasure is a new contact); the keys stored afterwards."""
    ids = sorted(wrapped)
    found = await conn.fetch(
        """
        INSERT INTO contact_keys (contact_id, partition, wrapped)
        SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[])
        ON CONFLICT (contact_id) DO UPDATE SET wrapped = EXCLUDED.wrapped, erased_tick = NULL, reason = NULL
            WHERE contact_keys.wrapped IS NULL
        RETURNING contact_id, wrapped
        """,
        ids, [partition] * len(ids), [wrapped[c] for c in ids],
    )  # fmt: skip
    stored = {r["contact_id"]: bytes(r["wrapped"]) for r in found}
    lost = [c for c in ids if c not in stored]  # another writer's key stands
    return stored | (await contact_keys(conn, lost) if lost else {})


async def run_keys(conn: asyncpg.Connection, where: str, *args: object) -> dict[str, tuple[str, bytes | None]]:
    """The contact and its wrapped key (None: erased, or never made) of each run `where` picks."""
    found = await conn.fetch(
        "SELECT r.run_id, r.contact_id, k.wrapped FROM runs r LEFT JOIN contact_keys k ON k.contact_id = r.contact_id "
        f"WHERE {where}", *args,
    )  # fmt: skip
    return {r["run_id"]: (r["contact_id"], None if r["wrapped"] is None else bytes(r["wrapped"])) for r in found}


async def key_status(conn: asyncpg.Connection, contact_id: str) -> KeyStatus:
    row = await conn.fetchrow("SELECT wrapped IS NOT NULL AS live FROM contact_keys WHERE contact_id = $1", contact_id)
    return "none" if row is None else "live" if row["live"] else "erased"


async def forget_contact(
    conn: asyncpg.Connection, partition: int, contact_id: str, run_ids: Sequence[str], tick: int, reason: str
) -> None:
    """Destroy the contact's key (a tombstone stays) and the personal data outside its runs'
    states and audit entries (those are the caller's: scrubbed, and sealed)."""
    await conn.execute(
        """
        INSERT INTO contact_keys (contact_id, partition, wrapped, erased_tick, reason) VALUES ($1, $2, NULL, $3, $4)
        ON CONFLICT (contact_id) DO UPDATE SET wrapped = NULL, erased_tick = EXCLUDED.erased_tick, reason = EXCLUDED.reason
        """,
        contact_id, partition, tick, reason,
    )  # fmt: skip
    await conn.execute("DELETE FROM inbox WHERE partition = $1 AND run_id = ANY($2::text[])", partition, list(run_ids))
    await conn.execute("DELETE FROM contact_phones WHERE contact_id = $1", contact_id)
    # channel actions not yet published, or published and not yet deleted: a rendered message each
    await conn.execute(
        "DELETE FROM outbox WHERE partition = $1 AND convert_from(body, 'UTF8')::jsonb ->> 'contactId' = $2", partition, contact_id
    )
    await conn.execute("UPDATE consents SET evidence = '{}' WHERE contact_id = $1 AND evidence <> '{}'", contact_id)
