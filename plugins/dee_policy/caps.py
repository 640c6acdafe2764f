"""Frequency caps: at most so many messages on a channel per period, across every run of a contact.

The gate counts what `request.facts.sends` holds: the messages every run of the contact sent,
journaled with the runs (the engine keeps them as far back as `history_ms` asks), so replay
counts the same. A retry resends the same message and is not counted again. A period is a
rolling window of ticks, or the contact's local calendar day or ISO week, in the zones the
calling hours use (a number spanning several zones is capped in each of them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from dee.plugin.contracts import GateRequest, PolicyGate, SentMark, Verdict
from dee_policy.hours import zones_for

DAY_MS = 86_400_000


class FrequencyCap(Protocol):
    """One cap of `[policy] caps` (`PolicyConfig.frequency_caps()`): at most `count` messages on
    `channel` per local calendar `period` (day, week) or per rolling `window_ms`."""

    text: str
    channel: str
    count: int
    period: Literal["day", "week"] | None
    window_ms: int | None


class FrequencyCapGate(PolicyGate):
    """A send over a cap waits until the cap allows it (`defer`: the oldest counted message
    leaves the window, or the next local day or week begins), or is skipped."""

    name = "frequency-cap"

    def __init__(self, caps: Sequence[FrequencyCap], on_capped: Literal["defer", "skip"], default_timezone: str) -> None:
        self.caps = tuple(caps)
        self.on_capped = on_capped
        self.default_timezone = default_timezone
        # a calendar week reaches back at most 8 days from any moment in any zone, a day 2
        self.history_ms = max((c.window_ms or (8 if c.period == "week" else 2) * DAY_MS for c in self.caps), default=0)

    def check(self, request: GateRequest) -> Verdict:
        caps = [c for c in self.caps if c.channel == request.channel]
        if not caps:
            return Verdict.allow()
        sent = [m for m in request.facts.sends if m.channel == request.channel and m.message_id != request.message_id]
        counted: list[dict[str, Any]] = []
        until: int | None = None
        over: list[str] = []
        for cap in caps:
            count, opens = self.count(cap, sent, request)
            counted.append({"cap": cap.text, "sent": count})
            if opens is not None:
                over.append(cap.text)
                until = opens if until is None else max(until, opens)
        if until is None:
            return Verdict.allow(caps=counted)
        reason = f"frequency_capped: {', '.join(over)}"
        if self.on_capped == "skip":
            return Verdict.skip(reason, caps=counted)
        return Verdict.defer(max(until, request.tick + 1), reason, caps=counted)

    def count(self, cap: FrequencyCap, sent: Sequence[SentMark], request: GateRequest) -> tuple[int, int | None]:
        """How many counted messages the cap sees now, and the tick it next allows one (None:
        it allows one now)."""
        tick_ms = request.tick_interval_ms
        if cap.window_ms is not None:
            width = math.ceil(cap.window_ms / tick_ms)
            ticks = sorted(m.tick for m in sent if m.tick > request.tick - width)
            if len(ticks) < cap.count:
                return len(ticks), None
            return len(ticks), ticks[len(ticks) - cap.count] + width
        most, opens = 0, None
        contact = request.contact
        for name in zones_for(contact.timezone, contact.phone, self.default_timezone):
            begins, ends = _period(cap.period or "day", request.moment_ms, ZoneInfo(name))
            inside = [m for m in sent if request.epoch_ms + m.tick * tick_ms >= begins]
            most = max(most, len(inside))
            if len(inside) >= cap.count:
                tick = math.ceil((ends - request.epoch_ms) / tick_ms)
                opens = tick if opens is None else max(opens, tick)
        return most, opens


def _period(period: str, moment_ms: int, zone: ZoneInfo) -> tuple[int, int]:
    """The local calendar day or ISO week holding `moment_ms`, as Unix ms [begins, ends)."""
    local = datetime.fromtimestamp(moment_ms / 1000, UTC).astimezone(zone).date()
    first = local - timedelta(days=local.weekday()) if period == "week" else local
    after = first + timedelta(days=7 if period == "week" else 1)

    def ms(day: Any) -> int:
        return int(datetime.combine(day, time(0), zone).astimezone(UTC).timestamp() * 1000)

    return ms(first), ms(after)
