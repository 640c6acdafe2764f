"""The compliance report of a period, assembled from what the engine read for it."""

from __future__ import annotations

from collections import Counter

import msgspec

from dee.kernel.audit import AuditEntry, ChainVerification
from dee.kernel.contact import Contact
from dee.records import ConsentRecord, Suppression
from dee.reports.compliance.hours import CallCheck, CallingRules, check_call, zones_of
from dee.reports.compliance.policy import (
    REFUSALS,
    Deferral,
    Denial,
    channel_of,
    deferral,
    denial,
    gate_verdicts,
    verdict_totals,
    verdicts_by_gate,
)
from dee.reports.compliance.runs import RunFacts
from dee.reports.compliance.sends import SendRecord, UnsubscribeRecord, send_record, unsubscribes


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
    calling_days: tuple[str, ...]
    holidays: str | None
    tick_interval_ms: int
    policy_verdicts: dict[str, int]  # the standing verdict of every gate decision in the period
    verdicts_by_gate: dict[str, dict[str, int]]  # gate -> verdict -> count
    deferrals: list[Deferral]
    denials: list[Denial]


class Reading(msgspec.Struct, frozen=True):
    """What the engine read for a period: its entries, the runs' endings from its start on,
    contacts by run id, consent records up to its end, its suppressions, the chain of every run
    touched, the facts of each run's whole log, and the channel of each step by plan version."""

    entries: list[AuditEntry]
    endings: list[AuditEntry]
    contacts: dict[str, Contact]
    consents: list[ConsentRecord]
    suppressions: list[Suppression]
    chains: dict[str, ChainVerification]
    runs: dict[str, RunFacts]
    channels: dict[tuple[str, int], dict[str, str]]


def gate_zones(evaluation: AuditEntry | None) -> list[str] | None:
    """The zones the calling-hours gate used for a send, from its facts."""
    for gate in gate_verdicts(evaluation) if evaluation is not None else []:
        facts = gate.get("facts")
        if gate.get("gate") == "calling-hours" and isinstance(facts, dict) and isinstance(facts.get("zones"), list):
            return [str(z) for z in facts["zones"]]
    return None


def by_tick(item: Deferral | Denial) -> int:
    """Deferrals and denials are listed as they happened (a tie: in the order of their runs)."""
    return item.tick


def build_report(period: tuple[int, int], read: Reading, rules: CallingRules) -> ComplianceReport:
    """The report of ticks `period` (both ends included) from `read`, calls judged by `rules`."""
    sends: list[SendRecord] = []
    calls: list[CallCheck] = []
    evaluations: list[AuditEntry] = []
    deferrals: list[Deferral] = []
    denials: list[Denial] = []
    asked: dict[tuple[str, str | None], AuditEntry] = {}  # the last gate decision of each run's step
    for entry in sorted(read.entries, key=lambda e: (e.run_id, e.seq)):
        contact = read.contacts.get(entry.run_id)
        contact_id = contact.id if contact else "?"
        run = read.runs.get(entry.run_id)
        channels = read.channels.get((run.plan_id, run.plan_version), {}) if run else {}
        if entry.action == "policy.evaluated":
            evaluations.append(entry)
            asked[entry.run_id, entry.step_id] = entry
            verdict = (entry.output or {}).get("verdict")
            if verdict == "defer":
                deferrals.append(deferral(entry, contact_id, channel_of(entry, channels), run, rules.tick_interval_ms))
            elif verdict in REFUSALS:
                denials.append(denial(entry, contact_id, channel_of(entry, channels)))
        elif entry.action == "step.dispatched":
            send = send_record(entry, contact_id, read.consents)
            sends.append(send)
            if send.channel == "voice":
                zones, source = zones_of(contact, gate_zones(asked.get((entry.run_id, entry.step_id))), rules.default_timezone)
                calls.append(check_call(send, run.epoch_ms if run else None, zones, source, rules))
    broken = {run_id: chain.broken_at or 0 for run_id, chain in sorted(read.chains.items()) if not chain.valid}
    return ComplianceReport(
        period_from=period[0], period_to=period[1], calling_hours=rules.hours,
        sends_by_channel=dict(sorted(Counter(s.channel for s in sends).items())),
        consent_at_send=dict(sorted(Counter(s.consent for s in sends).items())),
        sends=sends, suppressions=read.suppressions, calls=calls,
        calls_outside_hours=sum(1 for c in calls if c.within_hours is not True),
        unsubscribes=unsubscribes(read.entries, read.endings, read.contacts),
        chains=ChainSummary(len(read.chains), len(read.chains) - len(broken), broken),
        calling_days=rules.days, holidays=rules.holidays, tick_interval_ms=rules.tick_interval_ms,
        policy_verdicts=verdict_totals(evaluations), verdicts_by_gate=verdicts_by_gate(evaluations),
        deferrals=sorted(deferrals, key=by_tick), denials=sorted(denials, key=by_tick),
    )  # fmt: skip
