"""What the report needs from a run's whole audit log, beyond the entries of the period.

A call's local time is its tick made a moment with the run's epoch, which only the run's
`run.started` entry holds (journaled with the start, so it may lie long before the period), and
whether a deferred send finally went out may only show after the period ends. Both are read
from the chain the report verifies anyway, so they cost no query of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from dee.kernel.audit import AuditEntry
from dee.kernel.erasure import is_erased
from dee.plan.compiled import CompiledPlan

PASSES = ("step.entered", "step.dispatched")


class RunFacts(msgspec.Struct, frozen=True):
    """A run's plan and epoch (from its start input), and each entering and dispatch of a step."""

    plan_id: str
    plan_version: int
    epoch_ms: int  # the deployment's tick 0 (Unix ms) as the run journaled it
    passes: tuple[tuple[int, str, str, int], ...] = ()  # (seq, action, step id, tick), in order

    def sent_after(self, step_id: str, seq: int) -> int | None:
        """The tick the step sent after entry `seq`, or None when the step was entered anew
        (another pass through it) or the log ends before it sent."""
        for at, action, step, tick in self.passes:
            if at > seq and step == step_id:
                return tick if action == "step.dispatched" else None
        return None


def run_facts(log: Sequence[AuditEntry]) -> RunFacts | None:
    """The facts of a run's log; None when it does not begin with its start input (a broken
    chain, which the chain summary names)."""
    if not log or log[0].action != "run.started" or not log[0].input:
        return None
    start = log[0].input
    if is_erased(start):  # the contact was erased: its erasure journaled what the start held of the run
        start = next((e.output or {} for e in log if e.action == "contact.erased"), {})
        start = {**start, "planId": log[0].plan_id}
    passes = tuple((e.seq, e.action, e.step_id, e.tick) for e in log if e.action in PASSES and e.step_id is not None)
    return RunFacts(str(start.get("planId")), int(start.get("planVersion") or 0), int(start.get("epochMs") or 0), passes)


def step_channels(plan: CompiledPlan) -> dict[str, str]:
    """The channel each step of the plan sends on, as its step type declares it."""
    out: dict[str, str] = {}
    for step_id, step in plan.steps.items():
        spec = plan.step_types.get(step.type)
        if spec is not None and spec.channel:
            out[step_id] = spec.channel
    return out
