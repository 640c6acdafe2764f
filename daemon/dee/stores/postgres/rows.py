"""Run, inbox, outbox and audit rows: the batched reads and writes of one tick transaction.

Writes are batched per tick, never per entry: audit rows go in with COPY, run updates with one
`UPDATE ... FROM unnest(...)`, inbox deletions and outbox inserts with one statement each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from dee.kernel.audit import AuditEntry, AuditRow, entry_of
from dee.kernel.inputs import AnyInput
from dee.kernel.state import RunState
from dee.shell.store import OutboxItem

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(RunState)
_input_decoder = msgspec.msgpack.Decoder(AnyInput)

AUDIT_COLUMNS = (
    "run_id", "seq", "id", "plan_id", "step_id", "tick", "ts", "action", "input", "output", "context",
    "previous_checksum", "checksum",
)  # fmt: skip
# what is written: a row also carries its run's start tick, the audit log's partition key
AUDIT_COPY_COLUMNS = (*AUDIT_COLUMNS, "start_tick")
RUN_COLUMNS = (
    "run_id", "partition", "plan_id", "plan_version", "contact_id", "status", "current_step", "wake_tick",
    "awaiting", "start_tick", "current_tick", "steps_completed", "outcome", "seq", "head", "idempotency_key",
    "state",
)  # fmt: skip
TERMINAL_SQL = "('completed', 'cancelled')"


def encode_state(state: RunState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(raw: bytes) -> RunState:
    return _state_decoder.decode(raw)


def encode_input(value: AnyInput) -> bytes:
    return _state_encoder.encode(value)


def decode_input(raw: bytes) -> AnyInput:
    return _input_decoder.decode(raw)


def awaiting(state: RunState) -> bool:
    """True while a dispatched channel action has not answered (and no timer is set to send it
    again: a retry's backoff, or a send a policy gate deferred or paused)."""
    return state.dispatch is not None and state.timer not in ("retry", "policy")


def run_record(state: RunState, partition: int, idempotency_key: str | None = None) -> tuple[Any, ...]:
    return (
        state.run_id, partition, state.plan_id, state.plan_version, state.contact.id, state.status,
        state.current_step, state.wake_tick, awaiting(state), state.start_tick, state.current_tick,
        state.steps_completed, state.outcome, state.seq, state.audit_head, idempotency_key, encode_state(state),
    )  # fmt: skip


async def insert_new_runs(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]], audit: Sequence[AuditRow]) -> set[str]:
    """COPY new runs and their first audit entries; a run that lost a race with a concurrent
    enrolment of the same contact and plan (or idempotency key) is dropped with its entries.
    Returns the ids of the runs inserted."""
    if not records:
        return set()
    starts = {record[0]: record[RUN_COLUMNS.index("start_tick")] for record in records}
    try:
        async with conn.transaction():  # a savepoint: the common case is one plain COPY
            await conn.copy_records_to_table("runs", records=records, columns=RUN_COLUMNS)
            await copy_audit(conn, audit, starts)
            return {record[0] for record in records}
    except asyncpg.UniqueViolationError:
        pass
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS new_runs (LIKE runs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    await conn.copy_records_to_table("new_runs", records=records, columns=RUN_COLUMNS)
    columns = ", ".join(RUN_COLUMNS)
    inserted = {
        r["run_id"]
        for r in await conn.fetch(f"INSERT INTO runs ({columns}) SELECT {columns} FROM new_runs ON CONFLICT DO NOTHING RETURNING run_id")
    }
    await conn.execute("DELETE FROM new_runs")
    await copy_audit(conn, [e for e in audit if e.run_id in inserted], starts)
    return inserted


async def update_runs(conn: asyncpg.Connection, states: Sequence[RunState]) -> None:
    if not states:
        return
    await conn.execute(
        """
        UPDATE runs SET status = u.status, current_step = u.current_step, wake_tick = u.wake_tick,
               awaiting = u.awaiting, current_tick = u.current_tick, steps_completed = u.steps_completed,
               outcome = u.outcome, seq = u.seq, head = u.head, state = u.state,
               completed_at = CASE WHEN u.status IN ('completed', 'cancelled') THEN coalesce(runs.completed_at, now())
                                   ELSE NULL END
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bool[], $6::bigint[], $7::int[],
                    $8::text[], $9::int[], $10::text[], $11::bytea[])
             AS u(run_id, status, current_step, wake_tick, awaiting, current_tick, steps_completed,
                  outcome, seq, head, state)
        WHERE runs.run_id = u.run_id
        """,
        [s.run_id for s in states], [s.status for s in states], [s.current_step for s in states],
        [s.wake_tick for s in states], [awaiting(s) for s in states], [s.current_tick for s in states],
        [s.steps_completed for s in states], [s.outcome for s in states], [s.seq for s in states],
        [s.audit_head for s in states], [encode_state(s) for s in states],
    )  # fmt: skip


async def copy_audit(conn: asyncpg.Connection, rows: Sequence[AuditRow], starts: Mapping[str, int]) -> int:
    """COPY sealed rows, each with its run's start tick from `starts` (by run id)."""
    if rows:
        records = [(*row, starts[row.run_id]) for row in rows]
        await conn.copy_records_to_table("audit_log", records=records, columns=AUDIT_COPY_COLUMNS)
    return len(rows)


def audit_from_row(row: asyncpg.Record) -> AuditEntry:
    """An entry from its stored values (selected as `AUDIT_COLUMNS`)."""
    return entry_of(AuditRow(*row))


async def audit_of(conn: asyncpg.Connection, run_id: str) -> list[AuditEntry]:
    rows = await conn.fetch(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log WHERE run_id = $1 ORDER BY seq", run_id)
    return [audit_from_row(r) for r in rows]


async def due_runs(
    conn: asyncpg.Connection, partition: int, tick: int, cap: int, fresh: Sequence[str] = ()
) -> tuple[list[RunState], list[str]]:
    """Runs with inputs waiting (queued, or `fresh`: just accepted) or a timer due, ordered by
    run id, at most `cap` of them; and which of them have queued inputs (usually none: then
    there is no need to read the inbox).

    The ids come first, from index scans (inbox, runs_due; an OR would scan every run of the
    partition), and only those rows are read: joined directly, the planner liked to walk the
    primary key over every run of every partition to find a few hundred."""
    rows = await conn.fetch(
        """
        WITH due AS MATERIALIZED (
            SELECT run_id FROM inbox WHERE partition = $1
            UNION SELECT run_id FROM runs WHERE partition = $1 AND wake_tick <= $2 AND status <> 'paused'
            UNION SELECT unnest($4::text[])
            ORDER BY run_id LIMIT $3)
        SELECT r.run_id, r.state, EXISTS (SELECT 1 FROM inbox i WHERE i.partition = $1 AND i.run_id = r.run_id) AS queued
        FROM due JOIN runs r ON r.run_id = due.run_id ORDER BY r.run_id
        """,
        partition, tick, cap, list(fresh),
    )  # fmt: skip
    return [decode_state(r["state"]) for r in rows], [r["run_id"] for r in rows if r["queued"]]


async def anything_due(conn: asyncpg.Connection, partition: int, tick: int) -> bool:
    """Whether `due_runs` would find anything (two index probes, no transaction needed)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM inbox WHERE partition = $1) OR EXISTS "
        "(SELECT 1 FROM runs WHERE partition = $1 AND wake_tick <= $2 AND status <> 'paused')", partition, tick,
    ))  # fmt: skip


async def inbox_of(conn: asyncpg.Connection, partition: int, run_ids: Sequence[str]) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, run_id, body, reply_to, message_id FROM inbox WHERE partition = $1 AND run_id = ANY($2::text[]) "
        "ORDER BY seq",
        partition, list(run_ids),
    )  # fmt: skip
    return found


async def delete_inbox(conn: asyncpg.Connection, seqs: Sequence[int]) -> None:
    if seqs:
        await conn.execute("DELETE FROM inbox WHERE seq = ANY($1::bigint[])", list(seqs))


async def add_inbox(conn: asyncpg.Connection, partition: int, rows: Sequence[tuple[str, int, bytes, str | None, str | None]]) -> None:
    """rows: (run_id, tick, encoded input, reply_to, message_id); one statement for all of them,
    in the given order (the inbox's seq is the order inputs are applied in)."""
    if rows:
        run_ids, ticks, bodies, reply_tos, message_ids = (list(column) for column in zip(*rows, strict=True))
        await conn.execute(
            "INSERT INTO inbox (partition, run_id, tick, body, reply_to, message_id) "
            "SELECT $1, r, t, b, rt, m FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::text[], $6::text[]) "
            "WITH ORDINALITY AS u(r, t, b, rt, m, n) ORDER BY n",
            partition, run_ids, ticks, bodies, reply_tos, message_ids,
        )  # fmt: skip


async def add_outbox(conn: asyncpg.Connection, partition: int, items: Sequence[OutboxItem]) -> list[int]:
    """Insert outbox rows; returns their seqs (to delete once published)."""
    if not items:
        return []
    rows = await conn.fetch(
        "INSERT INTO outbox (partition, channel, body) SELECT $1, c, b FROM unnest($2::text[], $3::bytea[]) AS u(c, b) "
        "RETURNING seq",
        partition, [i.request.channel for i in items], [msgspec.json.encode(i) for i in items],
    )  # fmt: skip
    return [row["seq"] for row in rows]


async def delete_outbox(conn: asyncpg.Connection, seqs: Sequence[int]) -> None:
    await conn.execute("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", list(seqs))


async def unpublished(conn: asyncpg.Connection, partition: int) -> list[tuple[int, OutboxItem]]:
    rows = await conn.fetch("SELECT seq, body FROM outbox WHERE partition = $1 ORDER BY seq", partition)
    return [(r["seq"], msgspec.json.decode(r["body"], type=OutboxItem)) for r in rows]
