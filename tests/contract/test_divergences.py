"""Where the memory and daemon backends used to disagree, one test each; both must now behave
alike: plan-level suppressions need their plan, an unsubscribe before enrolment is kept with the
contact, an adapter that raises is a transient failure, `max_runs_per_tick` never changes a
trace, a failure without an error kind is permanent, and `bulk_cancel` counts what it cancelled.
"""

from __future__ import annotations

import pytest

from dee import ContactSuppressedError, DeeError, Engine
from dee.plan.model import Plan
from dee.plugin.manager import PluginManager
from tests.contract.conftest import Deploy
from tests.contract.scenarios import (
    DAY,
    OUTREACH_ID,
    VARS,
    WELCOME_ID,
    AdapterPlugin,
    KindlessFailureEmailAdapter,
    Line,
    RaisingEmailAdapter,
    actions,
    by_contact,
    channels_dispatched,
    cold_path,
    contact,
    error_of,
    hard_bounce_path,
    may_call,
    outputs,
    replied_path,
    same_partition,
    trace,
    unique,
    view,
    warm_path,
)

# ---- a. suppressions -----------------------------------------------------------------------


async def test_a_plan_level_suppression_needs_its_plan(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS)
    await engine.run_until_idle()

    with pytest.raises(DeeError) as caught:
        await engine.suppress("c1", "plan", "not interested", "crm")
    assert type(caught.value) is DeeError
    await engine.run_until_idle()
    assert [await view(engine, r) for r in (a.id, b.id)] == [("waiting", None, "wait-1"), ("waiting", None, "wait-1-day")]
    assert (await engine.compliance.report(0, engine.current_tick)).suppressions == []  # nothing recorded

    assert await engine.suppress("c1", "plan", "not interested", "crm", plan_id=WELCOME_ID) == 1
    await engine.run_until_idle()
    assert [await view(engine, r) for r in (a.id, b.id)] == [("waiting", None, "wait-1"), ("cancelled", None, "wait-1-day")]
    assert (await outputs(engine, b.id, "run.cancelled")) == [("wait-1-day", 0, {"reason": "suppressed (plan): not interested"})]
    with pytest.raises(ContactSuppressedError) as refused:
        await engine.execute(welcome, contact("c1"), VARS)
    assert error_of(refused.value) == (
        "ContactSuppressedError", {"contact_id": "c1", "level": "plan", "reason": "not interested"})  # fmt: skip
    await engine.cancel_run(a.id, "restart")
    again = await engine.execute(outreach, contact("c1"), VARS)  # the other plan is not covered
    await engine.run_until_idle()
    assert await view(engine, again.id) == ("waiting", None, "wait-1")
    recorded = (await engine.compliance.report(0, engine.current_tick)).suppressions
    assert [(s.contact_id, s.level, s.reason, s.source, s.channel, s.plan_id, s.tick) for s in recorded] == [
        ("c1", "plan", "not interested", "crm", None, WELCOME_ID, 0)]  # fmt: skip


async def test_a_channel_level_suppression_needs_its_channel_and_cancels_nothing(engine: Engine, outreach: Plan) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.run_until_idle()
    with pytest.raises(DeeError) as caught:
        await engine.suppress("c1", "channel", "no calls", "crm")
    assert type(caught.value) is DeeError
    assert await engine.suppress("c1", "channel", "no calls", "crm", channel="voice") == 0
    await engine.run_until_idle()
    assert await view(engine, run.id) == ("waiting", None, "wait-1")
    recorded = (await engine.compliance.report(0, engine.current_tick)).suppressions
    assert [(s.contact_id, s.level, s.channel, s.plan_id) for s in recorded] == [("c1", "channel", "voice", None)]


async def test_a_refused_suppression_says_what_it_lacks(engine: Engine) -> None:
    with pytest.raises(DeeError) as plan:
        await engine.suppress("c1", "plan", "not interested", "crm")
    with pytest.raises(DeeError) as channel:
        await engine.suppress("c1", "channel", "no calls", "crm")
    assert (str(plan.value), str(channel.value)) == (
        "a plan-level suppression needs a planId", "a channel-level suppression needs a channel")  # fmt: skip


async def test_a_global_suppression_cancels_every_run_of_the_contact_and_refuses_every_plan(
    engine: Engine, outreach: Plan, welcome: Plan
) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS, start_at=10)
    c = await engine.execute(outreach, contact("c2"), VARS)
    await engine.run_until_idle()
    assert await engine.suppress("c1", "global", "complaint", "support") == 2
    await engine.run_until_idle()
    assert [await view(engine, r) for r in (a.id, b.id, c.id)] == [
        ("cancelled", None, "wait-1"), ("cancelled", None, None), ("waiting", None, "wait-1")]  # fmt: skip
    assert await outputs(engine, a.id, "run.cancelled") == [("wait-1", 0, {"reason": "suppressed (global): complaint"})]
    assert await actions(engine, b.id) == [("run.started", None, 0), ("run.cancelled", None, 0)]
    for plan in (outreach, welcome):
        with pytest.raises(ContactSuppressedError) as refused:
            await engine.execute(plan, contact("c1"), VARS)
        assert error_of(refused.value) == (
            "ContactSuppressedError", {"contact_id": "c1", "level": "global", "reason": "complaint"})  # fmt: skip
    await engine.advance_clock(20)  # b never starts
    assert await view(engine, b.id) == ("cancelled", None, None)
    assert (await engine.list_runs(contact_id="c1")).total == 2
    other = await engine.execute(welcome, contact("c2"), VARS)  # other contacts are unaffected
    assert other.contact_id == "c2"


# ---- b. an unsubscribe before enrolment ----------------------------------------------------


async def test_an_unsubscribe_before_enrolment_is_a_suppression_the_later_enrolment_meets(engine: Engine, outreach: Plan) -> None:
    assert await engine.ingest_event("email.unsubscribed", "c1", {}, event_id="unsub-c1") == []
    await engine.run_until_idle()
    with pytest.raises(ContactSuppressedError, match="unsubscribe"):
        await engine.execute(outreach, contact("c1"), VARS)
    report = await engine.compliance.report(0, engine.current_tick)
    assert [(s.contact_id, s.level, s.reason, s.source) for s in report.suppressions] == [
        ("c1", "global", "unsubscribe", "email.unsubscribed")]  # fmt: skip
    # another contact of the same deployment is not affected
    other = await engine.execute(outreach, contact("c2"), VARS)
    await engine.run_until_idle()
    assert (await view(engine, other.id), await channels_dispatched(engine, other.id)) == (("waiting", None, "wait-1"), ["email"])


# ---- c. an adapter that raises ---------------------------------------------------------------


async def test_an_adapter_that_raises_is_a_transient_failure_retried_by_the_kernel(deploy: Deploy, outreach: Plan) -> None:
    adapter = RaisingEmailAdapter(unique("raising"))
    plugins = PluginManager.load(extra=[(unique("dee_test_raising"), AdapterPlugin(adapter))])
    async with deploy(plugins=plugins, email_adapter=adapter.name) as engine:
        once = await engine.execute(outreach, contact("once", "once@raise-once.test"), VARS)
        always = await engine.execute(outreach, contact("always", "always@raise.test"), VARS)
        await engine.run_until_idle()  # never raises: the failure is the run's, not the engine's
        await engine.advance_clock(100)
        retried = {r: await outputs(engine, r, "error.retried") for r in (once.id, always.id)}
        error = "RuntimeError: smtp connection exploded"
        assert retried[once.id] == [
            ("initial-email", 0, {"errorKind": "transient", "error": error, "attempt": 1, "nextTick": 30})]  # fmt: skip
        assert retried[always.id] == [
            ("initial-email", 0, {"errorKind": "transient", "error": error, "attempt": 1, "nextTick": 30}),
            ("initial-email", 30, {"errorKind": "transient", "error": error, "attempt": 2, "nextTick": 90}),
        ]  # fmt: skip
        assert await view(engine, once.id) == ("waiting", None, "wait-1")
        assert await view(engine, always.id) == ("failed", None, "initial-email")
        executed = await outputs(engine, always.id, "step.executed")
        assert [(s, t, o["result"]["outcome"], o["errorKind"], o["attempts"]) for s, t, o in executed if o] == [
            ("initial-email", 90, "failed", "transient", 3)]  # fmt: skip
        assert await outputs(engine, always.id, "run.failed") == [("initial-email", 90, {"error": f"transient: {error}"})]
        dispatched = await outputs(engine, always.id, "step.dispatched")
        assert [(t, (o or {}).get("attempt")) for _, t, o in dispatched] == [(0, 1), (30, 2), (90, 3)]
        assert sorted(adapter.calls) == [("always@raise.test", 1), ("always@raise.test", 2), ("always@raise.test", 3),
                                         ("once@raise-once.test", 1), ("once@raise-once.test", 2)]  # fmt: skip
        assert (await engine.verify_audit_chain(always.id)).valid is True


# ---- d. max_runs_per_tick --------------------------------------------------------------------


async def capped_scenario(engine: Engine, outreach: Plan) -> dict[str, tuple[tuple[str, str | None, str | None], list[Line]]]:
    """Five runs in one partition: a reply, an open, two silent and a hard bounce; to their end.
    Returns, per contact, the run's view and its trace."""
    ids = same_partition(5)
    emails = {ids[4]: f"{ids[4]}@bounce.test"}
    await may_call(engine, *ids)
    runs = {cid: (await engine.execute(outreach, contact(cid, emails.get(cid)), VARS)).id for cid in ids}
    await engine.run_until_idle()
    await engine.advance_clock(100)
    await engine.ingest_event("email.replied", ids[0], {}, step_id="initial-email", event_id="reply-0")
    await engine.ingest_event("email.opened", ids[1], {}, step_id="initial-email", event_id="open-1")
    await engine.advance_clock(10 * DAY)
    return {cid: (await view(engine, r), await trace(engine, r)) for cid, r in runs.items()}


async def test_max_runs_per_tick_never_changes_a_trace(deploy: Deploy, outreach: Plan) -> None:
    async with deploy(max_runs_per_tick=2) as capped:
        assert capped.config.scheduler.max_runs_per_tick == 2
        with_cap = await capped_scenario(capped, outreach)
    async with deploy() as uncapped:
        without = await capped_scenario(uncapped, outreach)
    assert with_cap == without
    c0, c1, c2, c3, c4 = same_partition(5)
    assert with_cap == {
        c0: (("completed", "replied", "wait-1"), replied_path(100)),
        c1: (("completed", "no_response", "end-no-reply"), warm_path(100)),
        c2: (("completed", "no_response", "end-no-reply"), cold_path()),
        c3: (("completed", "no_response", "end-no-reply"), cold_path()),
        c4: (("completed", "undeliverable", "initial-email"), hard_bounce_path()),
    }


# ---- e. a failure without an error kind ------------------------------------------------------


async def test_a_channel_failure_without_an_error_kind_is_permanent(deploy: Deploy, outreach: Plan) -> None:
    adapter = KindlessFailureEmailAdapter(unique("kindless"))
    plugins = PluginManager.load(extra=[(unique("dee_test_kindless"), AdapterPlugin(adapter))])
    async with deploy(plugins=plugins, email_adapter=adapter.name) as engine:
        run = await engine.execute(outreach, contact("c1"), VARS)
        await engine.advance_clock(100)
        assert await view(engine, run.id) == ("failed", None, "initial-email")
        executed = await outputs(engine, run.id, "step.executed")
        assert [(s, t, o["result"]["outcome"], o["errorKind"], o["error"], o["attempts"]) for s, t, o in executed if o] == [
            ("initial-email", 0, "failed", "permanent", None, 1)]  # fmt: skip
        assert await outputs(engine, run.id, "run.failed") == [("initial-email", 0, {"error": "permanent: channel failure"})]
        assert await actions(engine, run.id, "error.retried") == []  # a permanent failure is not retried


# ---- f. bulk_cancel ---------------------------------------------------------------------------


async def test_bulk_cancel_counts_only_the_runs_it_cancelled(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    await engine.execute(outreach, contact("c1"), VARS)  # waiting
    await engine.execute(outreach, contact("c2"), VARS)  # completed by a reply
    ended = await engine.execute(outreach, contact("c3"), VARS)  # cancelled before
    await engine.execute(outreach, contact("c4", "c4@fail.test"), VARS)  # failed (not terminal)
    await engine.execute(outreach, contact("c5"), VARS, start_at=50)  # pending
    await engine.execute(welcome, contact("c1"), VARS)
    await engine.execute(welcome, contact("c6"), VARS)
    await engine.run_until_idle()
    await engine.ingest_event("email.replied", "c2", {}, step_id="initial-email")
    await engine.cancel_run(ended.id, "earlier")
    await engine.run_until_idle()
    before = await by_contact(engine)
    assert before == {
        f"{OUTREACH_ID}/c1": ("waiting", None, "wait-1"), f"{OUTREACH_ID}/c2": ("completed", "replied", "wait-1"),
        f"{OUTREACH_ID}/c3": ("cancelled", None, "wait-1"), f"{OUTREACH_ID}/c4": ("failed", None, "initial-email"),
        f"{OUTREACH_ID}/c5": ("pending", None, None), f"{WELCOME_ID}/c1": ("waiting", None, "wait-1-day"),
        f"{WELCOME_ID}/c6": ("waiting", None, "wait-1-day"),
    }  # fmt: skip

    # terminal runs matched explicitly: nothing to cancel, no error
    assert await engine.bulk_cancel({"status": ["completed", "cancelled"]}, "no-op") == 0
    assert await by_contact(engine) == before
    assert await engine.bulk_cancel({"plan_id": OUTREACH_ID}, "campaign stopped") == 3  # c1, c4 and c5
    await engine.run_until_idle()
    after = await by_contact(engine, OUTREACH_ID)
    assert {k: s for k, (s, _, _) in after.items()} == {
        f"{OUTREACH_ID}/c1": "cancelled", f"{OUTREACH_ID}/c2": "completed", f"{OUTREACH_ID}/c3": "cancelled",
        f"{OUTREACH_ID}/c4": "cancelled", f"{OUTREACH_ID}/c5": "cancelled",
    }  # fmt: skip
    reasons = {}
    for run in (await engine.list_runs(plan_id=OUTREACH_ID)).runs:
        reasons[run.contact_id] = [(o or {}).get("reason") for _, _, o in await outputs(engine, run.id, "run.cancelled")]
    assert reasons == {"c1": ["campaign stopped"], "c2": [], "c3": ["earlier"], "c4": ["campaign stopped"],
                       "c5": ["campaign stopped"]}  # fmt: skip
    assert await engine.bulk_cancel({"plan_id": OUTREACH_ID}, "again") == 0
    assert await engine.bulk_cancel({"contact_id": "c1"}, "gone") == 1  # only the welcome run is left
    assert await engine.bulk_cancel({"contact_id": "c1"}, "gone again") == 0
    assert await engine.bulk_cancel({"status": "waiting", "plan_id": WELCOME_ID}, "x") == 1
    assert {k: s for k, (s, _, _) in (await by_contact(engine, WELCOME_ID)).items()} == {
        f"{WELCOME_ID}/c1": "cancelled", f"{WELCOME_ID}/c6": "cancelled"}  # fmt: skip
