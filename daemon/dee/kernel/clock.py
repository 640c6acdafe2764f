"""The logical clock: ticks, and the conversions between durations, ticks and wall time."""

from __future__ import annotations

from dee.plan.model import Duration

DEFAULT_TICK_INTERVAL_MS = 1000


def duration_ticks(duration: Duration, tick_interval_ms: int) -> int:
    """Ticks a duration lasts, rounded up so a wait never ends early."""
    return duration.to_ticks(tick_interval_ms)


def ms_to_ticks(ms: int, tick_interval_ms: int) -> int:
    return max(1, -(-ms // tick_interval_ms))


def tick_to_epoch_ms(tick: int, epoch_ms: int, tick_interval_ms: int) -> int:
    """Wall time of a tick in `wall` mode; informational only, never read by the kernel."""
    return epoch_ms + tick * tick_interval_ms
