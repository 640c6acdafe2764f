"""Checkpoints in PostgreSQL: the leaf log (`audit_checkpoint_leaves`) and the signed notes
(`audit_checkpoints`), both append-only.

Taking a checkpoint is one transaction under an advisory lock (one checkpoint at a time across
daemons and commands): the runs whose row changed since their last leaf get a new leaf, in run
id order, and the tree over the whole log is signed. Nothing changed: the last note stands
(signed again, and not stored again, if another key signed it).
"""

from __future__ import annotations

import asyncpg
import msgspec

from dee.checkpoint import merkle
from dee.checkpoint.leaves import Leaf, leaf_hashes
from dee.checkpoint.note import Checkpoint, Signer, open_note, sign_note
from dee.errors import CheckpointError

LOCK_KEY = 0x0DEE_0C4B
LEAF_COLUMNS = "run_id, seq, head, status, outcome, current_step"


class Stored(msgspec.Struct, frozen=True):
    size: int
    root: str  # hex
    note: str
    created_at: str


async def origin(conn: asyncpg.Connection) -> str:
    """The checkpoints' origin line, which also names the signing key: unique per deployment."""
    return f"dee.audit/{await conn.fetchval('SELECT deployment_id FROM dee_meta')}"


async def load_leaves(conn: asyncpg.Connection, size: int | None = None) -> list[Leaf]:
    found = await conn.fetch(f"SELECT idx, {LEAF_COLUMNS} FROM audit_checkpoint_leaves "
                             "WHERE $1::bigint IS NULL OR idx < $1 ORDER BY idx", size)  # fmt: skip
    return [Leaf(*list(r.values())[1:]) for r in found]


async def stored_checkpoints(conn: asyncpg.Connection, last_only: bool = False) -> list[Stored]:
    found = await conn.fetch("SELECT size, root, note, created_at FROM audit_checkpoints ORDER BY size DESC "
                             "LIMIT CASE WHEN $1 THEN 1 END", last_only)  # fmt: skip
    return [Stored(r["size"], r["root"], r["note"], r["created_at"].isoformat(timespec="seconds")) for r in reversed(found)]


async def latest(conn: asyncpg.Connection) -> Stored | None:
    """The last checkpoint stored (the periodic loop asks each time: one row, not them all)."""
    found = await stored_checkpoints(conn, last_only=True)
    return found[-1] if found else None


async def take_checkpoint(conn: asyncpg.Connection, signer: Signer, wait: bool = True) -> Stored | None:
    """Append the changed heads and sign the tree; None when `wait` is false and another
    checkpoint is being taken."""
    async with conn.transaction():
        if wait:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        elif not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
            return None
        base = await conn.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM audit_checkpoint_leaves")
        await conn.execute(
            f"INSERT INTO audit_checkpoint_leaves (idx, {LEAF_COLUMNS}) "
            f"SELECT $1 + row_number() OVER (ORDER BY r.run_id) - 1, r.run_id, r.seq, r.head, r.status, r.outcome, r.current_step "
            "FROM runs r LEFT JOIN LATERAL (SELECT seq, head, status, outcome, current_step FROM audit_checkpoint_leaves l "
            "WHERE l.run_id = r.run_id ORDER BY l.idx DESC LIMIT 1) l ON true "
            "WHERE l.seq IS NULL OR (l.seq, l.head, l.status, l.outcome, l.current_step) "
            "IS DISTINCT FROM (r.seq, r.head, r.status, r.outcome, r.current_step)",
            base,
        )  # fmt: skip
        last = await latest(conn)
        leaves = await load_leaves(conn)
        if last is not None and last.size == len(leaves):
            return last if _signed_by(last.note, signer) else _resigned(last, signer)
        tree = merkle.root(leaf_hashes(leaves))
        note = sign_note(Checkpoint(await origin(conn), len(leaves), tree).text(), signer)
        row = await conn.fetchrow("INSERT INTO audit_checkpoints (size, root, note) VALUES ($1, $2, $3) RETURNING created_at",
                                  len(leaves), tree.hex(), note)  # fmt: skip
        return Stored(len(leaves), tree.hex(), note, row["created_at"].isoformat(timespec="seconds"))


def _signed_by(note: str, signer: Signer) -> bool:
    try:
        open_note(note, signer.verifier)
    except CheckpointError:
        return False
    return True


def _resigned(last: Stored, signer: Signer) -> Stored:
    """The last tree signed by another key (after a rotation): the same body under this key,
    not stored again (the stored note already holds this tree)."""
    return Stored(last.size, last.root, sign_note(last.note[: last.note.rfind("\n\n") + 1], signer), last.created_at)
