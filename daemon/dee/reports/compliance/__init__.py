"""`compliance.report(period_from, period_to)`: what a regulator asks about a period (SPEC 3.1).

Everything here is read back from what the engine recorded, so the report states what happened,
not what should have: every send and call of the period (from `step.dispatched` entries), the
consent on record for that contact and channel at the send's tick, the suppressions added, each
call's local time (from its tick) against the calling hours, what the policy gates decided
(verdicts by gate, every deferral and its wait, every refusal), how long each unsubscribe took
to stop its run, and the audit chain of every run touched in the period. The period is a range
of ticks, both ends included, like every time in the engine.
"""

from dee.reports.compliance.hours import CallCheck, CallingRules, check_call
from dee.reports.compliance.policy import Deferral, Denial
from dee.reports.compliance.report import ChainSummary, ComplianceReport, Reading, build_report
from dee.reports.compliance.runs import RunFacts, run_facts, step_channels
from dee.reports.compliance.sends import NO_CONSENT, RUN_ENDINGS, SendRecord, UnsubscribeRecord, consent_at
from dee.reports.compliance.text import render_text

__all__ = [
    "NO_CONSENT", "RUN_ENDINGS", "CallCheck", "CallingRules", "ChainSummary", "ComplianceReport", "Deferral", "Denial",
    "Reading", "RunFacts", "SendRecord", "UnsubscribeRecord", "build_report", "check_call", "consent_at", "render_text",
    "run_facts", "step_channels",
]  # fmt: skip
