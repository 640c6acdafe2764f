"""Calling hours: when a call may ring, in the contact's local time, as a pure function of ticks.

A tick is a moment: the deployment's epoch plus `tick * tick_interval_ms` (both journaled with
the run), so the same tick is the same local time on every replay. A window is a daily span of
wall-clock time (08:00-21:00 by default) on allowed weekdays, closed on the public holidays of a
configured country or region (the `holidays` package). It is computed per local day, so a DST
change moves the window with the clock on the wall, as a person would expect.

Where a contact's zone is not known, the zones of its phone number's region stand in
(`phonenumbers`); a number that spans several zones (much of North America) may ring only when
the window is open in every one of them. Without either, a configured default zone applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import timezone as phone_zones

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DAYS_AHEAD = 400  # a window that never opens within a year and a bit is a configuration error


class Window:
    """The daily calling window, its weekdays and its holiday calendar."""

    def __init__(self, start: str, end: str, days: Sequence[str] = WEEKDAYS, country: str | None = None) -> None:
        self.start, self.end = time.fromisoformat(start), time.fromisoformat(end)
        if not self.start < self.end:
            raise ValueError(f"a calling window must start before it ends ({start}-{end})")
        unknown = sorted(set(days) - set(WEEKDAYS))
        if unknown or not days:
            raise ValueError(f"calling days are among {', '.join(WEEKDAYS)} (got {', '.join(unknown) or 'none'})")
        self.days = frozenset(WEEKDAYS.index(d) for d in days)
        self.country, _, self.subdivision = (country or "").partition("-")
        if self.country:
            holidays.country_holidays(self.country, subdiv=self.subdivision or None)  # an unknown one fails here

    def closed_on(self, day: date) -> str | None:
        """Why calls may not ring at all on this local date (None: they may, in the window)."""
        if day.weekday() not in self.days:
            return f"closed on {WEEKDAYS[day.weekday()]}"
        if self.country:
            name = _calendar(self.country, self.subdivision, day.year).get(day)
            if name:
                return f"public holiday ({name})"
        return None

    def next_open(self, at: datetime, zone: ZoneInfo) -> tuple[datetime, str | None]:
        """The first moment at or after `at` (UTC) that the window is open in `zone`, and why it
        was closed at `at` (None when it is open then)."""
        local = at.astimezone(zone)
        why = self.closed_on(local.date())
        if why is None and self.start <= local.time() < self.end:
            return at, None
        if why is None:
            why = f"outside {self.start:%H:%M}-{self.end:%H:%M} (local {local:%H:%M})"
        day = local.date() if local.time() < self.start else local.date() + timedelta(days=1)
        for _ in range(MAX_DAYS_AHEAD):
            if self.closed_on(day) is None:
                opening = first_moment(day, self.start, zone)
                if opening.astimezone(zone).time() < self.end:  # else a DST change skips the whole window that day
                    return opening, why
            day += timedelta(days=1)
        raise ValueError("the calling window never opens: check its days and holidays")


def first_moment(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The first moment (UTC) at which the clock on the wall in `zone` shows `day` at `wall` or
    later. Where a DST change skips `wall` that day (02:30 when clocks jump from 02:00 to
    03:00), that is the moment of the jump, not `datetime.combine`'s reading of a time that
    does not exist (which lands as far after the jump as `wall` is after 02:00)."""
    naive = datetime.combine(day, wall)
    moment = naive.replace(tzinfo=zone).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) == naive:
        return moment
    # in the gap: fold=1 reads the missing time with the offset after the jump, a moment before it
    before, after = int(naive.replace(tzinfo=zone, fold=1).timestamp()), int(moment.timestamp())
    while after - before > 1:  # the clock shows a time before `wall` at `before`, `wall` or later at `after`
        middle = (before + after) // 2
        shown = datetime.fromtimestamp(middle, UTC).astimezone(zone).replace(tzinfo=None)
        before, after = (before, middle) if shown >= naive else (middle, after)
    return datetime.fromtimestamp(after, UTC)


@lru_cache(maxsize=256)
def _calendar(country: str, subdivision: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision or None, years=year)


@lru_cache(maxsize=65_536)
def zones_for(timezone: str | None, phone: str | None, default: str) -> tuple[str, ...]:
    """The zones a call to this contact may ring in: its own, else its phone region's, else the default."""
    if timezone and _zone(timezone) is not None:
        return (timezone,)
    if phone:
        try:
            number = phonenumbers.parse(phone, None)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None:
            found = tuple(sorted(z for z in phone_zones.time_zones_for_number(number) if _zone(z) is not None))
            if found:
                return found
    return (default,)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def next_opening(window: Window, at: datetime, zones: Sequence[str]) -> tuple[datetime, str | None]:
    """The first moment at or after `at` when the window is open in every zone, and why it was
    closed at `at` (None: open now)."""
    first_reason: str | None = None
    moment = at
    for _ in range(MAX_DAYS_AHEAD):
        latest = moment
        for name in zones:
            zone = _zone(name)
            assert zone is not None
            opening, why = window.next_open(moment, zone)
            if why is not None and first_reason is None and moment == at:
                first_reason = why if len(zones) == 1 else f"{why} in {name}"
            latest = max(latest, opening)
        if latest == moment:
            return moment, first_reason
        moment = latest
    raise ValueError("no moment opens the calling window in every zone of the contact")


class Openings:
    """The window's next opening from a moment in some zones, as the gate states it (the moment
    and the opening in ISO form, why it was closed, the seconds to wait), worked out once per
    moment and zones: the runs of a campaign call at the same ticks, and most contacts of a
    deployment share a handful of zones, so the calendar arithmetic would otherwise be done
    again for every one of them. A pure function of its arguments, kept by the gate that owns
    it and forgotten whole once it holds `KEPT` answers."""

    KEPT = 4096

    def __init__(self, window: Window) -> None:
        self.window = window
        self._known: dict[tuple[int, tuple[str, ...]], tuple[str, str | None, str, float]] = {}

    def at(self, moment_ms: int, zones: tuple[str, ...]) -> tuple[str, str | None, str, float]:
        key = (moment_ms, zones)
        known = self._known.get(key)
        if known is None:
            at = datetime.fromtimestamp(moment_ms / 1000, UTC)
            opening, why = next_opening(self.window, at, zones)
            known = (at.isoformat(), why, opening.isoformat(), (opening - at).total_seconds())
            if len(self._known) >= self.KEPT:
                self._known.clear()
            self._known[key] = known
        return known

    def __len__(self) -> int:
        return len(self._known)
