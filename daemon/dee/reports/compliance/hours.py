"""Each call's local time against the calling hours, judged as the calling-hours gate judges it.

A call's moment is its tick in the deployment's time: the run's epoch plus `tick *
tick_interval_ms`, as the gate computed it. The entry's wall-clock stamp is not used: under a
manual clock (or a replay, or a backlog) it says when the engine wrote, not when the call rang.

The rules are the gate's (`dee_policy.hours`): the window of `channels.voice.calling_hours` on the
contact's local day, on `[policy] calling_days`, not on a public holiday of `[policy] holidays`,
with the same reasons. They are restated here rather than imported: the core never imports a
plugin (the report must also work, and judge calls, with `dee_policy` disabled), and a report
that re-derives the judgement is a check on the gate, not its echo; a test holds the two to
agree. The zones are the contact's own, else those the gate recorded in its facts for that
send (a phone number may span several: the call is within hours only if it is in each), else
`[policy] default_timezone`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import msgspec

from dee.kernel.contact import Contact
from dee.reports.compliance.sends import SendRecord

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CallingRules(msgspec.Struct, frozen=True):
    """What calls are judged against (the calling-hours gate's configuration), the zone of a
    contact without one, and the length of a tick."""

    hours: tuple[str, str]
    days: tuple[str, ...] = WEEKDAYS
    holidays: str | None = None  # a country, or country-region ("US-CA")
    default_timezone: str = "UTC"
    tick_interval_ms: int = 1000


class CallCheck(msgspec.Struct, frozen=True):
    """A call's local time in each zone it was judged in (None: an unknown zone), and whether it
    was within the calling hours in all of them (None: it cannot be judged; `reason` says why
    not, or why it was outside)."""

    run_id: str
    contact_id: str
    step_id: str | None
    tick: int
    moment: str | None  # the tick as a UTC time (the run's epoch + tick * tick_interval_ms)
    timestamp: str  # the entry's wall-clock stamp: when it was written, not what the call is judged by
    zones_from: str  # "contact", "calling-hours gate" or "default"
    local_times: dict[str, str | None]
    within_hours: bool | None
    reason: str | None = None


def moment_of(tick: int, epoch_ms: int, tick_interval_ms: int) -> datetime:
    """When a tick is, in UTC."""
    return datetime.fromtimestamp((epoch_ms + tick * tick_interval_ms) / 1000, UTC)


def zones_of(contact: Contact | None, gate_zones: Sequence[str] | None, default: str) -> tuple[list[str], str]:
    """The zones to judge a call in, and where they came from."""
    if contact is not None and contact.timezone:
        return [contact.timezone], "contact"
    if gate_zones:
        return list(gate_zones), "calling-hours gate"
    return [default], "default"


@lru_cache(maxsize=256)
def _calendar(region: str, year: int) -> holidays.HolidayBase:
    country, _, subdivision = region.partition("-")
    try:
        return holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    except NotImplementedError:
        raise ValueError(f"policy.holidays {region!r}: no holiday calendar of that country or region") from None


def closed_on(day: date, rules: CallingRules) -> str | None:
    """Why calls may not ring at all on this local date (None: they may, in the window)."""
    weekday = WEEKDAYS[day.weekday()]
    if weekday not in rules.days:
        return f"closed on {weekday}"
    name = _calendar(rules.holidays, day.year).get(day) if rules.holidays else None
    return f"public holiday ({name})" if name else None


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def judge(moment: datetime, zone: ZoneInfo, rules: CallingRules) -> tuple[datetime, str | None]:
    """The local time of `moment` in `zone`, and why the window was closed then (None: open)."""
    start, end = (time.fromisoformat(t) for t in rules.hours)
    local = moment.astimezone(zone)
    why = closed_on(local.date(), rules)
    if why is None and not start <= local.time() < end:
        why = f"outside {start:%H:%M}-{end:%H:%M} (local {local:%H:%M})"
    return local, why


def check_call(send: SendRecord, epoch_ms: int | None, zones: Sequence[str], zones_from: str, rules: CallingRules) -> CallCheck:
    """The call of `send` judged in every zone (`epoch_ms` None: the run's start is not on record)."""

    def checked(moment: str | None, local_times: dict[str, str | None], within: bool | None, reason: str | None) -> CallCheck:
        return CallCheck(send.run_id, send.contact_id, send.step_id, send.tick, moment, send.timestamp, zones_from,
                         local_times, within, reason)  # fmt: skip

    if epoch_ms is None:
        return checked(None, dict.fromkeys(zones), None, "the run's start (its epoch) is not on record")
    moment = moment_of(send.tick, epoch_ms, rules.tick_interval_ms)
    local_times: dict[str, str | None] = {}
    reasons: list[str] = []
    unknown: list[str] = []
    for name in zones:
        zone = _zone(name)
        if zone is None:
            local_times[name] = None
            unknown.append(name)
            continue
        local, why = judge(moment, zone, rules)
        local_times[name] = local.isoformat()
        if why is not None:
            reasons.append(why if len(zones) == 1 else f"{why} in {name}")
    if unknown:
        return checked(moment.isoformat(), local_times, None, f"unknown time zone {', '.join(unknown)}")
    return checked(moment.isoformat(), local_times, not reasons, reasons[0] if reasons else None)
