"""The records the Engine API returns: runs, pages, bulk results, consent and suppression."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from dee.kernel.state import RunState
from dee.plan.compiled import CompiledPlan


class ExecutionRun(msgspec.Struct, frozen=True):
    id: str
    plan_id: str
    plan_version: int
    contact_id: str
    status: str
    current_step: str | None
    steps_completed: int
    steps_remaining: int
    start_tick: int
    current_tick: int
    started_at: str | None
    completed_at: str | None
    outcome: str | None
    variables: dict[str, Any]


def run_view(state: RunState, plan: CompiledPlan, started_at: str | None, completed_at: str | None) -> ExecutionRun:
    remaining = 0
    if not state.terminal and state.current_step is not None:
        remaining = plan.remaining.get(state.current_step, 0)
    elif state.status == "pending":
        remaining = plan.remaining.get(plan.plan.first_step, 0)
    return ExecutionRun(
        id=state.run_id, plan_id=state.plan_id, plan_version=state.plan_version, contact_id=state.contact.id,
        status=state.status, current_step=state.current_step, steps_completed=state.steps_completed,
        steps_remaining=remaining, start_tick=state.start_tick, current_tick=state.current_tick,
        started_at=started_at, completed_at=completed_at, outcome=state.outcome, variables=state.variables,
    )  # fmt: skip


class RunPage(msgspec.Struct, frozen=True):
    runs: list[ExecutionRun]
    total: int


class BulkError(msgspec.Struct, frozen=True):
    contact_id: str
    error: str


class BulkResult(msgspec.Struct, frozen=True):
    created: int
    skipped: int
    errors: list[BulkError]
    run_ids: list[str] = []


class Erasure(msgspec.Struct, frozen=True):
    """What `erase_contact` did: the contact's runs (every one, ended ones too) scrubbed and
    journaled, the ones that were still going cancelled; nothing when it was erased before."""

    contact_id: str
    already_erased: bool
    runs: int
    cancelled: list[str]


class ConsentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A consent grant, revocation or expiry for one contact and channel, at a tick."""

    contact_id: str
    channel: str
    status: Literal["granted", "revoked", "expired"]
    source: str
    tick: int | None = None
    expires_tick: int | None = None
    evidence: dict[str, Any] = {}


SuppressionLevel = Literal["global", "channel", "plan", "regulatory"]


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    contact_id: str
    level: SuppressionLevel
    reason: str
    source: str
    channel: str | None = None
    plan_id: str | None = None
    tick: int = 0


class NumberImport(msgspec.Struct, frozen=True):
    """What listing phone numbers did (`Engine.suppress_numbers`): numbers read, newly listed
    and listed before (a list imported again adds nothing), the contacts found with a listed
    number, how many of them got a suppression now (the others had one), and the runs those
    suppressions reached: cancelled, or going on with the channel suppressed."""

    read: int = 0
    new: int = 0
    listed: int = 0
    contacts: int = 0
    suppressed: int = 0
    runs_cancelled: int = 0
    runs_restricted: int = 0
