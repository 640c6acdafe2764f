"""The execution context: the immutable snapshot a step sees while it evaluates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import msgspec

from dee.kernel.contact import Contact
from dee.kernel.idempotency import idempotency_key, message_id
from dee.kernel.state import StepResult
from dee.plan.conditions import CompiledCondition, ConditionSnapshot, VisibleEvent


class StepContext(msgspec.Struct, frozen=True, dict=True):
    """Run, contact, visible events, variables and the tick, as of this moment of the run.

    `idempotency_key` and `message_id` identify this execution of the step (the same across its
    retries; derived on first access, since only channel steps need them, then kept: a channel
    step reads them several times); `settings` are the plugin's own deployment settings (sender
    address, tracking domain), which are configuration and therefore the same in replay as in
    the original run.
    """

    run_id: str
    plan_id: str
    plan_version: int
    step_id: str
    step_type: str
    tick: int
    step_tick: int
    contact: Contact
    variables: Mapping[str, Any]
    results: tuple[StepResult, ...]
    events: tuple[VisibleEvent, ...]
    key_attempt: int
    message_domain: str
    tick_interval_ms: int
    templates: Any
    settings: Mapping[str, Any]
    compiled: Callable[[str], CompiledCondition]

    @cached_property
    def idempotency_key(self) -> str:
        return idempotency_key(self.run_id, self.step_id, self.step_tick, self.key_attempt)

    @cached_property
    def message_id(self) -> str:
        return message_id(self.idempotency_key, self.message_domain, self.run_id)

    def snapshot(self) -> ConditionSnapshot:
        return condition_snapshot(self.contact, self.variables, self.results, self.events, self.tick)

    def evaluate(self, expression: str) -> bool:
        """Evaluate a condition of this plan (compiled once per plan version) at this moment."""
        return self.compiled(expression).evaluate(self.snapshot())

    @property
    def previous_result(self) -> StepResult | None:
        return self.results[-1] if self.results else None


def condition_snapshot(
    contact: Contact,
    variables: Mapping[str, Any],
    results: tuple[StepResult, ...],
    events: tuple[VisibleEvent, ...],
    tick: int,
) -> ConditionSnapshot:
    outcomes = {r.step_id: r.outcome for r in results}
    return ConditionSnapshot(
        contact={
            "id": contact.id,
            "email": contact.email,
            "phone": contact.phone,
            "timezone": contact.timezone,
            "unsubscribed": contact.unsubscribed,
            "bounced": contact.bounced,
            "attributes": dict(contact.attributes),
        },
        variables=dict(variables),
        events=events,
        call_outcomes=outcomes,
        tick=tick,
    )
