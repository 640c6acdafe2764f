"""Bounces that stick and complaints that stop everything, the same on both backends: a hard
bounce, from the adapter or as an `email.bounced` event, marks the contact bounced for every
run (and every later one), so no run mails the address again; a complaint suppresses the
contact."""

from __future__ import annotations

from dee import ContactSuppressedError, Engine, create_plan, steps
from dee.plan.model import Plan
from tests.contract.scenarios import DAY, VARS, actions, channels_dispatched, contact, view


async def test_a_hard_bounce_event_stops_every_run_of_the_contact_from_mailing_it(
    engine: Engine, outreach: Plan, welcome: Plan
) -> None:
    a = await engine.execute(outreach, contact("b1"), VARS)
    b = await engine.execute(welcome, contact("b1"), VARS, start_at=DAY)
    await engine.run_until_idle()
    await engine.ingest_event("email.bounced", "b1", {"kind": "hard"}, run_id=a.id, step_id="initial-email")
    await engine.advance_clock(10 * DAY)
    assert await view(engine, a.id) == ("completed", "bounced", "wait-1")  # the plan's exit condition contact.bounced
    assert await view(engine, b.id) == ("completed", "bounced", None)  # ended by its exit condition at its start
    assert await channels_dispatched(engine, a.id) == ["email"]  # the first email only
    assert await channels_dispatched(engine, b.id) == []  # never mailed
    # a plan without an exit condition for it: the send step itself refuses the address
    plain = create_plan("plain-mail", "Plain", [steps.send_email(id="mail", template_id="tmpl_welcome", subject="Hi"),
                                                steps.end(id="done", outcome="sent")])  # fmt: skip
    late = await engine.execute(plain, contact("b1"), VARS, start_at=engine.current_tick + 1)
    await engine.advance_clock(2)
    assert await view(engine, late.id) == ("completed", "undeliverable", "mail")
    assert await channels_dispatched(engine, late.id) == []


async def test_a_soft_bounce_event_marks_nothing(engine: Engine, welcome: Plan) -> None:
    run = await engine.execute(welcome, contact("b2"), VARS)
    await engine.run_until_idle()
    await engine.ingest_event("email.bounced", "b2", {"kind": "soft"}, run_id=run.id, step_id="welcome-email")
    await engine.run_until_idle()
    assert (await engine.get_run(run.id)).status == "waiting"
    assert [a for a, _, _ in await actions(engine, run.id, "run.cancelled", "run.completed")] == []


async def test_a_complaint_suppresses_the_contact(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    a = await engine.execute(outreach, contact("b3"), VARS)
    b = await engine.execute(welcome, contact("b3"), VARS)
    await engine.run_until_idle()
    await engine.ingest_event("email.complained", "b3", {}, run_id=a.id, step_id="initial-email")
    await engine.run_until_idle()
    assert [(await engine.get_run(r)).status for r in (a.id, b.id)] == ["cancelled", "cancelled"]
    last = (await engine.audit.get_by_run(b.id))[-1]
    assert (last.action, last.output) == ("run.cancelled", {"reason": "suppressed (global): complaint"})
    try:
        await engine.execute(welcome, contact("b3"), VARS)
    except ContactSuppressedError as exc:
        assert (exc.level, exc.reason) == ("global", "complaint")
    else:
        raise AssertionError("a complained contact was enrolled again")
    report = await engine.compliance.report(0, engine.current_tick)
    assert [(s.contact_id, s.level, s.source) for s in report.suppressions] == [("b3", "global", "email.complained")]


async def test_an_unsubscribe_stops_paused_and_failed_runs_too(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    paused = await engine.execute(outreach, contact("u1"), VARS)
    failed = await engine.execute(welcome, contact("u1", email="u1@fail.test"), VARS)
    await engine.run_until_idle()
    await engine.pause_run(paused.id)
    assert [(await engine.get_run(r)).status for r in (paused.id, failed.id)] == ["paused", "failed"]
    await engine.ingest_event("email.unsubscribed", "u1", {}, run_id=paused.id, step_id="initial-email")
    await engine.run_until_idle()
    assert [(await engine.get_run(r)).status for r in (paused.id, failed.id)] == ["cancelled", "cancelled"]
