"""Enrolment: new runs for a batch of contacts, with every rule of `execute` checked in bulk.

Shared by the partition worker's intake (`execute`, `executeBatch` messages) and by the client's
`bulk_execute` fast path, which writes large batches with COPY directly: new runs are rows no
one else writes yet, the unique index on (plan, contact) for non-terminal runs settles races
with concurrent enrolments, and the owning worker picks the new runs up at their start tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from msgspec.structs import replace

from dee.errors import AlreadyEnrolledError, ContactSuppressedError, DeeError
from dee.kernel.audit import AuditRow, seal_rows
from dee.kernel.contact import Contact
from dee.kernel.inputs import Start
from dee.kernel.machine import start_run
from dee.plan.compiled import CompiledPlan
from dee.stores.postgres.rows import TERMINAL_SQL, run_record


@dataclass
class Enrolment:
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    refused: list[tuple[str, DeeError]] = field(default_factory=list)


async def enrol(
    conn: asyncpg.Connection, partition: int, tick: int, compiled: CompiledPlan, version: int,
    items: Sequence[tuple[str, Contact]], variables: dict[str, Any], start_tick: int,
    idempotency_key: str | None, stamp: str, new_id: Callable[[], str],
    already: dict[tuple[str, str], str] | None = None,
) -> Enrolment:  # fmt: skip
    """Runs for `(run_id, contact)` items; already enrolled or suppressed contacts are refused.

    `already` holds enrolments made earlier in the same transaction (and is updated)."""
    plan = compiled.plan
    already = {} if already is None else already
    ids = [contact.id for _, contact in items]
    enrolled = {
        r["contact_id"]: r["run_id"]
        for r in await conn.fetch(
            f"SELECT contact_id, run_id FROM runs WHERE plan_id = $1 AND contact_id = ANY($2::text[]) "
            f"AND status NOT IN {TERMINAL_SQL}", plan.id, ids)
    }  # fmt: skip
    suppressed = {
        r["contact_id"]: (r["level"], r["reason"])
        for r in await conn.fetch(
            "SELECT DISTINCT ON (contact_id) contact_id, level, reason FROM suppressions "
            "WHERE contact_id = ANY($1::text[]) AND (level IN ('global', 'regulatory') OR (level = 'plan' AND plan_id = $2)) "
            "ORDER BY contact_id, id", ids, plan.id)
    }  # fmt: skip
    flags = {
        r["contact_id"]: (r["unsubscribed"], r["bounced"])
        for r in await conn.fetch(
            "INSERT INTO contacts (contact_id, partition) SELECT unnest($1::text[]), $2 ON CONFLICT (contact_id) "
            "DO UPDATE SET contact_id = EXCLUDED.contact_id RETURNING contact_id, unsubscribed, bounced",
            sorted(set(ids)), partition)
    }  # fmt: skip
    out = Enrolment()
    for run_id, contact in items:
        current = already.get((plan.id, contact.id)) or enrolled.get(contact.id)
        if current is not None:
            out.refused.append((contact.id, AlreadyEnrolledError(plan.id, contact.id, current)))
            continue
        if contact.id in suppressed:
            out.refused.append((contact.id, ContactSuppressedError(contact.id, *suppressed[contact.id])))
            continue
        unsubscribed, bounced = flags.get(contact.id, (False, False))
        if unsubscribed or bounced:
            contact = replace(contact, unsubscribed=contact.unsubscribed or unsubscribed, bounced=contact.bounced or bounced)
        start = Start(tick, run_id, plan.id, version, plan.checksum, contact, dict(variables), start_tick)
        first = start_run(start)
        entries = seal_rows(first.entries, first.state.audit_head, stamp, new_id)
        out.runs.append(run_record(replace(first.state, audit_head=entries[-1].checksum), partition, idempotency_key))
        out.audit.extend(entries)
        already[(plan.id, contact.id)] = run_id
        out.created.append(run_id)
    return out
