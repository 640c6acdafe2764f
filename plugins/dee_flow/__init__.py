"""Built-in flow steps: `wait`, `branch` and `end`. An ordinary plugin, registered by entry point."""

from __future__ import annotations

from typing import Any

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.outcomes import Done, Finish, Sleep, StepOutcome
from dee.plan.model import Condition, Duration
from dee.plugin import hookimpl
from dee.plugin.contracts import StepType


class WaitParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    duration: Duration


class BranchParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    conditions: tuple[Condition, ...]


class EndParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    outcome: str


class WaitStep(StepType):
    """Waits a duration, counted in ticks from the tick the wait started."""

    name = "wait"
    params_type = WaitParams

    def always_waits(self, params: WaitParams) -> bool:
        return params.duration.total_ms() > 0

    def check(self, params: WaitParams, templates: Any) -> list[str]:
        return ["a wait's duration cannot be negative"] if params.duration.total_ms() < 0 else []

    def enter(self, ctx: StepContext, params: WaitParams) -> StepOutcome:
        return Sleep(ctx.tick + params.duration.to_ticks(ctx.tick_interval_ms))

    def on_timer(self, ctx: StepContext, params: WaitParams) -> StepOutcome:
        return Done("completed")


class BranchStep(StepType):
    """Evaluates its conditions in order; the first that holds picks the next step."""

    name = "branch"
    params_type = BranchParams

    def targets(self, params: BranchParams) -> list[str]:
        return [c.goto for c in params.conditions]

    def conditions(self, params: BranchParams) -> list[tuple[str, bool]]:
        last = len(params.conditions) - 1
        return [(c.when, i == last) for i, c in enumerate(params.conditions)]

    def check(self, params: BranchParams, templates: Any) -> list[str]:
        if not params.conditions or params.conditions[-1].when.strip() != "default":
            return ["a branch needs a final `default` condition"]
        return []

    def enter(self, ctx: StepContext, params: BranchParams) -> StepOutcome:
        evaluated = []
        for condition in params.conditions:
            hit = ctx.evaluate(condition.when)
            evaluated.append({"when": condition.when, "result": hit})
            if hit:
                return Done(f"branch:{condition.goto}", goto=condition.goto,
                            data={"evaluated": evaluated}, action="step.evaluated")  # fmt: skip
        raise AssertionError("validation guarantees a final default")


class EndStep(StepType):
    """Ends the run as `completed` with the given outcome."""

    name = "end"
    params_type = EndParams
    ends_run = True

    def enter(self, ctx: StepContext, params: EndParams) -> StepOutcome:
        return Finish(params.outcome)


@hookimpl
def dee_step_types() -> list[StepType]:
    return [WaitStep(), BranchStep(), EndStep()]
