"""The state of one run, as the kernel sees it: an immutable msgspec Struct.

Everything the kernel needs to advance a run lives here, so a run can be loaded, advanced and
saved as one encoded blob. The shell never edits it except through `advance` (and the audit
chain head, which the shell sets when it seals the entries the kernel drafted).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from dee.kernel.contact import Contact
from dee.kernel.inputs import ChannelResult
from dee.kernel.policy import PolicyFacts
from dee.plan.conditions import VisibleEvent

RunStatus = Literal["pending", "active", "waiting", "paused", "completed", "failed", "cancelled"]
TimerKind = Literal["start", "wait", "retry", "policy"]  # policy: a send a gate deferred (or paused)

TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "cancelled"})
ZERO_CHECKSUM = "0" * 64


class StepResult(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """What one execution of a step produced; the unit replay compares field by field."""

    step_id: str
    type: str
    tick: int
    outcome: str
    target_tick: int | None = None
    idempotency_key: str | None = None
    content_hash: str | None = None
    policy_verdict: str | None = None


class PendingDispatch(msgspec.Struct, frozen=True):
    """A channel action handed out and not yet answered; kept so retries resend it unchanged."""

    channel: str
    idempotency_key: str
    message_id: str
    content_hash: str
    message: dict[str, Any]
    attempt: int = 1
    rate_limited: int = 0
    budget_paused: int = 0  # times an exhausted budget paused the run with this send held
    policy_verdict: str | None = None  # what the gates said of this send (None: no gate is installed)


class ContextMark(msgspec.Struct, frozen=True):
    """How much of the run's context its audit log already holds, as of its last `step.entered`:
    the next record carries only what came after (the log grows linearly in the run's steps)."""

    results: int = 0  # results recorded
    events: int = 0  # visible events recorded
    contact: bool = False  # the contact as it is now is on record (run.started, or a record since)


class RunState(msgspec.Struct, frozen=True):
    run_id: str
    plan_id: str
    plan_version: int
    contact: Contact
    variables: dict[str, Any]
    status: RunStatus
    start_tick: int
    current_tick: int
    current_step: str | None = None
    step_tick: int = 0
    wake_tick: int | None = None
    timer: TimerKind | None = None
    dispatch: PendingDispatch | None = None
    wait_target: int | None = None
    # a channel step that was handed over and now waits for its outcome from outside (a call's
    # final status): the idempotency key and content hash its result will carry
    channel_wait: tuple[str, str] | None = None
    wait_verdict: str | None = None  # the gates' verdict on the send `channel_wait` waits on
    paused_from: RunStatus | None = None
    held: tuple[ChannelResult, ...] = ()
    results: tuple[StepResult, ...] = ()
    events: tuple[VisibleEvent, ...] = ()
    steps_completed: int = 0
    run_attempt: int = 1
    key_attempt: int = 1
    outcome: str | None = None
    completed_tick: int | None = None
    seq: int = 0
    audit_head: str = ZERO_CHECKSUM
    facts: PolicyFacts = PolicyFacts()  # the contact's consents and channel suppressions, as journaled
    epoch_ms: int = 0  # the deployment's tick 0 (Unix ms), journaled with the run's start
    recorded: ContextMark = ContextMark()  # what of the context the audit log already holds
    # written by `start_run` and not advanced since: nothing of its start tick has been applied
    # yet, so a fact of that tick still comes ahead of the tick's timers (`settled_tick`)
    unadvanced: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def due(self, tick: int) -> bool:
        """True when a timer of this run fires at or before `tick` (paused runs never wake)."""
        return self.status != "paused" and self.wake_tick is not None and self.wake_tick <= tick
