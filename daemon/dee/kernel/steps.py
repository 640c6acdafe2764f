"""`StepType`: how one kind of plan node behaves, as the kernel calls it.

Step types are plugins (`dee_step_types`), but they run inside the pure kernel: they decide
only from the `StepContext` and their params and return a `StepOutcome`, which the kernel
applies. `dee.plugin.contracts` re-exports this class for plugin authors.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.inputs import ChannelResult, Event
from dee.kernel.outcomes import Fail, StepOutcome
from dee.plan.spec import TemplateStore


class StepType:
    """A step type. Subclass and override.

    - `name`: the `type` written in plans (`sendEmail`); `params_type`: a msgspec Struct
      (camelCase) that the step's params must convert to; the kernel hands the converted value
      to every method.
    - `channel`: the channel the step sends on (policy gates are asked before it acts), or None.
    - `ends_run`: the step ends the run (an `end`): it has no successor.
    - `always_waits(params)`: True when every pass through the step takes logical time (a `wait`),
      which is what makes a cycle through it safe.
    - `targets(params)`: step ids this step chooses between itself (a branch); empty when the
      plan's transitions pick the successor.
    - `conditions(params)`: the CEL expressions the step evaluates, with whether `default` is
      allowed there, so the plan is checked and compiled up front.
    - `check(params, templates)`: further problems, e.g. an unknown template id.
    - `enter(ctx, params)`: the step starts; `on_timer` when its Sleep ends; `on_result` when its
      channel answers with success (failures and retries are the kernel's job). A channel step
      whose outcome comes later from outside (a call's final status) returns `Sleep` from
      `on_result` (its longest wait); `on_event` is then called with each event for this step
      while it waits, and returns an outcome, or None to go on waiting.
    """

    name: ClassVar[str]
    params_type: ClassVar[type[msgspec.Struct]]
    channel: ClassVar[str | None] = None
    ends_run: ClassVar[bool] = False

    def always_waits(self, params: Any) -> bool:
        return False

    def targets(self, params: Any) -> list[str]:
        return []

    def conditions(self, params: Any) -> list[tuple[str, bool]]:
        return []

    def check(self, params: Any, templates: TemplateStore) -> list[str]:
        return []

    def enter(self, ctx: StepContext, params: Any) -> StepOutcome:
        raise TypeError(f"step type {self.name} does not implement enter")

    def on_timer(self, ctx: StepContext, params: Any) -> StepOutcome:
        return Fail(f"step type {self.name} does not handle timers")

    def on_result(self, ctx: StepContext, params: Any, result: ChannelResult) -> StepOutcome:
        return Fail(f"step type {self.name} does not handle channel results")

    def on_event(self, ctx: StepContext, params: Any, event: Event) -> StepOutcome | None:
        return None
