"""The compliance report as text for a person (`dee audit compliance`): a summary line per
section, then one line per item worth a look (each call, deferral, refusal, suppression,
unsubscribe and broken chain). The sends themselves are only counted: `--json` lists them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from dee.reports.compliance.hours import CallCheck
from dee.reports.compliance.policy import Deferral, Denial
from dee.reports.compliance.report import ComplianceReport

ZONES_SHOWN = 3


def counts(values: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in values.items()) or "none"


def local(check: CallCheck) -> str:
    """`2026-01-13 08:00 Asia/Tokyo` for each zone the call was judged in (the first few of a
    phone region's many: `--json` has them all)."""
    shown = [f"{datetime.fromisoformat(t):%Y-%m-%d %H:%M} {zone}" if t else f"? {zone}" for zone, t in check.local_times.items()]
    more = len(shown) - ZONES_SHOWN
    return ", ".join(shown[:ZONES_SHOWN]) + (f" and {more} more zones" if more > 0 else "")


def call_line(c: CallCheck) -> str:
    verdict = {True: "within hours", False: "OUTSIDE hours", None: "NOT JUDGED"}[c.within_hours]
    why = f": {c.reason}" if c.reason else ""
    return f"  tick {c.tick}  {c.contact_id}  {c.step_id}  {local(c)} ({c.zones_from})  {verdict}{why}  run {c.run_id}"


def deferral_line(d: Deferral) -> str:
    outcome = f"sent at tick {d.sent_tick}" if d.sent_tick is not None else "not sent"
    return (f"  tick {d.tick} -> {d.until_tick} ({d.ticks} ticks, {timedelta(seconds=d.seconds)})  {d.contact_id}  "
            f"{d.step_id} ({d.channel})  {outcome}  [{', '.join(d.gates)}] {d.reason}  run {d.run_id}")  # fmt: skip


def denial_line(d: Denial) -> str:
    return f"  tick {d.tick}  {d.verdict:<5}  {d.contact_id}  {d.step_id} ({d.channel})  [{d.gate}] {d.reason}  run {d.run_id}"


def render_text(report: ComplianceReport) -> str:
    r = report
    decisions = sum(r.policy_verdicts.values())
    lines = [
        f"compliance report, ticks {r.period_from}..{r.period_to} (a tick is {r.tick_interval_ms} ms)",
        f"calling hours {r.calling_hours[0]}-{r.calling_hours[1]} on {', '.join(r.calling_days)}; "
        f"public holidays: {r.holidays or 'none configured'}",
        "",
        f"sends: {counts(r.sends_by_channel)}; consent at send: {counts(r.consent_at_send)}",
        f"calls: {len(r.calls)}, {r.calls_outside_hours} outside calling hours or not judged",
        *(call_line(c) for c in r.calls),
        f"policy decisions: {decisions} ({counts(r.policy_verdicts)})",
        *(f"  {gate:<16} {counts(verdicts)}" for gate, verdicts in r.verdicts_by_gate.items()),
        f"deferrals: {len(r.deferrals)}",
        *(deferral_line(d) for d in r.deferrals),
        f"denials: {len(r.denials)}",
        *(denial_line(d) for d in r.denials),
        f"suppressions added: {len(r.suppressions)}",
        *(f"  tick {s.tick}  {s.contact_id}  {s.level}{f' ({s.channel})' if s.channel else ''}  {s.reason}, from {s.source}"
          for s in r.suppressions),
        f"unsubscribes: {len(r.unsubscribes)}",
        *(f"  tick {u.received_tick}  {u.contact_id}  "
          f"{f'stopped by {u.stopped_by} after {u.ticks} ticks' if u.stopped_by else 'run had already ended'}  run {u.run_id}"
          for u in r.unsubscribes),
        f"audit chains: {r.chains.valid}/{r.chains.runs} valid",
        *(f"  {run_id}: BROKEN at seq {seq}" for run_id, seq in r.chains.broken.items()),
    ]  # fmt: skip
    return "\n".join(lines)
