"""The logical clock: converting spans of time to whole ticks (durations: `Duration.to_ticks`)."""

from __future__ import annotations


def ms_to_ticks(ms: int, tick_interval_ms: int) -> int:
    """At least one tick, rounded up: a delay never ends early and never within its own tick."""
    return max(1, -(-ms // tick_interval_ms))

