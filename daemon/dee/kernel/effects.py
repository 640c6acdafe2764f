"""Effects: what the kernel asks the shell to do after the tick commits."""

from __future__ import annotations

from typing import Any

import msgspec


class DispatchRequest(msgspec.Struct, frozen=True, rename="camel"):
    """A channel action for an adapter: never provider details, always the idempotency key."""

    run_id: str
    step_id: str
    channel: str
    idempotency_key: str
    message_id: str
    attempt: int
    message: dict[str, Any]
    tick: int
    dispatch_no: int = 1  # how many times this key has been handed out (retries, rate limits)
    contact_id: str = ""  # whose the action is (a callback from the provider is routed by it)
    plan_id: str = ""  # the run's plan (what a budget of one plan counts)


class ContactFlagged(msgspec.Struct, frozen=True, rename="camel"):
    """A contact-level flag changed (hard bounce): the shell stores it and tells the contact's
    other runs, as a `ContactChanged` input at the same tick."""

    contact_id: str
    flag: str
    tick: int


Effect = DispatchRequest | ContactFlagged
