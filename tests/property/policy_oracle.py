"""An independent reading of the `[policy]` rules, to judge the gates' decisions by.

Written from the documented rules (docs/configuration.md, `[policy]`), not from the gate code:
- consent: a revoked consent refuses a send on its channel from its tick; on a channel in
  `consent_required`, so does any consent that is not granted, not yet valid, or expired;
- suppression: nothing goes out on a channel the contact is suppressed on;
- calling hours (voice) and the send window (email): a send goes out only while the window is
  open in the contact's local time, in every zone of the contact (its own, else every zone of
  its phone number's region, else `default_timezone`), on an allowed weekday that is no public
  holiday of `holidays`; otherwise it waits for the next opening;
- caps: at most `count` messages of the channel (the one being judged aside: a retry counts
  once) per rolling window of ticks, or per local calendar day or Monday-to-Sunday week in each
  zone; a send over a cap waits until the oldest counted message leaves the window or the next
  day or week begins (`defer`), or is skipped;
- the strictest verdict stands (fail, pause, skip, defer, allow), of two deferrals the later.

Local time is read from UTC offsets: the pieces of constant offset around a day are found by
sampling and bisection, so a window's opening on a day a DST change moves the clock is the
first instant the wall clock shows a time inside it, and a window the change skips over does
not open that day at all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import timezone as phone_zones

from dee.config import EngineConfig, FrequencyCap
from dee.kernel.contact import Contact
from dee.kernel.policy import Consent, SentMark

SECOND_MS, HOUR_MS, DAY_MS = 1000, 3_600_000, 86_400_000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STRICTNESS = ("allow", "defer", "skip", "pause", "fail")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DAYS = 400  # a window that opens in no zone's common time within this long never opens
Verdict = tuple[str, int | None]  # the verdict, and the tick a deferral waits for
ALLOW: Verdict = ("allow", None)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def contact_zones(contact: Contact, default: str) -> tuple[str, ...]:
    """The contact's own zone, else every zone of its phone number's region, else the default."""
    if contact.timezone and valid_zone(contact.timezone):
        return (contact.timezone,)
    try:
        number = phonenumbers.parse(contact.phone, None) if contact.phone else None
    except phonenumbers.NumberParseException:
        number = None
    found = sorted(z for z in phone_zones.time_zones_for_number(number) if valid_zone(z)) if number else []
    return tuple(found) or (default,)


# ---- local time ------------------------------------------------------------------------------


def local(zone: str, at_ms: int) -> datetime:
    return (EPOCH + timedelta(milliseconds=at_ms)).astimezone(ZoneInfo(zone))


def offset_ms(zone: str, at_ms: int) -> int:
    offset = local(zone, at_ms).utcoffset()
    assert offset is not None
    return offset // timedelta(milliseconds=1)


def midnight_ms(day: date) -> int:
    """The wall time `day` 00:00 read as if it were UTC."""
    return (day - date(1970, 1, 1)).days * DAY_MS


@functools.lru_cache(maxsize=16_384)
def offset_pieces(zone: str, day: date) -> tuple[tuple[int, int, int], ...]:
    """(from_ms, to_ms, offset_ms): pieces of constant UTC offset covering every instant whose
    local date in `zone` can be `day`. Offsets are sampled every 3 hours (no zone changes its
    offset twice that fast) and each change is bisected to the second it happens at."""
    lo, hi = midnight_ms(day) - 15 * HOUR_MS, midnight_ms(day) + DAY_MS + 15 * HOUR_MS
    pieces: list[tuple[int, int, int]] = []
    begin, current = lo, offset_ms(zone, lo)
    for t in range(lo, hi, 3 * HOUR_MS):
        b = min(t + 3 * HOUR_MS, hi)
        if offset_ms(zone, b) == current:
            continue
        a = t
        while b - a > SECOND_MS:
            m = (a + b) // (2 * SECOND_MS) * SECOND_MS
            a, b = (m, b) if offset_ms(zone, m) == current else (a, m)
        pieces.append((begin, b, current))
        begin, current = b, offset_ms(zone, b)
    pieces.append((begin, hi, current))
    return tuple(pieces)


def wall_spans(zone: str, day: date, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The instants [a, b) at which the wall clock in `zone` shows `day` and a time of day in
    [start_ms, end_ms) (milliseconds after midnight)."""
    base = midnight_ms(day)
    spans: list[tuple[int, int]] = []
    for p0, p1, offset in offset_pieces(zone, day):
        a, b = max(p0, base + start_ms - offset), min(p1, base + end_ms - offset)
        if a < b:
            if spans and spans[-1][1] == a:
                a = spans.pop()[0]
            spans.append((a, b))
    return spans


def day_start_ms(zone: str, day: date) -> int:
    """The first instant of the local date `day` in `zone`."""
    return wall_spans(zone, day, 0, DAY_MS)[0][0]


def intersect(xs: Sequence[tuple[int, int]], ys: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The common part of two sorted lists of disjoint spans."""
    out, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a < b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


@functools.lru_cache(maxsize=256)
def _holiday_calendar(country: str, subdivision: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision or None, years=year)


@dataclass(frozen=True)
class Hours:
    """A daily window [start, end) of the wall clock, on some weekdays, closed on public holidays."""

    start_ms: int
    end_ms: int
    days: frozenset[int]
    calendar: str | None

    @classmethod
    def of(cls, window: Sequence[str], days: Iterable[str], calendar: str | None) -> Hours:
        def ms(text: str) -> int:
            hours, minutes = text.split(":")
            return (int(hours) * 60 + int(minutes)) * 60_000

        return cls(ms(window[0]), ms(window[1]), frozenset(WEEKDAYS.index(d) for d in days), calendar)

    def open_on(self, day: date) -> bool:
        if day.weekday() not in self.days:
            return False
        if self.calendar:
            country, _, subdivision = self.calendar.partition("-")
            return day not in _holiday_calendar(country, subdivision, day.year)
        return True

    def is_open(self, zone: str, at_ms: int) -> bool:
        """Whether the wall clock in `zone` shows an open day and a time inside the window."""
        wall = local(zone, at_ms)
        of_day = ((wall.hour * 60 + wall.minute) * 60 + wall.second) * 1000 + wall.microsecond // 1000
        return self.open_on(wall.date()) and self.start_ms <= of_day < self.end_ms

    def next_opening(self, zones: Sequence[str], at_ms: int) -> int | None:
        """The first instant at or after `at_ms` at which the window is open in every zone."""
        for days in (9, MAX_DAYS):
            joint = [(at_ms, at_ms + days * DAY_MS)]
            for zone in zones:
                first = local(zone, at_ms).date()
                spans = [
                    span for k in range(-1, days + 2) if self.open_on(day := first + timedelta(days=k))
                    for span in wall_spans(zone, day, self.start_ms, self.end_ms)
                ]  # fmt: skip
                joint = intersect(joint, spans)
            if joint:
                return joint[0][0]
        return None


# ---- the gates' rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One send to judge: its channel and tick, the deployment's time, the contact's zones and
    the facts in force (`sent`: the contact's other messages, this one left out)."""

    channel: str
    tick: int
    tick_ms: int
    epoch_ms: int
    zones: tuple[str, ...]
    consents: Mapping[str, Consent]
    suppressed: frozenset[str]
    sent: tuple[SentMark, ...]

    @property
    def at_ms(self) -> int:
        return self.epoch_ms + self.tick * self.tick_ms


@dataclass(frozen=True)
class Rules:
    """The `[policy]` in force for one plan (its `[policy.plans.<id>]` overrides applied)."""

    consent_required: frozenset[str]
    on_consent_missing: str
    on_suppressed: str
    calling: Hours | None
    sending: Hours | None
    caps: tuple[FrequencyCap, ...]
    on_capped: str
    default_timezone: str

    @classmethod
    def of(cls, config: EngineConfig, plan_id: str) -> Rules:
        policy = config.policy.for_plan(plan_id)
        calling = Hours.of(config.channels.voice.calling_hours, policy.calling_days, policy.holidays)
        sending = Hours.of(policy.send_window, policy.send_days, policy.holidays) if policy.send_window else None
        return cls(
            frozenset(policy.consent_required), policy.on_consent_missing, policy.on_suppressed,
            calling if policy.calling_hours else None, sending, policy.frequency_caps(), policy.on_capped,
            policy.default_timezone,
        )  # fmt: skip

    def verdicts(self, ask: Ask) -> dict[str, Verdict]:
        """What each gate must answer, by gate name (a gate missing here must allow)."""
        out = {"consent": self.consent(ask), "suppression": self.suppression(ask)}
        if self.calling is not None:
            out["calling-hours"] = window_verdict(self.calling, ask) if ask.channel == "voice" else ALLOW
        if self.sending is not None:
            out["send-window"] = window_verdict(self.sending, ask) if ask.channel == "email" else ALLOW
        if self.caps:
            out["frequency-cap"] = self.capped(ask)
        return out

    def consent(self, ask: Ask) -> Verdict:
        consent = ask.consents.get(ask.channel)
        revoked = consent is not None and consent.status == "revoked" and consent.tick <= ask.tick
        granted = consent is not None and consent.status == "granted" and consent.tick <= ask.tick and (
            consent.expires_tick is None or ask.tick < consent.expires_tick)  # fmt: skip
        refused = revoked or (ask.channel in self.consent_required and not granted)
        return (self.on_consent_missing, None) if refused else ALLOW

    def suppression(self, ask: Ask) -> Verdict:
        return (self.on_suppressed, None) if ask.channel in ask.suppressed else ALLOW

    def capped(self, ask: Ask) -> Verdict:
        opens = [t for cap in self.caps if cap.channel == ask.channel and (t := cap_opens(cap, ask)) is not None]
        if not opens:
            return ALLOW
        return ("skip", None) if self.on_capped == "skip" else ("defer", max(*opens, ask.tick + 1))


def window_verdict(hours: Hours, ask: Ask) -> Verdict:
    """Allow inside the window (in every zone); else defer to the first tick at or after its
    next opening; fail (closed) when it never opens."""
    if all(hours.is_open(zone, ask.at_ms) for zone in ask.zones):
        return ALLOW
    opening = hours.next_opening(ask.zones, ask.at_ms)
    if opening is None:
        return ("fail", None)
    return ("defer", max(ask.tick + ceil_div(opening - ask.at_ms, ask.tick_ms), ask.tick + 1))


def cap_opens(cap: FrequencyCap, ask: Ask) -> int | None:
    """None when the cap allows a message at the ask's tick; else the tick it next allows one."""
    sent = [m for m in ask.sent if m.channel == cap.channel]
    if cap.window_ms is not None:
        width = ceil_div(cap.window_ms, ask.tick_ms)
        counted = sorted(m.tick for m in sent if m.tick > ask.tick - width)
        return counted[len(counted) - cap.count] + width if len(counted) >= cap.count else None
    opens: int | None = None
    length = 7 if cap.period == "week" else 1
    for zone in ask.zones:
        today = local(zone, ask.at_ms).date()
        first = today - timedelta(days=today.weekday()) if cap.period == "week" else today
        begins, ends = day_start_ms(zone, first), day_start_ms(zone, first + timedelta(days=length))
        if sum(1 for m in sent if ask.epoch_ms + m.tick * ask.tick_ms >= begins) >= cap.count:
            tick = ceil_div(ends - ask.epoch_ms, ask.tick_ms)
            opens = tick if opens is None else max(opens, tick)
    return opens


def strictest(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict that stands: the strictest; of two deferrals, the later."""
    final = ALLOW
    for verdict in verdicts:
        rank, best = STRICTNESS.index(verdict[0]), STRICTNESS.index(final[0])
        if rank > best or (verdict[0] == final[0] == "defer" and (verdict[1] or 0) > (final[1] or 0)):
            final = verdict
    return final
