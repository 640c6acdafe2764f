"""Intake: turn accepted wire messages into inbox rows (and new runs), inside the tick transaction.

Every message is stamped with the partition's current tick. `execute` creates its run right
here (pending, with its `run.started` entry), so the reply can carry the run and enrolment
conflicts are found at once; commands are checked for existence and queued, and are answered
after the kernel applied them; events, suppressions and consents are answered once stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dee.bus import messages as wire
from dee.errors import DeeError, RunNotFoundError, StartInPastError, UnknownPlanError, error_fields
from dee.kernel.audit import AuditRow
from dee.kernel.inputs import Cancel, ChannelResult, Event, Pause, ReplayRecorded, Resume, Retry, Suppressed
from dee.scheduler.enrol import enrol
from dee.stores.postgres.plans import PlanCache
from dee.stores.postgres.rows import TERMINAL_SQL, encode_input

InboxRow = tuple[str, int, bytes, str | None, str | None]


@dataclass
class Intake:
    tick: int
    partition: int
    replies: list[tuple[str, wire.Reply]] = field(default_factory=list)
    inbox: list[InboxRow] = field(default_factory=list)
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    enrolled: dict[tuple[str, str], str] = field(default_factory=dict)
    known: dict[str, int] = field(default_factory=dict)  # run id -> partition, looked up once per batch
    # contact id -> its active runs here as (run id, plan id) by run id, looked up once per batch
    active: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def owns(self, run_id: str) -> bool:
        """Whether the run exists in this partition (enrolled before or earlier in this batch)."""
        return self.known.get(run_id) == self.partition

    def reply(self, message: wire.Message, reply: wire.Reply) -> None:
        if message.reply_to:
            self.replies.append((message.reply_to, reply))

    def refuse(self, message: wire.Message, error: DeeError, run_id: str | None = None) -> None:
        reply = wire.Reply(message.command_id, False, type(error).__name__, str(error), run_id, details=error_fields(error))
        self.reply(message, reply)


async def accept(
    conn: asyncpg.Connection, intake: Intake, messages: Sequence[wire.Inbound], plans: PlanCache,
    stamp: str, new_id: Callable[[], str],
) -> None:  # fmt: skip
    """Apply intake rules to new (not duplicate) messages, in stream order."""
    named = [m.run_id for m in messages if getattr(m, "run_id", None) and not isinstance(m, wire.Execute)]
    if named:
        found = await conn.fetch("SELECT run_id, partition FROM runs WHERE run_id = ANY($1::text[])", named)
        intake.known.update((r["run_id"], r["partition"]) for r in found)
    # runs addressed by contact; intake writes no run row before the batch's end, so one read
    # up front sees what a read per message would
    contacts = sorted({m.contact_id for m in messages
                       if isinstance(m, wire.Suppress) or (isinstance(m, wire.Event) and m.run_id is None)})  # fmt: skip
    if contacts:
        for r in await conn.fetch(
            f"SELECT contact_id, run_id, plan_id FROM runs WHERE partition = $1 AND contact_id = ANY($2::text[]) "
            f"AND status NOT IN {TERMINAL_SQL} ORDER BY run_id", intake.partition, contacts,
        ):  # fmt: skip
            intake.active.setdefault(r["contact_id"], []).append((r["run_id"], r["plan_id"]))
    for message in messages:
        if isinstance(message, wire.Execute | wire.ExecuteBatch):
            await _execute(conn, intake, message, plans, stamp, new_id)
        elif isinstance(message, wire.Pause | wire.Resume | wire.Cancel | wire.Retry | wire.ReplayVerdict):
            await _command(conn, intake, message)
        elif isinstance(message, wire.Event):
            await _event(conn, intake, message)
        elif isinstance(message, wire.Suppress):
            await _suppress(conn, intake, message)
        elif isinstance(message, wire.Consent):
            await conn.execute(
                "INSERT INTO consents (contact_id, channel, status, source, tick, expires_tick, evidence) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                message.contact_id, message.channel, message.status, message.source, intake.tick,
                message.expires_tick, wire.encode_json(message.evidence),
            )  # fmt: skip
            intake.reply(message, wire.Reply(message.command_id, True))
        elif isinstance(message, wire.Result):
            if intake.owns(message.run_id):
                result = ChannelResult(intake.tick, message.idempotency_key, message.status, message.error_kind,
                                       message.error, message.outcome, message.data)  # fmt: skip
                intake.inbox.append((message.run_id, intake.tick, encode_input(result), None, None))


async def _execute(
    conn: asyncpg.Connection, intake: Intake, m: wire.Execute | wire.ExecuteBatch, plans: PlanCache,
    stamp: str, new_id: Callable[[], str],
) -> None:  # fmt: skip
    """Enrol one contact (`execute`) or many (`executeBatch`) with batched reads."""
    if isinstance(m, wire.Execute):
        items = [wire.BatchItem(m.run_id, m.contact)]
        start_at, key = m.start_at, m.idempotency_key
    else:
        items, start_at, key = m.items, None, None
    if key is not None:
        existing = await conn.fetchval("SELECT run_id FROM runs WHERE idempotency_key = $1", key)
        if existing is not None:
            intake.reply(m, wire.Reply(m.command_id, True, run_id=existing))
            return
    try:
        compiled = await plans.get(conn, m.plan_id, m.plan_version)
    except KeyError:
        intake.refuse(m, UnknownPlanError(m.plan_id, m.plan_version))
        return
    start_tick = intake.tick if start_at is None else start_at
    if start_tick < intake.tick:
        intake.refuse(m, StartInPastError(start_tick, intake.tick))
        return
    pairs = [(item.run_id, item.contact) for item in items]
    done = await enrol(conn, intake.partition, intake.tick, compiled, m.plan_version, pairs, m.variables, start_tick,
                       key, stamp, new_id, intake.enrolled)  # fmt: skip
    if isinstance(m, wire.Execute) and done.refused:
        _, error = done.refused[0]
        intake.refuse(m, error, getattr(error, "run_id", None))
        return
    intake.runs.extend(done.runs)
    intake.audit.extend(done.audit)
    intake.known.update((run_id, intake.partition) for run_id in done.created)
    created, skipped = done.created, [contact_id for contact_id, _ in done.refused]
    run_id = created[0] if isinstance(m, wire.Execute) else None
    intake.reply(m, wire.Reply(m.command_id, True, run_id=run_id, runs=created, skipped=skipped))


async def _command(
    conn: asyncpg.Connection, intake: Intake, m: wire.Pause | wire.Resume | wire.Cancel | wire.Retry | wire.ReplayVerdict
) -> None:
    if not intake.owns(m.run_id):
        intake.refuse(m, RunNotFoundError(m.run_id))
        return
    tick = intake.tick
    made = {
        wire.Pause: lambda: Pause(tick, command_id=m.command_id),
        wire.Resume: lambda: Resume(tick, command_id=m.command_id),
        wire.Retry: lambda: Retry(tick, command_id=m.command_id),
        wire.Cancel: lambda: Cancel(tick, reason=getattr(m, "reason", ""), command_id=m.command_id),
        wire.ReplayVerdict: lambda: ReplayRecorded(
            tick, getattr(m, "identical", False), list(getattr(m, "fields", [])), getattr(m, "reissued", 0)),
    }[type(m)]()
    intake.inbox.append((m.run_id, tick, encode_input(made), m.reply_to, m.command_id))


def _targets(intake: Intake, contact_id: str, plan_id: str | None = None) -> list[str]:
    """The contact's active runs in this partition (of one plan, if given), by run id."""
    return [run_id for run_id, plan in intake.active.get(contact_id, []) if plan_id is None or plan == plan_id]


async def _event(conn: asyncpg.Connection, intake: Intake, m: wire.Event) -> None:
    if m.run_id is not None:
        if not intake.owns(m.run_id):
            intake.refuse(m, RunNotFoundError(m.run_id))
            return
        targets = [m.run_id]
    else:
        targets = _targets(intake, m.contact_id)
    if m.event_type == "email.unsubscribed":
        await conn.execute(
            "INSERT INTO contacts (contact_id, partition, unsubscribed, updated_tick) VALUES ($1, $2, true, $3) "
            "ON CONFLICT (contact_id) DO UPDATE SET unsubscribed = true, updated_tick = $3",
            m.contact_id, intake.partition, intake.tick,
        )  # fmt: skip
    event = Event(intake.tick, m.command_id, m.event_type, m.step_id, m.message_id, dict(m.data), m.occurred_at)
    body = encode_input(event)
    intake.inbox.extend((run_id, intake.tick, body, None, None) for run_id in targets)
    intake.reply(m, wire.Reply(m.command_id, True, runs=targets))


async def _suppress(conn: asyncpg.Connection, intake: Intake, m: wire.Suppress) -> None:
    await conn.execute(
        "INSERT INTO suppressions (contact_id, level, reason, source, channel, plan_id, tick) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        m.contact_id, m.level, m.reason, m.source, m.channel, m.plan_id, intake.tick,
    )  # fmt: skip
    targets: list[str] = []
    if m.level != "channel":
        targets = _targets(intake, m.contact_id, m.plan_id if m.level == "plan" else None)
    body = encode_input(Suppressed(intake.tick, m.level, m.reason, m.source))
    intake.inbox.extend((run_id, intake.tick, body, None, None) for run_id in targets)
    intake.reply(m, wire.Reply(m.command_id, True, runs=targets))
