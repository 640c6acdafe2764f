"""`compliance.report(period_from, period_to)`: what a regulator asks about a period (SPEC 3.1).

Everything here is read back from what the engine recorded, so the report states what happened,
not what should have: every send and call of the period (from `step.dispatched` entries), the
consent on record for that contact and channel at the send's tick, the suppressions added, each
call's local time in the contact's time zone against the configured calling hours, how long
each unsubscribe took to stop its run, and the audit chain of every run touched in the period.
The period is a range of ticks, both ends included, like every time in the engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from dee.kernel.audit import AuditEntry, ChainVerification
from dee.kernel.contact import Contact
from dee.records import ConsentRecord, Suppression

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


class CallCheck(msgspec.Struct, frozen=True):
    """A call's local time for the contact; `within_hours` is None when the time zone is unknown."""

    run_id: str
    contact_id: str
    step_id: str | None
    timestamp: str
    timezone: str
    local_time: str | None
    within_hours: bool | None


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


class ChainSummary(msgspec.Struct, frozen=True):
    runs: int
    valid: int
    broken: dict[str, int]  # run id -> the first entry that does not verify


class ComplianceReport(msgspec.Struct, frozen=True):
    period_from: int
    period_to: int
    calling_hours: tuple[str, str]
    sends_by_channel: dict[str, int]
    consent_at_send: dict[str, int]
    sends: list[SendRecord]
    suppressions: list[Suppression]
    calls: list[CallCheck]
    calls_outside_hours: int
    unsubscribes: list[UnsubscribeRecord]
    chains: ChainSummary


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


def check_call(send: SendRecord, timezone: str, hours: tuple[time, time]) -> CallCheck:
    try:
        local = datetime.fromisoformat(send.timestamp).astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return CallCheck(send.run_id, send.contact_id, send.step_id, send.timestamp, timezone, None, None)
    start, end = hours
    within = start <= local.time() < end
    return CallCheck(send.run_id, send.contact_id, send.step_id, send.timestamp, timezone, local.isoformat(), within)


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


def build_report(
    period: tuple[int, int], entries: Sequence[AuditEntry], endings: Sequence[AuditEntry],
    contacts: Mapping[str, Contact], consents: Sequence[ConsentRecord], suppressions: Sequence[Suppression],
    chains: Mapping[str, ChainVerification], calling_hours: tuple[str, str], default_timezone: str = "UTC",
) -> ComplianceReport:  # fmt: skip
    """The report from what was read: `entries` of the period, the runs' ending entries from the
    period's start on, contacts by run id, consent records up to the period's end. A contact
    without a time zone is judged in `default_timezone`."""
    hours = (time.fromisoformat(calling_hours[0]), time.fromisoformat(calling_hours[1]))
    sends: list[SendRecord] = []
    calls: list[CallCheck] = []
    for entry in entries:
        if entry.action != "step.dispatched":
            continue
        output = entry.output or {}
        contact = contacts.get(entry.run_id)
        contact_id = contact.id if contact else "?"
        channel = str(output.get("channel"))
        send = SendRecord(entry.run_id, contact_id, entry.step_id, channel, entry.tick, entry.timestamp,
                          str(output.get("idempotencyKey")), int(output.get("attempt") or 1),
                          consent_at(consents, contact_id, channel, entry.tick))  # fmt: skip
        sends.append(send)
        if channel == "voice":
            calls.append(check_call(send, (contact.timezone or default_timezone) if contact else "?", hours))
    broken = {run_id: chain.broken_at or 0 for run_id, chain in sorted(chains.items()) if not chain.valid}
    return ComplianceReport(
        period_from=period[0], period_to=period[1], calling_hours=calling_hours,
        sends_by_channel=dict(sorted(Counter(s.channel for s in sends).items())),
        consent_at_send=dict(sorted(Counter(s.consent for s in sends).items())),
        sends=sends, suppressions=list(suppressions), calls=calls,
        calls_outside_hours=sum(1 for c in calls if c.within_hours is not True),
        unsubscribes=unsubscribes(entries, endings, contacts),
        chains=ChainSummary(len(chains), len(chains) - len(broken), broken),
    )  # fmt: skip
