"""How a failed channel action is retried: per error kind, with the same idempotency key."""

from __future__ import annotations

from typing import Literal

import msgspec

from dee.kernel.clock import ms_to_ticks
from dee.kernel.state import PendingDispatch

HOUR_MS = 3_600_000


class RetryPolicy(msgspec.Struct, frozen=True):
    """SPEC section 6: connection failures back off exponentially, 3 attempts in all; soft
    bounces are retried up to 3 times over 24 hours; a rate limit waits for the next tick, or
    for as long as the refusal asks (recorded, and capped so a stuck provider ends in `failed`,
    never an endless loop). An exhausted budget (`on_budget`) pauses the run with its send held,
    or fails the step; the kernel does that itself, since neither is a retry."""

    transient_attempts: int = 3
    transient_backoff_ms: int = 30_000
    soft_bounce_retries: int = 3
    soft_bounce_interval_ms: int = 8 * HOUR_MS
    rate_limit_retries: int = 1000
    on_budget: Literal["pause", "fail"] = "pause"


class PlannedRetry(msgspec.Struct, frozen=True):
    tick: int
    pending: PendingDispatch


def next_retry(
    policy: RetryPolicy, kind: str, pending: PendingDispatch, at: int, tick_ms: int, retry_after_ms: int | None = None
) -> PlannedRetry | None:
    """The retry to schedule after a failure of `kind`, or None when the step must fail.
    `retry_after_ms`: how long a rate limit asks to wait (whole ticks, rounded up, at least one)."""
    if kind == "transient" and pending.attempt < policy.transient_attempts:
        delay = ms_to_ticks(policy.transient_backoff_ms * 2 ** (pending.attempt - 1), tick_ms)
        return PlannedRetry(at + delay, msgspec.structs.replace(pending, attempt=pending.attempt + 1))
    if kind == "soft_bounce" and pending.attempt <= policy.soft_bounce_retries:
        delay = ms_to_ticks(policy.soft_bounce_interval_ms, tick_ms)
        return PlannedRetry(at + delay, msgspec.structs.replace(pending, attempt=pending.attempt + 1))
    if kind == "rate_limited" and pending.rate_limited < policy.rate_limit_retries:
        delay = 1 if retry_after_ms is None else ms_to_ticks(retry_after_ms, tick_ms)
        return PlannedRetry(at + delay, msgspec.structs.replace(pending, rate_limited=pending.rate_limited + 1))
    return None
