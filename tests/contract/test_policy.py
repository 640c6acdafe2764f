"""Policy gates on both backends: a revoked consent and a channel suppression stop the sends of
their channel while the runs go on; a third-party gate registered by a throwaway plugin really
blocks sends, on the first attempt, on a resend after a failure and after `retry_run`; each
verdict (defer, skip, pause, fail) does to the run what the contract says, and every decision
is journaled and replays identically."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dee import Engine
from dee.plan.model import Plan
from dee.plugin import hookimpl
from dee.plugin.contracts import GateRequest, PolicyGate, Verdict
from dee.plugin.manager import PluginManager
from dee.records import ConsentRecord
from tests.contract.conftest import Deploy
from tests.contract.scenarios import DAY, VARS, channels_dispatched, contact, may_call, outputs, view

END = 10 * DAY


async def skipped(engine: Engine, run_id: str) -> list[tuple[str | None, str]]:
    return [(step, (out or {})["reason"]) for step, _, out in await outputs(engine, run_id, "step.skipped")]


async def replays_identically(engine: Engine, *run_ids: str) -> bool:
    verdicts = [(await engine.replay(r)).identical for r in run_ids]
    return all(verdicts)


async def test_a_call_needs_a_granted_consent_by_default(engine: Engine, outreach: Plan) -> None:
    silent = (await engine.execute(outreach, contact("c-never"), VARS)).id
    await engine.record_consent(ConsentRecord(contact_id="c-later", channel="voice", status="granted", source="form",
                                              expires_tick=6 * DAY))  # fmt: skip
    expired = (await engine.execute(outreach, contact("c-later"), VARS)).id
    await engine.advance_clock(END)
    assert await channels_dispatched(engine, silent) == ["email", "email", "email"]
    assert await skipped(engine, silent) == [("call-attempt", "voice needs granted consent (never given)")]
    assert await skipped(engine, expired) == [("call-attempt", "voice needs granted consent (expired)")]  # the call is at day 7


async def test_a_revoked_consent_stops_every_later_send_of_its_channel(engine: Engine, outreach: Plan) -> None:
    await may_call(engine, "c-email", "c-voice", "c-both")
    runs = {cid: (await engine.execute(outreach, contact(cid), VARS)).id for cid in ("c-email", "c-voice", "c-both")}
    await engine.run_until_idle()  # every first email has gone
    await engine.advance_clock(100)
    await engine.record_consent(ConsentRecord(contact_id="c-email", channel="email", status="revoked", source="reply"))
    await engine.record_consent(ConsentRecord(contact_id="c-voice", channel="voice", status="revoked", source="call"))
    await engine.record_consent(ConsentRecord(contact_id="c-both", channel="email", status="granted", source="form"))
    await engine.advance_clock(END)
    assert {cid: await channels_dispatched(engine, r) for cid, r in runs.items()} == {
        "c-email": ["email", "voice"],  # the cold follow-up and the breakup email are refused
        "c-voice": ["email", "email", "email"],
        "c-both": ["email", "email", "voice", "email"],
    }
    assert await skipped(engine, runs["c-email"]) == [
        ("cold-follow-up", "email consent revoked at tick 100"), ("breakup-email", "email consent revoked at tick 100")]  # fmt: skip
    assert await skipped(engine, runs["c-voice"]) == [("call-attempt", "voice consent revoked at tick 100")]
    assert {cid: await view(engine, r) for cid, r in runs.items()} == dict.fromkeys(
        runs, ("completed", "no_response", "end-no-reply"))  # fmt: skip
    assert await replays_identically(engine, *runs.values())


async def test_a_revocation_recorded_after_an_email_went_refuses_only_the_later_ones(engine: Engine, outreach: Plan) -> None:
    await may_call(engine, "c1")
    run = await engine.execute(outreach, contact("c1"), VARS, start_at=100)
    await engine.advance_clock(100)  # the first email goes at tick 100 ...
    await engine.record_consent(ConsentRecord(contact_id="c1", channel="email", status="revoked", source="reply"))  # ... then this, at 100
    await engine.advance_clock(END)
    assert await channels_dispatched(engine, run.id) == ["email", "voice"]
    assert [step for step, _ in await skipped(engine, run.id)] == ["cold-follow-up", "breakup-email"]
    assert await replays_identically(engine, run.id)  # replayed too, the revocation comes after the email it missed


async def test_a_channel_suppression_refuses_that_channel_and_the_run_goes_on(engine: Engine, outreach: Plan) -> None:
    await may_call(engine, "c1")
    assert await engine.suppress("c1", "channel", "do not call", "crm", channel="voice") == 0  # cancels nothing
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.advance_clock(END)
    assert await channels_dispatched(engine, run.id) == ["email", "email", "email"]
    assert await skipped(engine, run.id) == [("call-attempt", "contact suppressed on voice")]
    [refused] = [o for _, _, o in await outputs(engine, run.id, "policy.evaluated") if (o or {})["verdict"] != "allow"]
    assert refused is not None and {g["gate"]: g["verdict"] for g in refused["gates"]} == {"consent": "allow", "suppression": "skip",
                                                                            "calling-hours": "allow"}
    assert await view(engine, run.id) == ("completed", "no_response", "end-no-reply")
    assert await replays_identically(engine, run.id)


class AttributeGate(PolicyGate):
    """A third-party gate: the verdict a contact attribute names (`gate: skip|defer|pause|fail`),
    `skip` for resends when the attribute is `resend`; counts how often it was asked."""

    name = "by-attribute"

    def __init__(self) -> None:
        self.asked = 0

    def check(self, request: GateRequest) -> Verdict:
        self.asked += 1
        wanted = request.contact.attributes.get("gate")
        if wanted == "skip":
            return Verdict.skip("attribute says no", attribute=wanted)
        if wanted == "resend" and request.attempt > 1:
            return Verdict.skip("no resends", attempt=request.attempt)
        if wanted == "defer" and request.tick < 500:
            return Verdict.defer(500, "not before tick 500")
        if wanted == "pause" and request.tick < 1000:
            return Verdict.pause("hold for review")
        if wanted == "fail":
            return Verdict.fail("forbidden")
        return Verdict.allow()


class GatePlugin:
    def __init__(self) -> None:
        self.gate = AttributeGate()

    @hookimpl
    def dee_policy_gates(self, config: Any) -> list[PolicyGate]:
        return [self.gate]


def person(cid: str, gate: str | None, email: str | None = None) -> dict[str, Any]:
    c = contact(cid, email)
    if gate:
        c["attributes"]["gate"] = gate
    return c


async def test_a_third_party_gate_blocks_every_send_it_refuses(deploy: Deploy, outreach: Plan) -> None:
    plugin = GatePlugin()
    async with deploy(plugins=PluginManager.load(extra=[("test_gate", plugin)])) as engine:
        await may_call(engine, "c-no", "c-yes", "c-flaky")
        blocked = await engine.execute(outreach, person("c-no", "skip"), VARS)
        free = await engine.execute(outreach, person("c-yes", None), VARS)
        flaky = await engine.execute(outreach, person("c-flaky", "resend", "c-flaky@flaky.test"), VARS)
        await engine.advance_clock(END)
        assert await channels_dispatched(engine, blocked.id) == []
        assert [s for s, _ in await skipped(engine, blocked.id)] == ["initial-email", "cold-follow-up", "call-attempt", "breakup-email"]
        assert await channels_dispatched(engine, free.id) == ["email", "email", "voice", "email"]
        # the first send failed transiently; its resend was refused, so no second copy went out
        assert (await outputs(engine, flaky.id, "step.dispatched"))[0][2]["attempt"] == 1  # type: ignore[index]
        assert (await skipped(engine, flaky.id))[0] == ("initial-email", "no resends")
        assert plugin.gate.asked >= 4 + 4 + 2
        assert await replays_identically(engine, blocked.id, free.id, flaky.id)


async def test_defer_waits_for_the_window_and_asks_again(deploy: Deploy, outreach: Plan) -> None:
    async with deploy(plugins=PluginManager.load(extra=[("test_gate", GatePlugin())])) as engine:
        run = await engine.execute(outreach, person("c1", "defer"), VARS)
        await engine.run_until_idle()
        assert (await view(engine, run.id))[0] == "waiting" and await channels_dispatched(engine, run.id) == []
        await engine.advance_clock(499)
        assert await channels_dispatched(engine, run.id) == []
        await engine.advance_clock(1)
        dispatched = await outputs(engine, run.id, "step.dispatched")
        assert [(s, t) for s, t, _ in dispatched] == [("initial-email", 500)]
        verdicts = [(t, (o or {})["verdict"], (o or {}).get("untilTick")) for _, t, o in await outputs(engine, run.id, "policy.evaluated")]
        assert verdicts == [(0, "defer", 500), (500, "allow", None)]
        assert await replays_identically(engine, run.id)


async def test_pause_holds_the_run_until_resumed_and_fail_survives_retry_run(deploy: Deploy, outreach: Plan) -> None:
    async with deploy(plugins=PluginManager.load(extra=[("test_gate", GatePlugin())])) as engine:
        held = await engine.execute(outreach, person("c-hold", "pause"), VARS)
        barred = await engine.execute(outreach, person("c-bar", "fail"), VARS)
        await engine.run_until_idle()
        assert (await view(engine, held.id))[0] == "paused"
        failed = await engine.get_run(barred.id)
        assert (failed.status, await channels_dispatched(engine, barred.id)) == ("failed", [])
        await engine.advance_clock(2000)
        assert await channels_dispatched(engine, held.id) == []  # a paused run never wakes
        await engine.resume_run(held.id)
        await engine.run_until_idle()
        assert await channels_dispatched(engine, held.id) == ["email"]  # asked again: allowed at tick 2000
        await engine.retry_run(barred.id)
        await engine.run_until_idle()
        assert ((await engine.get_run(barred.id)).status, await channels_dispatched(engine, barred.id)) == ("failed", [])
        errors = [(o or {})["error"] for _, _, o in await outputs(engine, barred.id, "error.occurred")]
        assert errors == ["policy: forbidden", "policy: forbidden"]
        assert await replays_identically(engine, held.id, barred.id)


async def test_every_call_rings_inside_the_contacts_calling_window(engine: Engine, outreach: Plan) -> None:
    """Tick 0 of a manual clock is Monday 2026-01-05 12:00 UTC. The cold path calls on day 7 at
    noon UTC: 21:00 in Tokyo (closed: the call waits until 08:00 there), 13:00 in Berlin (open),
    07:00 in New York (closed for an hour); Sydney comes from the phone number alone."""
    people = {"tokyo": ("Asia/Tokyo", None), "berlin": ("Europe/Berlin", None), "new-york": ("America/New_York", None),
              "sydney": (None, "+61291234567")}  # fmt: skip
    await may_call(engine, *people)
    runs = {}
    for cid, (zone, phone) in people.items():
        person = contact(cid) | ({"timezone": zone} if zone else {}) | ({"phone": phone} if phone else {})
        runs[cid] = (await engine.execute(outreach, person, VARS)).id
    await engine.advance_clock(END)
    epoch = datetime(2026, 1, 5, 12, tzinfo=UTC)
    rang = {}
    for cid, run_id in runs.items():
        [(_, tick, _)] = [d for d in await outputs(engine, run_id, "step.dispatched") if d[0] == "call-attempt"]
        zone = people[cid][0] or "Australia/Sydney"
        rang[cid] = (epoch + timedelta(seconds=tick)).astimezone(ZoneInfo(zone)).strftime("%a %H:%M")
    assert rang == {"tokyo": "Tue 08:00", "berlin": "Mon 13:00", "new-york": "Mon 08:00", "sydney": "Tue 08:00"}
    deferred = {cid: [(o or {})["reason"] for _, _, o in await outputs(engine, r, "policy.evaluated") if (o or {})["verdict"] == "defer"]
                for cid, r in runs.items()}  # fmt: skip
    assert deferred == {"tokyo": ["calling hours: outside 08:00-21:00 (local 21:00)"], "berlin": [],
                        "new-york": ["calling hours: outside 08:00-21:00 (local 07:00)"],
                        "sydney": ["calling hours: outside 08:00-21:00 (local 23:00)"]}  # fmt: skip
    assert {cid: await view(engine, r) for cid, r in runs.items()} == dict.fromkeys(runs, ("completed", "no_response", "end-no-reply"))
    assert await replays_identically(engine, *runs.values())
