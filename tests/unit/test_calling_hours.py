"""The calling-hours gate at its edges: a window's first and last minute, both DST changes,
a public holiday (national and regional), days without calls, a contact's zone from its phone
number (and every zone of a number that spans several), and the tick a deferral names."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

from dee import EngineConfig
from dee.config import PolicyConfig, SchedulerConfig, parse_epoch
from dee.errors import ConfigError
from dee.kernel.contact import Contact
from dee.kernel.policy import GateRequest, PolicyFacts
from dee_policy import CallingHoursGate, dee_policy_gates
from dee_policy.hours import Openings, Window, next_opening, zones_for

NEW_YORK, BERLIN, TOKYO = "America/New_York", "Europe/Berlin", "Asia/Tokyo"


def local(zone: str, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def opening(zone: str, text: str, window: Window | None = None) -> tuple[str, str | None]:
    """When a call asked for at local `text` in `zone` may ring (local time), and why it waited."""
    at, why = next_opening(window or Window("08:00", "21:00"), local(zone, text), [zone])
    return at.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes"), why


def test_the_first_and_last_minute_of_the_window() -> None:
    assert opening(BERLIN, "2026-06-10T08:00") == ("2026-06-10T08:00+02:00", None)
    assert opening(BERLIN, "2026-06-10T20:59") == ("2026-06-10T20:59+02:00", None)
    assert opening(BERLIN, "2026-06-10T07:59") == ("2026-06-10T08:00+02:00", "outside 08:00-21:00 (local 07:59)")
    assert opening(BERLIN, "2026-06-10T21:00") == ("2026-06-11T08:00+02:00", "outside 08:00-21:00 (local 21:00)")


def test_the_window_follows_the_wall_clock_across_both_dst_changes() -> None:
    # spring forward (2026-03-08 in New York): 08:00 is 13:00 UTC the day before, 12:00 UTC that day
    before, during = local(NEW_YORK, "2026-03-07T22:00"), local(NEW_YORK, "2026-03-08T01:30")
    window = Window("08:00", "21:00")
    assert next_opening(window, before, [NEW_YORK])[0] == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert next_opening(window, during, [NEW_YORK])[0] == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert opening(NEW_YORK, "2026-03-08T07:59") == ("2026-03-08T08:00-04:00", "outside 08:00-21:00 (local 07:59)")
    # fall back (2026-11-01): the window opens at 08:00 EST, 13:00 UTC; 20:30 that evening is inside
    assert next_opening(window, local(NEW_YORK, "2026-11-01T01:30"), [NEW_YORK])[0] == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert opening(NEW_YORK, "2026-11-01T20:30")[1] is None


def test_public_holidays_national_and_regional() -> None:
    us = Window("08:00", "21:00", country="US")
    assert opening(NEW_YORK, "2027-01-01T10:00", us) == ("2027-01-02T08:00-05:00", "public holiday (New Year's Day)")
    assert opening(NEW_YORK, "2026-12-31T10:00", us)[1] is None
    bavaria, germany = Window("08:00", "21:00", country="DE-BY"), Window("08:00", "21:00", country="DE")
    assert opening(BERLIN, "2027-01-06T09:00", bavaria) == ("2027-01-07T08:00+01:00", "public holiday (Epiphany)")
    assert opening(BERLIN, "2027-01-06T09:00", germany)[1] is None  # not a holiday in every state
    with pytest.raises(Exception, match="XX"):
        Window("08:00", "21:00", country="XX")


def test_days_without_calls_wait_for_the_next_allowed_day() -> None:
    weekdays = Window("09:00", "17:00", days=("mon", "tue", "wed", "thu", "fri"))
    assert opening(TOKYO, "2026-06-13T10:00", weekdays) == ("2026-06-15T09:00+09:00", "closed on sat")  # a Saturday
    with pytest.raises(ValueError, match="calling days"):
        Window("09:00", "17:00", days=("someday",))
    with pytest.raises(ValueError, match="start before"):
        Window("21:00", "08:00")


def test_a_contacts_zones_come_from_its_own_zone_its_phone_or_the_default() -> None:
    assert zones_for(TOKYO, "+12125551234", "UTC") == (TOKYO,)
    assert zones_for(None, "+81312345678", "UTC") == (TOKYO,)
    assert zones_for("Mars/Olympus_Mons", "+4930123456", "UTC") == (BERLIN,)  # an unknown zone is no zone
    assert zones_for(None, "+15550100", "Europe/Paris") == ("Europe/Paris",)  # a fictional number has no region
    assert zones_for(None, None, "UTC") == ("UTC",)
    toll_free = zones_for(None, "+18005551234", "UTC")
    assert len(toll_free) > 10 and "America/Adak" in toll_free and "America/New_York" in toll_free


def test_a_number_that_spans_zones_rings_only_when_every_zone_is_inside_the_window() -> None:
    zones = [NEW_YORK, "America/Los_Angeles"]
    at, why = next_opening(Window("08:00", "21:00"), local(NEW_YORK, "2026-06-10T09:00"), zones)
    assert at.astimezone(ZoneInfo("America/Los_Angeles")).isoformat(timespec="minutes") == "2026-06-10T08:00-07:00"
    assert why == "outside 08:00-21:00 (local 06:00) in America/Los_Angeles"


def request(tick: int, contact: Contact, channel: str = "voice", epoch: str = "2026-01-05T12:00:00Z") -> GateRequest:
    return GateRequest("r1", "p1", "call", "sendVoice", channel, tick, 1, contact, PolicyFacts(), 1000, parse_epoch(epoch))


def test_the_gate_defers_to_the_tick_the_window_opens_and_leaves_email_alone() -> None:
    gate = CallingHoursGate(Window("08:00", "21:00"), "UTC")
    tokyo = Contact("c1", phone="+81312345678")  # tick 0 is Monday 12:00 UTC = 21:00 in Tokyo
    verdict = gate.check(request(0, tokyo))
    assert (verdict.verdict, verdict.reason) == ("defer", "calling hours: outside 08:00-21:00 (local 21:00)")
    assert verdict.until_tick == 11 * 3600  # Tuesday 08:00 Tokyo = Monday 23:00 UTC
    assert verdict.facts == {"zones": [TOKYO], "at": "2026-01-05T12:00:00+00:00", "opensAt": "2026-01-05T23:00:00+00:00"}
    assert gate.check(request(11 * 3600, tokyo)).verdict == "allow"
    assert gate.check(request(0, tokyo, channel="email")).verdict == "allow"
    assert gate.check(request(0, Contact("c2", timezone=BERLIN))).verdict == "allow"  # 13:00 in Berlin


def test_an_opening_worked_out_once_answers_each_request_in_its_own_zones_and_ticks() -> None:
    gate = CallingHoursGate(Window("08:00", "21:00"), "UTC")
    tokyo, berlin = Contact("c1", phone="+81312345678"), Contact("c2", timezone=BERLIN)
    assert gate.check(request(0, tokyo)).until_tick == 11 * 3600
    assert gate.check(request(0, berlin)).verdict == "allow"  # the same moment in other zones
    assert gate.check(request(0, tokyo)).until_tick == 11 * 3600
    half = msgspec.structs.replace(request(0, tokyo), tick_interval_ms=500)  # the same moment, half-second ticks
    assert gate.check(half).until_tick == 22 * 3600
    assert len(gate.openings) == 2


def test_openings_are_forgotten_whole_once_full() -> None:
    openings = Openings(Window("08:00", "21:00"))
    openings.KEPT = 3
    for hour in range(7):
        openings.at(parse_epoch("2026-01-05T00:00:00Z") + hour * 3_600_000, (BERLIN,))
        assert len(openings) <= 3
    at, why, opens, wait_s = openings.at(parse_epoch("2026-01-05T06:00:00Z"), (BERLIN,))  # 07:00 in Berlin
    assert (at, why, opens, wait_s) == ("2026-01-05T06:00:00+00:00", "outside 08:00-21:00 (local 07:00)",
                                        "2026-01-05T07:00:00+00:00", 3600.0)  # fmt: skip


def test_the_deployments_epoch_and_the_builtin_gate_configuration() -> None:
    assert SchedulerConfig(clock="manual").epoch_ms(123) == parse_epoch("2026-01-05T12:00:00Z")
    assert SchedulerConfig(clock="wall").epoch_ms(123) == 123  # the first migrate's moment
    assert SchedulerConfig(epoch="2030-01-01T00:00:00+00:00").epoch_ms(123) == parse_epoch("2030-01-01T00:00:00Z")
    for bad in ("yesterday", "2030-01-01T00:00:00"):
        with pytest.raises(ConfigError, match=r"scheduler\.epoch"):
            parse_epoch(bad)
    names = [g.name for g in dee_policy_gates(EngineConfig())]
    assert names == ["consent", "suppression", "calling-hours"]
    assert [g.name for g in dee_policy_gates(EngineConfig(policy=PolicyConfig(calling_hours=False)))] == ["consent", "suppression"]


def test_a_send_window_holds_email_and_leaves_calls_to_the_calling_hours() -> None:
    config = EngineConfig(policy=PolicyConfig(send_window=("09:00", "18:00"), send_days=("mon", "tue", "wed", "thu", "fri")))
    gates = {g.name: g for g in dee_policy_gates(config)}
    assert list(gates) == ["consent", "suppression", "calling-hours", "send-window"]
    window = gates["send-window"]
    berlin = Contact("c1", timezone=BERLIN)  # tick 0 is Monday 13:00 in Berlin
    assert window.check(request(0, berlin, channel="email")).verdict == "allow"
    evening = window.check(request(5 * 3600, berlin, channel="email"))  # 18:00 in Berlin
    assert (evening.verdict, evening.reason, evening.until_tick) == ("defer", "send window: outside 09:00-18:00 (local 18:00)",
                                                                     20 * 3600)  # Tuesday 09:00 in Berlin  # fmt: skip
    saturday = window.check(request(5 * 86_400, berlin, channel="email"))
    assert (saturday.reason, saturday.until_tick) == ("send window: closed on sat", 7 * 86_400 - 4 * 3600)
    assert window.check(request(5 * 3600, berlin)).verdict == "allow"  # a call is the calling hours' business


def test_a_window_opening_in_the_hour_dst_skips_opens_when_the_clock_jumps() -> None:
    # 2024-03-31 in Berlin the clock jumps from 02:00 to 03:00: a 02:30-05:00 window opens at
    # 03:00, not at "02:30" read with the winter offset (03:30); 2024-03-10 in New York, a
    # 02:01-03:01 window is open from 03:00 to 03:01 that day (the next day's opening is too late)
    assert opening(BERLIN, "2024-03-31T00:00", Window("02:30", "05:00"))[0] == "2024-03-31T03:00+02:00"
    assert opening(NEW_YORK, "2024-03-09T19:00", Window("02:01", "03:01"))[0] == "2024-03-10T03:00-04:00"
    # a window the jump skips whole does not open that day (Lord Howe jumps from 02:00 to 02:30)
    assert opening("Australia/Lord_Howe", "2024-10-05T23:00", Window("02:00", "02:20"))[0] == "2024-10-07T02:00+11:00"
