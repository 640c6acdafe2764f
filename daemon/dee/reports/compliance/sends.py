"""The sends of a period with the consent on record at each, and how each unsubscribe stopped its run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec

from dee.kernel.audit import AuditEntry
from dee.kernel.contact import Contact
from dee.records import ConsentRecord

RUN_ENDINGS = ("run.cancelled", "run.completed", "run.failed")
NO_CONSENT = "none"


class SendRecord(msgspec.Struct, frozen=True):
    """One channel action handed out (a retry is another record with its attempt number)."""

    run_id: str
    contact_id: str
    step_id: str | None
    channel: str
    tick: int
    timestamp: str
    idempotency_key: str
    attempt: int
    consent: str  # granted, revoked, expired or none: the record in force at the send's tick


class UnsubscribeRecord(msgspec.Struct, frozen=True):
    """An unsubscribe reaching a run, and when the run stopped (None: it had already ended).
    `requested_at` is when the recipient asked (the ingress's time of the request, or the
    event's `occurredAt`); `seconds_from_request` runs from then until the run stopped."""

    run_id: str
    contact_id: str
    received_tick: int
    stopped_tick: int | None
    stopped_by: str | None
    ticks: int | None
    seconds: float | None
    requested_at: str | None = None
    seconds_from_request: float | None = None


def consent_at(records: Sequence[ConsentRecord], contact_id: str, channel: str, tick: int) -> str:
    """The consent status in force at `tick`: the latest record up to it (ties: the later one)."""
    current = NO_CONSENT
    latest = -1
    for record in records:
        at = record.tick or 0
        if record.contact_id != contact_id or record.channel != channel or at > tick or at < latest:
            continue
        latest = at
        current = record.status
        if record.status == "granted" and record.expires_tick is not None and record.expires_tick <= tick:
            current = "expired"
    return current


def send_record(entry: AuditEntry, contact_id: str, consents: Sequence[ConsentRecord]) -> SendRecord:
    """The send a `step.dispatched` entry records."""
    output = entry.output or {}
    channel = str(output.get("channel"))
    return SendRecord(entry.run_id, contact_id, entry.step_id, channel, entry.tick, entry.timestamp,
                      str(output.get("idempotencyKey")), int(output.get("attempt") or 1),
                      consent_at(consents, contact_id, channel, entry.tick))  # fmt: skip


def _seconds(start: str, end: str) -> float | None:
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
    except (TypeError, ValueError):  # unparsable, or one naive and one aware
        return None


def unsubscribes(entries: Sequence[AuditEntry], endings: Sequence[AuditEntry], contacts: Mapping[str, Contact]) -> list[UnsubscribeRecord]:
    """Each `email.unsubscribed` a run received, with the run's end that followed it."""
    ends: dict[str, list[AuditEntry]] = {}
    for entry in endings:
        ends.setdefault(entry.run_id, []).append(entry)
    out = []
    for entry in entries:
        if entry.action != "event.received" or (entry.output or {}).get("eventType") != "email.unsubscribed":
            continue
        end = next((e for e in ends.get(entry.run_id, []) if e.seq > entry.seq), None)
        contact = contacts.get(entry.run_id)
        requested = (entry.input or {}).get("occurredAt")
        requested = requested if isinstance(requested, str) else None
        out.append(UnsubscribeRecord(
            entry.run_id, contact.id if contact else "?", entry.tick, end.tick if end else None,
            end.action if end else None, end.tick - entry.tick if end else None,
            _seconds(entry.timestamp, end.timestamp) if end else None,
            requested, _seconds(requested, (end or entry).timestamp) if requested else None,
        ))  # fmt: skip
    return out
