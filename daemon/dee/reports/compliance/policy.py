"""What the policy gates decided in a period, read from the `policy.evaluated` entries.

Every send and call is preceded by one (`Decision.record()`: the standing `verdict`, its
`reason`, `untilTick` for a deferral, and each gate's own verdict in `gates`). A deferral holds
the send until `untilTick`, when the gates are asked again; a skip, pause or fail refuses it
(`step.skipped`, `run.paused`, `run.failed`). The report counts verdicts overall and by gate,
lists each deferral with its wait and whether the send finally went out, and each refusal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from dee.kernel.audit import AuditEntry
from dee.reports.compliance.runs import RunFacts

REFUSALS = ("skip", "pause", "fail")


class Deferral(msgspec.Struct, frozen=True):
    """A send the gates held back until `until_tick`; `sent_tick` is when it then went out
    (None: it did not, or not yet)."""

    run_id: str
    contact_id: str
    step_id: str | None
    channel: str
    gates: list[str]  # every gate that deferred
    reason: str  # the standing deferral's (the latest one)
    tick: int
    until_tick: int
    ticks: int
    seconds: float
    sent: bool
    sent_tick: int | None


class Denial(msgspec.Struct, frozen=True):
    """A send refused: skipped (the run went on), paused (the run waits for a resume) or failed."""

    run_id: str
    contact_id: str
    step_id: str | None
    channel: str
    verdict: str
    gate: str  # the gate whose verdict stood
    reason: str
    tick: int


def gate_verdicts(entry: AuditEntry) -> list[dict[str, Any]]:
    gates = (entry.output or {}).get("gates")
    return [g for g in gates if isinstance(g, dict)] if isinstance(gates, list) else []


def verdict_totals(evaluations: Iterable[AuditEntry]) -> dict[str, int]:
    """The standing verdicts, counted."""
    return dict(sorted(Counter(str((e.output or {}).get("verdict")) for e in evaluations).items()))


def verdicts_by_gate(evaluations: Iterable[AuditEntry]) -> dict[str, dict[str, int]]:
    """gate -> verdict -> how many times that gate answered it."""
    counts: dict[str, Counter[str]] = {}
    for entry in evaluations:
        for gate in gate_verdicts(entry):
            counts.setdefault(str(gate.get("gate")), Counter())[str(gate.get("verdict"))] += 1
    return {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}


def channel_of(entry: AuditEntry, channels: Mapping[str, str]) -> str:
    """The channel of the step asked about: as its step type declares it, else as a gate
    recorded it in its facts ("?" when neither says)."""
    if entry.step_id is not None and entry.step_id in channels:
        return channels[entry.step_id]
    for gate in gate_verdicts(entry):
        facts = gate.get("facts")
        if isinstance(facts, dict) and isinstance(facts.get("channel"), str):
            return str(facts["channel"])
    return "?"


def deferral(entry: AuditEntry, contact_id: str, channel: str, run: RunFacts | None, tick_interval_ms: int) -> Deferral:
    output = entry.output or {}
    until = int(output.get("untilTick") or entry.tick)
    sent = run.sent_after(entry.step_id, entry.seq) if run is not None and entry.step_id is not None else None
    return Deferral(
        entry.run_id, contact_id, entry.step_id, channel, [str(g.get("gate")) for g in gate_verdicts(entry) if g.get("verdict") == "defer"],
        str(output.get("reason") or ""), entry.tick, until, until - entry.tick, (until - entry.tick) * tick_interval_ms / 1000,
        sent is not None, sent,
    )  # fmt: skip


def denial(entry: AuditEntry, contact_id: str, channel: str) -> Denial:
    output = entry.output or {}
    verdict, reason = str(output.get("verdict")), str(output.get("reason") or "")
    # the standing verdict is the first gate's of the strictest kind (the kernel's `decide`)
    gate = next((g for g in gate_verdicts(entry) if g.get("verdict") == verdict and (g.get("reason") or "") == reason), {})
    return Denial(entry.run_id, contact_id, entry.step_id, channel, verdict, str(gate.get("gate", "?")), reason, entry.tick)
