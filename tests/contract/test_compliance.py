"""The compliance report's policy sections on both backends, from what the gates decided: a call
to a contact in Tokyo placed at night there waits for the calling hours (a deferral, sent when
they open), another waits and is then refused (its consent revoked meanwhile: never sent), a
call whose consent was revoked is skipped, and one to a contact suppressed on voice pauses its
run (`on_suppressed = "pause"`). The call that rang is judged at its tick's local time. The
same report as text, as `dee audit compliance` prints it."""

from __future__ import annotations

from dee import Engine
from dee.config import PolicyConfig
from dee.plan.model import Plan
from dee.records import ConsentRecord
from dee.reports.compliance import render_text
from tests.contract.conftest import Deploy
from tests.contract.scenarios import DAY, VARS, contact, may_call, view

END = 10 * DAY
NIGHT = 6 * 3600  # started 6 hours late, the call (day 7, 18:00 UTC) is due at 03:00 in Tokyo
CALL_DUE, TOKYO_OPENS = 7 * DAY + NIGHT, 7 * DAY + 11 * 3600  # 08:00 in Tokyo is 23:00 UTC
CHANGED_MIND = CALL_DUE + 3600  # while its call waits, a contact revokes its consent


def in_tokyo(cid: str) -> dict[str, object]:
    return {**contact(cid), "timezone": "Asia/Tokyo"}


async def scenario(engine: Engine, outreach: Plan) -> dict[str, str]:
    """The four runs, by name."""
    await may_call(engine, "c-tokyo", "c-mind", "c-paused")
    await engine.record_consent(ConsentRecord(contact_id="c-revoked", channel="voice", status="revoked", source="call"))
    await engine.suppress("c-paused", "channel", "do not call", "crm", channel="voice")
    runs = {
        "tokyo": (await engine.execute(outreach, in_tokyo("c-tokyo"), VARS, start_at=NIGHT)).id,
        "mind": (await engine.execute(outreach, in_tokyo("c-mind"), VARS, start_at=NIGHT)).id,
        "revoked": (await engine.execute(outreach, contact("c-revoked"), VARS)).id,
        "paused": (await engine.execute(outreach, contact("c-paused"), VARS)).id,
    }
    await engine.advance_clock(CHANGED_MIND)
    await engine.record_consent(ConsentRecord(contact_id="c-mind", channel="voice", status="revoked", source="call"))
    await engine.advance_clock(END - CHANGED_MIND)
    return runs


async def test_the_report_shows_every_gate_verdict_deferral_and_denial(deploy: Deploy, outreach: Plan) -> None:
    async with deploy(policy=PolicyConfig(on_suppressed="pause")) as engine:
        runs = await scenario(engine, outreach)
        assert await view(engine, runs["paused"]) == ("paused", None, "call-attempt")
        report = await engine.compliance.report(0, END)
    who = {run_id: name for name, run_id in runs.items()}
    # 11 emails (the paused run never reached its last one) and 6 gate decisions about calls
    assert report.policy_verdicts == {"allow": 12, "defer": 2, "pause": 1, "skip": 2}
    assert report.verdicts_by_gate == {
        "calling-hours": {"allow": 15, "defer": 2},
        "consent": {"allow": 15, "skip": 2},
        "suppression": {"allow": 16, "pause": 1},
    }
    waited = "calling hours: outside 08:00-21:00 (local 03:00)"
    assert sorted((who[d.run_id], d.contact_id, d.step_id, d.channel, d.gates, d.reason, d.tick, d.until_tick, d.ticks, d.seconds,
                   d.sent, d.sent_tick) for d in report.deferrals) == [
        ("mind", "c-mind", "call-attempt", "voice", ["calling-hours"], waited, CALL_DUE, TOKYO_OPENS, 5 * 3600, 18_000.0, False, None),
        ("tokyo", "c-tokyo", "call-attempt", "voice", ["calling-hours"], waited, CALL_DUE, TOKYO_OPENS, 5 * 3600, 18_000.0, True,
         TOKYO_OPENS),
    ]  # fmt: skip
    assert sorted((who[d.run_id], d.contact_id, d.step_id, d.channel, d.verdict, d.gate, d.reason, d.tick) for d in report.denials) == [
        ("mind", "c-mind", "call-attempt", "voice", "skip", "consent", f"voice consent revoked at tick {CHANGED_MIND}", TOKYO_OPENS),
        ("paused", "c-paused", "call-attempt", "voice", "pause", "suppression", "contact suppressed on voice", 7 * DAY),
        ("revoked", "c-revoked", "call-attempt", "voice", "skip", "consent", "voice consent revoked at tick 0", 7 * DAY),
    ]  # fmt: skip
    # the one call that rang, at 08:00 in Tokyo: its tick's local time, whatever the wall clock said
    assert [(who[c.run_id], c.tick, c.moment, c.zones_from, c.local_times, c.within_hours) for c in report.calls] == [
        ("tokyo", TOKYO_OPENS, "2026-01-12T23:00:00+00:00", "contact", {"Asia/Tokyo": "2026-01-13T08:00:00+09:00"}, True)]  # fmt: skip
    assert (report.calls_outside_hours, report.sends_by_channel, report.tick_interval_ms) == (0, {"email": 11, "voice": 1}, 1000)
    assert (report.calling_hours, report.calling_days, report.holidays) == (("08:00", "21:00"), ("mon", "tue", "wed", "thu", "fri",
                                                                                                "sat", "sun"), None)  # fmt: skip
    assert (report.chains.runs, report.chains.valid) == (4, 4)


async def test_a_deferral_sent_after_the_period_ends_is_reported_as_sent(deploy: Deploy, outreach: Plan) -> None:
    async with deploy(policy=PolicyConfig(on_suppressed="pause")) as engine:
        runs = await scenario(engine, outreach)
        report = await engine.compliance.report(0, CALL_DUE)  # the period ends before Tokyo's calling hours open
    [tokyo] = [d for d in report.deferrals if d.run_id == runs["tokyo"]]
    assert (tokyo.sent, tokyo.sent_tick) == (True, TOKYO_OPENS)
    assert report.calls == [] and report.policy_verdicts == {"allow": 8, "defer": 2, "pause": 1, "skip": 1}


async def test_the_report_reads_as_text(deploy: Deploy, outreach: Plan) -> None:
    async with deploy(policy=PolicyConfig(on_suppressed="pause")) as engine:
        runs = await scenario(engine, outreach)
        text = render_text(await engine.compliance.report(0, END))
    for name, run_id in runs.items():
        text = text.replace(run_id, f"<{name}>")
    waited = "[calling-hours] calling hours: outside 08:00-21:00 (local 03:00)"
    assert text.splitlines() == [
        "compliance report, ticks 0..864000 (a tick is 1000 ms)",
        "calling hours 08:00-21:00 on mon, tue, wed, thu, fri, sat, sun; public holidays: none configured",
        "",
        "sends: email 11, voice 1; consent at send: granted 1, none 11",
        "calls: 1, 0 outside calling hours or not judged",
        "  tick 644400  c-tokyo  call-attempt  2026-01-13 08:00 Asia/Tokyo (contact)  within hours  run <tokyo>",
        "policy decisions: 17 (allow 12, defer 2, pause 1, skip 2)",
        "  calling-hours    allow 15, defer 2",
        "  consent          allow 15, skip 2",
        "  suppression      allow 16, pause 1",
        "deferrals: 2",
        f"  tick 626400 -> 644400 (18000 ticks, 5:00:00)  c-tokyo  call-attempt (voice)  sent at tick 644400  {waited}  run <tokyo>",
        f"  tick 626400 -> 644400 (18000 ticks, 5:00:00)  c-mind  call-attempt (voice)  not sent  {waited}  run <mind>",
        "denials: 3",
        "  tick 604800  skip   c-revoked  call-attempt (voice)  [consent] voice consent revoked at tick 0  run <revoked>",
        "  tick 604800  pause  c-paused  call-attempt (voice)  [suppression] contact suppressed on voice  run <paused>",
        "  tick 644400  skip   c-mind  call-attempt (voice)  [consent] voice consent revoked at tick 630000  run <mind>",
        "suppressions added: 1",
        "  tick 0  c-paused  channel (voice)  do not call, from crm",
        "unsubscribes: 0",
        "audit chains: 4/4 valid",
    ]
