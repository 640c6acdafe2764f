"""Inputs: everything from outside that can change a run, each stamped with its tick.

The tick is the logical time at which the engine accepted the input; it is part of the input,
journaled with it, and the only notion of time the kernel ever sees.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import msgspec

from dee.kernel.contact import Contact
from dee.kernel.policy import PolicyFacts, SentMark

ErrorKind = Literal["transient", "permanent", "rate_limited", "soft_bounce", "hard_bounce", "budget_exhausted"]


class Input(msgspec.Struct, frozen=True, tag_field="kind", rename="camel"):
    tick: int


class Start(Input, tag="start", frozen=True):
    """Enrols a contact. `start_tick` is when the first step runs; `tick` when it was accepted."""

    run_id: str
    plan_id: str
    plan_version: int
    plan_checksum: str
    contact: Contact
    variables: dict[str, Any]
    start_tick: int
    facts: PolicyFacts = PolicyFacts()  # the contact's consents and channel suppressions at enrolment
    epoch_ms: int = 0  # the deployment's tick 0 as Unix milliseconds: what a tick is in local time


class Event(Input, tag="event", frozen=True):
    """An external event (`email.opened`, `call.completed`, ...) for this run."""

    event_id: str
    type: str
    step_id: str | None = None
    message_id: str | None = None
    data: dict[str, Any] = {}
    occurred_at: str | None = None


class ChannelResult(Input, tag="result", frozen=True):
    """A channel adapter's answer to a dispatch, matched by idempotency key."""

    idempotency_key: str
    status: Literal["delivered", "failed"]
    error_kind: ErrorKind | None = None
    error: str | None = None
    outcome: str | None = None
    data: dict[str, Any] = {}

    @property
    def retry_after_ms(self) -> int | None:
        """How long a `rate_limited` failure asks to wait (`data.retryAfterMs`, set by the
        dispatcher's limits or an adapter); None when it names no time, or not a valid one."""
        after = self.data.get("retryAfterMs")
        return after if isinstance(after, int) and not isinstance(after, bool) and after >= 0 else None


class Pause(Input, tag="pause", frozen=True):
    command_id: str = ""


class Resume(Input, tag="resume", frozen=True):
    command_id: str = ""


class Cancel(Input, tag="cancel", frozen=True):
    reason: str = ""
    command_id: str = ""


class Retry(Input, tag="retry", frozen=True):
    command_id: str = ""


class Suppressed(Input, tag="suppressed", frozen=True):
    """The contact was put on a suppression list that covers this run: the run is cancelled."""

    level: Literal["global", "channel", "plan", "regulatory"]
    reason: str
    source: str = ""


class ContactChanged(Input, tag="contact", frozen=True):
    """Contact-level state changed outside this run (a hard bounce seen by another run, an
    unsubscribe, new attributes); fields left None are unchanged."""

    unsubscribed: bool | None = None
    bounced: bool | None = None
    attributes: dict[str, Any] | None = None


class PolicyChanged(Input, tag="policy", frozen=True, omit_defaults=True):
    """The contact's policy facts changed (a consent recorded, a channel suppressed): the facts
    as they now are, replacing the run's (but for the sends it has noted, which it keeps).
    Like `SendsNoted`, it takes effect before a timer of the same tick: facts recorded at a tick
    are in force at that tick, unless `after_timers` (see `FACT_INPUTS` in the machine)."""

    facts: PolicyFacts
    after_timers: bool = False  # it reached the run after the run's timers of its tick had fired


class SendsNoted(Input, tag="sends", frozen=True, omit_defaults=True):
    """Messages the contact's other runs sent (in this tick or since the run last ran): what a
    frequency cap counts across runs."""

    sends: tuple[SentMark, ...]
    after_timers: bool = False  # as in `PolicyChanged`


class ReplayRecorded(Input, tag="replay", frozen=True):
    """The verdict of a non-dry-run replay, journaled in the run's chain; changes nothing else."""

    identical: bool
    fields: list[str] = []
    reissued: int = 0


AnyInput = (
    Start
    | Event
    | ChannelResult
    | Pause
    | Resume
    | Cancel
    | Retry
    | Suppressed
    | ContactChanged
    | PolicyChanged
    | SendsNoted
    | ReplayRecorded
)


_BY_KIND: dict[str, type[Input]] = {t.__struct_config__.tag: t for t in typing.get_args(AnyInput)}


def input_from_builtins(value: dict[str, Any]) -> AnyInput:
    """An input from its JSON form (as the audit log holds it). Converting to the member its
    `kind` names is twenty times faster than converting to the union (replay converts every
    recorded input); a missing or unknown kind gets the union's own validation error."""
    kind = value.get("kind") if isinstance(value, dict) else None
    member = _BY_KIND.get(kind) if isinstance(kind, str) else None
    return msgspec.convert(value, member or AnyInput)  # type: ignore[return-value]
