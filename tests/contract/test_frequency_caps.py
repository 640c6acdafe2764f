"""Frequency caps on both backends: counted across every run of a contact, exactly when two runs
send in the same tick, remembered for a run enrolled later, per local calendar day or per
rolling window, deferred or skipped as configured, overridden per plan, and replayed identically.

Tick 0 of the manual clock is Monday 2026-01-05 12:00 UTC, a tick is a second; the contacts live
in Berlin (UTC+1 in January), so their local day ends at tick 39,600 (23:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dee import Engine
from dee.config import PolicyConfig
from dee.plan.model import Plan
from tests.contract.conftest import Deploy
from tests.contract.scenarios import DAY, VARS, contact, may_call, outputs

EPOCH = datetime(2026, 1, 5, 12, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
MIDNIGHT = 39_600  # Tuesday 00:00 in Berlin


def berliner(cid: str) -> dict[str, Any]:
    return contact(cid) | {"timezone": "Europe/Berlin"}


async def emails(engine: Engine, *run_ids: str) -> list[tuple[int, str | None]]:
    """Every email the runs handed out, as (tick, step), in tick order."""
    sent = [(tick, step) for run_id in run_ids for step, tick, out in await outputs(engine, run_id, "step.dispatched")
            if (out or {}).get("channel") == "email" and (out or {}).get("attempt") == 1]  # fmt: skip
    return sorted(sent, key=lambda s: (s[0], s[1] or ""))


def local_days(ticks: list[int]) -> list[str]:
    return [(EPOCH + timedelta(seconds=t)).astimezone(BERLIN).date().isoformat() for t in ticks]


async def refusals(engine: Engine, run_id: str) -> list[tuple[int, str, Any]]:
    """The run's policy decisions other than allow: (tick, verdict, reason)."""
    decided = await outputs(engine, run_id, "policy.evaluated")
    return [(t, o["verdict"], o["reason"]) for _, t, o in decided if o is not None and o["verdict"] != "allow"]


async def identical(engine: Engine, *run_ids: str) -> bool:
    return all([(await engine.replay(r)).identical for r in run_ids])


async def test_two_runs_of_a_contact_due_in_the_same_tick_send_one_email(deploy: Deploy, outreach: Plan, welcome: Plan) -> None:
    async with deploy(policy=PolicyConfig(caps=("email 1/day",))) as engine:
        first = await engine.execute(outreach, berliner("c1"), VARS, start_at=100)
        second = await engine.execute(welcome, berliner("c1"), VARS, start_at=100)
        other = await engine.execute(welcome, berliner("c2"), VARS, start_at=100)  # another contact is not capped by c1
        await engine.advance_clock(100)
        both = await emails(engine, first.id, second.id)
        assert [t for t, _ in both] == [100]  # one of the two, whichever the partition took first
        assert [t for t, _ in await emails(engine, other.id)] == [100]
        waiting = second.id if both[0][1] == "initial-email" else first.id
        assert await refusals(engine, waiting) == [(100, "defer", "frequency_capped: email 1/day")]
        await engine.advance_clock(MIDNIGHT - 100)
        assert [t for t, _ in await emails(engine, first.id, second.id)] == [100, MIDNIGHT]
        await engine.advance_clock(12 * DAY)
        ticks = [t for t, _ in await emails(engine, first.id, second.id)]
        assert len(local_days(ticks)) == len(set(local_days(ticks))), local_days(ticks)  # never two on one local day
        assert len(ticks) == 6  # and none was dropped: three emails of each plan
        assert await identical(engine, first.id, second.id, other.id)


async def test_a_run_enrolled_later_counts_what_the_contacts_other_runs_sent(deploy: Deploy, outreach: Plan, welcome: Plan) -> None:
    async with deploy(policy=PolicyConfig(caps=("email 1/day",))) as engine:
        early = await engine.execute(outreach, berliner("c1"), VARS)
        await engine.run_until_idle()
        await engine.advance_clock(1000)
        late = await engine.execute(welcome, berliner("c1"), VARS)
        await engine.run_until_idle()
        assert await emails(engine, late.id) == []
        assert await refusals(engine, late.id) == [(1000, "defer", "frequency_capped: email 1/day")]
        await engine.advance_clock(MIDNIGHT - 1000)
        assert await emails(engine, late.id) == [(MIDNIGHT, "welcome-email")]
        assert await identical(engine, early.id, late.id)


async def test_a_rolling_window_skips_what_it_does_not_allow(deploy: Deploy, outreach: Plan) -> None:
    """The cold path emails on days 0, 3 and 9 and calls on day 7: with one email per 4 days the
    day-3 follow-up is skipped, the day-9 breakup goes (day 0 has left the window), the call is
    not an email."""
    async with deploy(policy=PolicyConfig(caps=("email 1/4d", "voice 1/day"), on_capped="skip")) as engine:
        await may_call(engine, "c1")
        run = await engine.execute(outreach, berliner("c1"), VARS)
        await engine.advance_clock(10 * DAY)
        assert await emails(engine, run.id) == [(0, "initial-email"), (9 * DAY, "breakup-email")]
        assert await refusals(engine, run.id) == [(3 * DAY, "skip", "frequency_capped: email 1/4d")]
        [capped] = [o for _, t, o in await outputs(engine, run.id, "policy.evaluated") if t == 3 * DAY]
        assert capped is not None
        assert [g for g in capped["gates"] if g["gate"] == "frequency-cap"] == [{
            "gate": "frequency-cap", "verdict": "skip", "reason": "frequency_capped: email 1/4d",
            "facts": {"caps": [{"cap": "email 1/4d", "sent": 1}]}}]  # fmt: skip
        assert await identical(engine, run.id)


async def test_a_plan_can_override_the_caps_and_its_sends_still_count(deploy: Deploy, outreach: Plan, welcome: Plan) -> None:
    policy = PolicyConfig(caps=("email 1/day",), plans={"welcome-sequence": {"caps": []}})
    async with deploy(policy=policy) as engine:
        free = await engine.execute(welcome, berliner("c1"), VARS)
        await engine.run_until_idle()
        await engine.advance_clock(10)
        capped = await engine.execute(outreach, berliner("c1"), VARS)
        await engine.advance_clock(DAY)
        assert await emails(engine, free.id) == [(0, "welcome-email"), (DAY, "tips-email")]  # uncapped, even after outreach's
        assert await emails(engine, capped.id) == [(MIDNIGHT, "initial-email")]  # the welcome email counted
        assert await identical(engine, free.id, capped.id)


async def test_a_send_noted_after_a_run_sent_in_the_same_tick_replays_after_that_send(
    deploy: Deploy, outreach: Plan, welcome: Plan,
) -> None:  # fmt: skip
    """A capped outreach run and an uncapped welcome run of a contact both send at tick 100. When
    the outreach run went first, the welcome email reaches it only after its own send, in a later
    tick's batch: replay must apply that note where the run met it, not before its send."""
    policy = PolicyConfig(caps=("email 1/day",), plans={"welcome-sequence": {"caps": []}})
    async with deploy(policy=policy) as engine:
        pairs = []
        for i in range(8):  # enrolled in either order, so that the partition takes either run first
            plans = (outreach, welcome) if i % 2 else (welcome, outreach)
            runs = {plan.id: await engine.execute(plan, berliner(f"c{i}"), VARS, start_at=100) for plan in plans}
            pairs.append((runs[outreach.id], runs[welcome.id]))
        await engine.advance_clock(DAY)
        first_emails = [len([t for t, _ in await emails(engine, capped.id) if t == 100]) for capped, _ in pairs]
        assert sorted(first_emails) == [0] * 4 + [1] * 4  # both orders happened: outreach first, and welcome first
        notes = [e for capped, _ in pairs for e in await engine.audit.get_by_run(capped.id) if (e.input or {}).get("kind") == "sends"]
        late = [e.tick for e in notes if (e.input or {}).get("afterTimers")]
        assert len(notes) == 8 and late == [100] * 4  # each outreach run that went first was told after its send
        assert await identical(engine, *[run.id for pair in pairs for run in pair])
