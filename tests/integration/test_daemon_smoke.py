"""The done-when path of SPEC section 4 through the real daemon path (streams, workers, Postgres)."""

from __future__ import annotations

from dee import AlreadyEnrolledError, Engine, EngineConfig, load_plan

OUTREACH = "config/plans/sales-outreach-v2.yaml"
DAY = 86_400


async def test_outreach_run_through_the_daemon(deployment: EngineConfig) -> None:
    async with Engine(deployment, scheduler=True) as engine:
        plan = load_plan(OUTREACH)
        contact = {"id": "c1", "email": "c1@acme.test", "phone": "+15550001", "attributes": {"company": "Acme"}}
        run = await engine.execute(plan, contact, {"product": "DEE"})
        assert run.status in ("pending", "waiting")  # accepted; the next tick transaction starts it
        await engine.run_until_idle()
        await engine.ingest_event("email.opened", "c1", {}, step_id="initial-email")
        await engine.advance_clock(8 * DAY)
        done = await engine.get_run(run.id)
        assert (done.status, done.outcome) == ("completed", "no_response")
        entered = [(t.tick, t.step) for t in await engine.get_timeline(run.id) if t.action == "step.entered"]
        assert entered == [
            (0, "initial-email"), (0, "wait-1"), (3 * DAY, "check-email-1"), (3 * DAY, "warm-follow-up"),
            (3 * DAY, "wait-2"), (5 * DAY, "check-email-2"), (5 * DAY, "call-attempt"), (5 * DAY, "wait-4"),
            (7 * DAY, "breakup-email"), (7 * DAY, "end-no-reply"),
        ]  # fmt: skip
        assert (await engine.verify_audit_chain(run.id)).valid
        assert (await engine.replay(run.id)).identical
        await engine.execute(plan, {"id": "c2", "email": "c2@acme.test"}, {"product": "DEE"})
        try:
            await engine.execute(plan, {"id": "c2", "email": "c2@acme.test"}, {"product": "DEE"})
        except AlreadyEnrolledError as exc:
            assert exc.contact_id == "c2" and exc.plan_id == "sales-outreach-v2"
        else:
            raise AssertionError("a second execute for an enrolled contact must raise AlreadyEnrolledError")
