"""The frequency-cap gate at its edges: a rolling window's first and last tick, a local calendar
day and ISO week (across a DST change and in every zone of a number), a retry not counted again,
the strictest of several caps, skip or defer; the cap syntax; and the kernel keeping a run's own
sends and taking policy facts before a timer of the same tick."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dee import EngineConfig
from dee.config import FrequencyCap, PolicyConfig
from dee.kernel.contact import Contact
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import PolicyChanged, SendsNoted, Start
from dee.kernel.machine import KernelEnv
from dee.kernel.policy import Consent, GateRequest, PolicyFacts, SentMark, Verdict
from dee.kernel.state import RunState
from dee.shell.envs import history_ticks
from dee_policy.caps import FrequencyCapGate
from tests.unit.kernel_helpers import checked_advance, checked_start, make_contact, outreach_plan, plugins, template_store

HOUR = 3600


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


EPOCH = ms("2026-03-07T12:00")  # a Saturday, the day before New York springs forward


def gate(*caps: str, on_capped: str = "defer") -> FrequencyCapGate:
    return FrequencyCapGate([FrequencyCap.parse(c) for c in caps], on_capped, "UTC")  # type: ignore[arg-type]


def ask(g: FrequencyCapGate, tick: int, sent: list[tuple[int, str]], channel: str = "email", zone: str | None = "UTC",
        phone: str | None = None, message_id: str = "m-now") -> Verdict:  # fmt: skip
    marks = tuple(SentMark(t, ch, f"m-{i}", "p") for i, (t, ch) in enumerate(sent))
    contact = Contact(id="c1", email="c1@acme.test", phone=phone, timezone=zone)
    return g.check(GateRequest("r1", "p", "s1", "sendEmail", channel, tick, 1, contact, PolicyFacts(sends=marks), 1000, EPOCH,
                               message_id))  # fmt: skip


def test_a_rolling_window_counts_from_its_first_tick_to_its_last() -> None:
    g = gate("email 2/24h")
    day = 24 * HOUR
    assert ask(g, day, [(1, "email")]).verdict == "allow"
    assert ask(g, day, [(1, "email"), (2, "email")]) == Verdict.defer(day + 1, "frequency_capped: email 2/24h",
                                                                       caps=[{"cap": "email 2/24h", "sent": 2}])  # fmt: skip
    assert ask(g, day + 1, [(1, "email"), (2, "email")]).verdict == "allow"  # tick 1 left the window (it was 24 h ago)
    assert ask(g, day, [(0, "email"), (2, "email")]).verdict == "allow"  # tick 0 is exactly 24 h old: outside
    assert ask(g, day, [(1, "voice"), (2, "voice")]).verdict == "allow"  # another channel


def test_a_retry_of_the_message_being_sent_is_not_counted() -> None:
    marks = [(10, "email")]
    assert ask(gate("email 1/day"), 20, marks, message_id="m-0").verdict == "allow"  # m-0 is this very message
    assert ask(gate("email 1/day"), 20, marks, message_id="m-other").verdict == "defer"


def test_a_calendar_day_is_the_contacts_local_day() -> None:
    g = gate("voice 1/day")
    # 12:00 UTC is 21:00 in Tokyo; a call at 16:00 UTC (01:00 next day in Tokyo) is on a new day there
    assert ask(g, 4 * HOUR, [(0, "voice")], channel="voice", zone="Asia/Tokyo").verdict == "allow"
    held = ask(g, 2 * HOUR, [(0, "voice")], channel="voice", zone="Asia/Tokyo")
    assert (held.verdict, held.until_tick) == ("defer", 3 * HOUR)  # 15:00 UTC is Tokyo's midnight
    # in UTC the same two calls are on one day: held until 00:00 UTC, 12 h after the epoch
    assert ask(g, 4 * HOUR, [(0, "voice")], channel="voice").until_tick == 12 * HOUR


def test_a_local_day_that_loses_an_hour_still_ends_at_midnight() -> None:
    """New York springs forward on 2026-03-08: that day has 23 hours. A call at noon local on
    the 8th is held until 00:00 on the 9th, which is 04:00 UTC (EDT), not 05:00."""
    g = gate("voice 1/day")
    noon = (ms("2026-03-08T16:00") - EPOCH) // 1000  # 12:00 EDT
    held = ask(g, noon, [(noon - HOUR, "voice")], channel="voice", zone="America/New_York")
    assert held.until_tick == (ms("2026-03-09T04:00") - EPOCH) // 1000


def test_a_week_runs_monday_to_sunday_locally() -> None:
    g = gate("email 1/week")
    sunday_noon = (ms("2026-03-08T12:00") - EPOCH) // 1000
    assert ask(g, sunday_noon, [(0, "email")]).until_tick == (ms("2026-03-09T00:00") - EPOCH) // 1000
    monday = (ms("2026-03-09T00:00") - EPOCH) // 1000
    assert ask(g, monday, [(0, "email")]).verdict == "allow"


def test_a_number_spanning_zones_is_capped_in_each_until_the_latest_new_day() -> None:
    """A toll-free number rings anywhere in the North American plan, Guam to Pago Pago: the day
    it was called on ends last in Pago Pago (UTC-11), at 11:00 UTC; a Washington number's at
    midnight in New York."""
    g = gate("voice 1/day")
    held = ask(g, HOUR, [(0, "voice")], channel="voice", zone=None, phone="+18005550123")
    assert held.until_tick == (ms("2026-03-08T11:00") - EPOCH) // 1000
    assert held.facts == {"caps": [{"cap": "voice 1/day", "sent": 1}]}
    washington = ask(g, HOUR, [(0, "voice")], channel="voice", zone=None, phone="+12025550123")
    assert washington.until_tick == (ms("2026-03-08T05:00") - EPOCH) // 1000  # midnight EST


def test_the_strictest_cap_sets_the_wait_and_skip_skips() -> None:
    g = gate("email 2/24h", "email 1/day")
    v = ask(g, 6 * HOUR, [(HOUR, "email"), (2 * HOUR, "email")])
    assert v.verdict == "defer" and v.until_tick == 24 * HOUR + HOUR  # the rolling cap frees up after midnight UTC
    assert v.reason == "frequency_capped: email 2/24h, email 1/day"
    assert ask(gate("email 1/day", on_capped="skip"), 10, [(0, "email")]) == Verdict.skip(
        "frequency_capped: email 1/day", caps=[{"cap": "email 1/day", "sent": 1}])  # fmt: skip
    assert gate("email 1/4d").history_ms == 4 * 86_400_000 and gate("email 1/week").history_ms == 8 * 86_400_000


@pytest.mark.parametrize("text", ["email", "email 1", "email x/day", "email 0/day", "email 1/fortnight", "email 1/0d", " 1/day"])
def test_a_cap_that_does_not_parse_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"policy\.caps"):
        PolicyConfig(caps=(text,))
    assert FrequencyCap.parse("voice 7/7d").window_ms == 7 * 86_400_000


def test_a_plan_override_must_name_known_keys() -> None:
    with pytest.raises(ValueError, match=r"policy\.plans\.p1"):
        PolicyConfig(plans={"p1": {"capz": []}})
    policy = PolicyConfig(caps=("email 1/day",), plans={"p1": {"caps": ["email 3/day"], "on_capped": "skip"}})
    assert (policy.for_plan("p1").caps, policy.for_plan("p1").on_capped) == (("email 3/day",), "skip")
    assert policy.for_plan("p2") is policy


def kernel_env(*caps: str) -> KernelEnv:
    policy = PolicyConfig(caps=caps, calling_hours=False)
    config = EngineConfig(policy=policy)
    gates = tuple(plugins().policy_gates(config).values())
    return KernelEnv(plan=outreach_plan(), templates=template_store(), gates=gates, history_ticks=history_ticks(gates, 1000))


def started(at: int) -> RunState:
    start = Start(0, "r1", "sales-outreach-v2", 1, "x", make_contact(timezone="UTC"), {"product": "DEE"}, at)
    return checked_start(start).state


def test_a_run_keeps_its_own_sends_and_facts_of_a_tick_come_before_its_timer() -> None:
    env = kernel_env("email 1/day")
    assert env.history_ticks == 2 * 86_400
    state = started(100)
    other = SentMark(100, "email", "m-other-run", "welcome-sequence")
    # a message of another run noted at tick 100 is counted by the send due at 100
    held = checked_advance(state, [SendsNoted(100, (other,))], 100, env)
    assert (held.state.status, held.state.timer, held.effects) == ("waiting", "policy", [])
    assert held.state.facts.sends == (other,)
    # without it the email goes, and the run remembers its own message
    sent = checked_advance(state, [], 100, env)
    [dispatch] = sent.effects
    assert isinstance(dispatch, DispatchRequest)
    assert sent.state.facts.sends == (SentMark(100, "email", dispatch.message_id, "sales-outreach-v2"),)
    # a consent revoked at the very tick of the send refuses it, and the sends survive new facts
    revoked = PolicyFacts({"email": Consent("revoked", 100)})
    refused = checked_advance(state, [SendsNoted(100, (other,)), PolicyChanged(100, revoked)], 100, env)
    assert refused.state.facts.consents == revoked.consents and refused.state.facts.sends == (other,)
    assert [e.output["reason"] for e in refused.entries if e.action == "step.skipped"] == ["email consent revoked at tick 100"]
    # marks older than the horizon are dropped as the run goes on
    later = checked_advance(sent.state, [SendsNoted(3 * 86_400, (SentMark(3 * 86_400, "voice", "m-late", "p"),))], 3 * 86_400, env)
    assert [m.message_id for m in later.state.facts.sends] == ["m-late"]
