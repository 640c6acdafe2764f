"""What a tick's runs did, counted once per tick for the metrics.

The shell counts from what the kernel returned for each run (its status moves and the entries
it drafted), so the daemon's metrics cost one pass over entries the tick walks anyway and one
metric call per distinct label per tick, never one per run. Bounding the labels (plan-defined
outcomes) is the metrics' business (`dee.metrics`), not the shell's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dee.kernel.machine import Advance
from dee.plan.compiled import CompiledPlan

# the entries that close one execution of a step with its StepResult (in `output.result`)
_ENDS_A_STEP = frozenset({"step.executed", "step.evaluated", "step.skipped", "wait.completed"})


@dataclass
class Tally:
    """Counts of one tick (or of one iteration's ticks, merged with `update`)."""

    transitions: int = 0  # steps entered
    steps: Counter[tuple[str, str]] = field(default_factory=Counter)  # (step type, outcome) of each step that ended
    moves: Counter[str] = field(default_factory=Counter)  # net change of the number of runs per status
    denials: Counter[tuple[str, str]] = field(default_factory=Counter)  # (gate, verdict) of each gate that did not allow
    verdicts: Counter[str] = field(default_factory=Counter)  # the verdict that stood, per send the gates were asked about

    def add(self, result: Advance, plan: CompiledPlan | None) -> None:
        """Count one run's advance. A step that ended in an error (`error.occurred` at a step:
        the run failed there) counts as outcome `error` of its step's type, read from `plan`."""
        for before, after in result.transitions:
            self.moves[before] -= 1
            self.moves[after] += 1
        for e in result.entries:
            if e.action == "step.entered":
                self.transitions += 1
            elif e.action in _ENDS_A_STEP and e.output and isinstance(e.output.get("result"), dict):
                self.steps[(e.output["result"]["type"], e.output["result"]["outcome"])] += 1
            elif e.action == "policy.evaluated" and e.output:
                self.verdicts[e.output.get("verdict", "")] += 1
                self.denials.update((g["gate"], g["verdict"]) for g in e.output.get("gates", ()) if g.get("verdict") != "allow")
            elif e.action == "error.occurred" and e.step_id is not None and plan is not None and e.step_id in plan.steps:
                self.steps[(plan.step(e.step_id).type, "error")] += 1

    def update(self, other: Tally) -> None:
        self.transitions += other.transitions
        self.steps.update(other.steps)
        self.moves.update(other.moves)
        self.denials.update(other.denials)
        self.verdicts.update(other.verdicts)
