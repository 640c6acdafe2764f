"""What a step type tells the kernel after it looked at its context.

Step types never change run state themselves: they return one of these values and the kernel
applies it, writes the audit entries and enforces the status machine. That keeps every plugin,
built-in or third-party, inside the determinism rules.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Done(msgspec.Struct, frozen=True):
    """The step finished with `outcome`; go to `goto` if given, else follow the transitions."""

    outcome: str
    goto: str | None = None
    data: dict[str, Any] = {}
    action: str = "step.executed"


class Sleep(msgspec.Struct, frozen=True):
    """Wait until `until_tick`; the step's `on_timer` is called when it fires."""

    until_tick: int


class Send(msgspec.Struct, frozen=True):
    """Dispatch `message` on `channel`; the kernel adds the idempotency key and waits for the
    result, retrying with the same key per the retry policy."""

    channel: str
    message: dict[str, Any]
    content_hash: str


class Finish(msgspec.Struct, frozen=True):
    """End the run as `completed` with `outcome` (an `end` step)."""

    outcome: str


class Fail(msgspec.Struct, frozen=True):
    """The step failed: the run moves to `failed` with this error recorded."""

    error: str
    data: dict[str, Any] = {}


StepOutcome = Done | Sleep | Send | Finish | Fail
