"""The compliance report's judgement of a call: its local time comes from its tick and the run's
epoch (never the entry's wall-clock stamp), in every zone it is judged in, and it agrees with the
calling-hours gate (`dee_policy.hours`) at the window's edges, across DST changes, on public
holidays and on days without calls."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dee.config import MANUAL_EPOCH, parse_epoch
from dee.kernel.contact import Contact
from dee.reports.compliance import CallingRules, SendRecord, check_call
from dee.reports.compliance.hours import zones_of
from dee_policy.hours import Window, next_opening

EPOCH_MS = parse_epoch(MANUAL_EPOCH)  # 2026-01-05T12:00:00Z, a Monday
NEW_YORK, LOS_ANGELES, TOKYO, BERLIN = "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin"
EVERY_DAY = CallingRules(("08:00", "21:00"))


def tick_of(utc: str, interval_ms: int = 1000) -> int:
    """The tick of a UTC moment under EPOCH_MS."""
    moment_ms = int(datetime.fromisoformat(utc).timestamp() * 1000)
    assert (moment_ms - EPOCH_MS) % interval_ms == 0
    return (moment_ms - EPOCH_MS) // interval_ms


def call(tick: int, timestamp: str = "2026-12-03T17:00:00.000+00:00") -> SendRecord:
    return SendRecord("r1", "c1", "call", "voice", tick, timestamp, "k", 1, "granted")


@pytest.mark.parametrize(("utc", "zone", "within", "local"), [
    ("2026-07-01T13:00:00+00:00", NEW_YORK, True, "2026-07-01T09:00:00-04:00"),   # EDT, UTC-4
    ("2026-07-01T11:59:00+00:00", NEW_YORK, False, "2026-07-01T07:59:00-04:00"),
    ("2026-01-16T01:30:00+00:00", NEW_YORK, True, "2026-01-15T20:30:00-05:00"),   # EST, UTC-5
    ("2026-01-16T02:00:00+00:00", NEW_YORK, False, "2026-01-15T21:00:00-05:00"),  # the end is excluded
    ("2026-01-15T08:00:00+00:00", BERLIN, True, "2026-01-15T09:00:00+01:00"),
])  # fmt: skip
def test_a_call_is_judged_by_the_local_time_of_its_tick(utc: str, zone: str, within: bool, local: str) -> None:
    check = check_call(call(tick_of(utc)), EPOCH_MS, [zone], "contact", EVERY_DAY)
    assert (check.moment, check.local_times, check.within_hours) == (datetime.fromisoformat(utc).isoformat(), {zone: local}, within)
    assert check.reason == (None if within else f"outside 08:00-21:00 (local {local[11:16]})")


def test_the_wall_clock_stamp_of_the_entry_is_not_what_a_call_is_judged_by() -> None:
    # stamped at 10:00 in Tokyo (a manual clock's entries carry the wall time they were written at),
    # but its tick is 03:00 there: night, and the report says so
    night = check_call(call(tick_of("2026-01-12T18:00:00+00:00"), "2026-01-13T01:00:00.000+00:00"), EPOCH_MS, [TOKYO], "contact",
                       EVERY_DAY)  # fmt: skip
    assert (night.local_times, night.within_hours) == ({TOKYO: "2026-01-13T03:00:00+09:00"}, False)
    assert night.timestamp == "2026-01-13T01:00:00.000+00:00"  # kept, for what it is: when the entry was written
    # and the other way round: stamped at night, rung at 10:00
    day = check_call(call(tick_of("2026-01-13T01:00:00+00:00"), "2026-01-12T18:00:00.000+00:00"), EPOCH_MS, [TOKYO], "contact", EVERY_DAY)
    assert (day.local_times, day.within_hours) == ({TOKYO: "2026-01-13T10:00:00+09:00"}, True)


def test_the_moment_of_a_tick_follows_the_epoch_and_the_tick_interval() -> None:
    minutes = CallingRules(("08:00", "21:00"), tick_interval_ms=60_000)
    tick = tick_of("2026-01-05T22:30:00+00:00", 60_000)  # 630 one-minute ticks after the epoch
    assert tick == 630
    check = check_call(call(tick), EPOCH_MS, [TOKYO], "contact", minutes)
    assert (check.moment, check.local_times[TOKYO], check.within_hours) == (
        "2026-01-05T22:30:00+00:00", "2026-01-06T07:30:00+09:00", False)  # fmt: skip
    later_epoch = check_call(call(tick), EPOCH_MS + 3_600_000, [TOKYO], "contact", minutes)
    assert (later_epoch.local_times[TOKYO], later_epoch.within_hours) == ("2026-01-06T08:30:00+09:00", True)


def test_with_several_zones_a_call_is_within_hours_only_inside_all_of_them() -> None:
    zones = [NEW_YORK, LOS_ANGELES]
    inside = check_call(call(tick_of("2026-01-12T17:00:00+00:00")), EPOCH_MS, zones, "calling-hours gate", EVERY_DAY)
    assert (inside.local_times, inside.within_hours, inside.reason) == (
        {NEW_YORK: "2026-01-12T12:00:00-05:00", LOS_ANGELES: "2026-01-12T09:00:00-08:00"}, True, None)  # fmt: skip
    late_in_new_york = check_call(call(tick_of("2026-01-13T02:30:00+00:00")), EPOCH_MS, zones, "calling-hours gate", EVERY_DAY)
    assert (late_in_new_york.within_hours, late_in_new_york.reason) == (False, f"outside 08:00-21:00 (local 21:30) in {NEW_YORK}")
    early_in_la = check_call(call(tick_of("2026-01-12T15:00:00+00:00")), EPOCH_MS, zones, "calling-hours gate", EVERY_DAY)
    assert (early_in_la.within_hours, early_in_la.reason) == (False, f"outside 08:00-21:00 (local 07:00) in {LOS_ANGELES}")


def test_a_call_that_cannot_be_placed_in_time_or_zone_is_not_judged() -> None:
    mars = check_call(call(0), EPOCH_MS, ["Mars/Olympus_Mons"], "contact", EVERY_DAY)
    assert (mars.local_times, mars.within_hours, mars.reason) == ({"Mars/Olympus_Mons": None}, None, "unknown time zone Mars/Olympus_Mons")
    no_start = check_call(call(0), None, [TOKYO], "contact", EVERY_DAY)
    assert (no_start.moment, no_start.within_hours, no_start.reason) == (None, None, "the run's start (its epoch) is not on record")


def test_the_zones_are_the_contacts_else_the_gates_else_the_default() -> None:
    tokyo, unknown = Contact(id="c1", timezone=TOKYO, phone="+12125551234"), Contact(id="c2", phone="+12125551234")
    assert zones_of(tokyo, [NEW_YORK], "UTC") == ([TOKYO], "contact")
    assert zones_of(unknown, [NEW_YORK, LOS_ANGELES], "UTC") == ([NEW_YORK, LOS_ANGELES], "calling-hours gate")
    assert zones_of(unknown, None, "Europe/Paris") == (["Europe/Paris"], "default")
    assert zones_of(None, None, "UTC") == (["UTC"], "default")


def test_an_unknown_holiday_calendar_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"policy\.holidays 'XX'"):
        check_call(call(0), EPOCH_MS, [TOKYO], "contact", CallingRules(("08:00", "21:00"), holidays="XX"))


def moments(first: str, days: int, step_minutes: int = 23) -> Iterator[datetime]:
    """Moments every `step_minutes` (an odd step lands on every minute of the hour in time)."""
    at, end = datetime.fromisoformat(first), datetime.fromisoformat(first) + timedelta(days=days)
    while at < end:
        yield at
        at += timedelta(minutes=step_minutes)


# both DST changes of 2026 (US 8 March, EU 29 March), New Year 2027 and Epiphany (a Bavarian holiday)
PERIODS = [("2026-03-05T00:00:00+00:00", 7), ("2026-03-26T00:00:00+00:00", 7), ("2026-12-29T00:00:00+00:00", 11)]
CASES = [
    (("08:00", "21:00"), ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), None, [NEW_YORK]),
    (("08:00", "21:00"), ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), None, [TOKYO]),
    (("09:00", "17:30"), ("mon", "tue", "wed", "thu", "fri"), "US", [NEW_YORK]),
    (("09:00", "17:30"), ("mon", "tue", "wed", "thu", "fri"), "US", [NEW_YORK, "America/Chicago", LOS_ANGELES]),
    (("08:00", "20:00"), ("mon", "tue", "wed", "thu", "fri", "sat"), "DE-BY", [BERLIN]),
    (("08:00", "21:00"), ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "JP", [TOKYO, "Pacific/Guam"]),
]  # fmt: skip


@pytest.mark.parametrize(("hours", "days", "region", "zones"), CASES)
def test_the_report_agrees_with_the_calling_hours_gate(hours: tuple[str, str], days: tuple[str, ...], region: str | None,
                                                       zones: list[str]) -> None:  # fmt: skip
    window = Window(*hours, days=days, country=region)
    rules = CallingRules(hours, days, region)
    checked = 0
    for first, length in PERIODS:
        for at in moments(first, length):
            _, gate_reason = next_opening(window, at.astimezone(UTC), zones)
            check = check_call(call(tick_of(at.isoformat())), EPOCH_MS, zones, "contact", rules)
            assert (check.within_hours, check.reason) == (gate_reason is None, gate_reason), at
            checked += 1
    assert checked > 1500
