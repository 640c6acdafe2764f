"""The Engine facade on the in-memory shell (SPEC 3.1 and 4): enrolment rules, listing, commands
and their refusals, events, suppression, the manual clock and run views."""

from __future__ import annotations

from typing import Any

import pytest

from dee import (
    AlreadyEnrolledError,
    BulkResult,
    ClockModeError,
    ConsentRecord,
    Contact,
    ContactSuppressedError,
    Engine,
    EngineConfig,
    ExecutionRun,
    InvalidTransitionError,
    RunNotFoundError,
    RunPage,
    SchedulerConfig,
    StartInPastError,
    load_plan,
)

DAY = 86400
OUTREACH = "config/plans/sales-outreach-v2.yaml"
WELCOME = "config/plans/welcome-sequence.yaml"
VARS = {"product": "DEE"}


def contact(cid: str, **extra: Any) -> dict[str, Any]:
    attributes = {"company": "Acme", "first_name": cid.upper()}
    return {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550001", "attributes": attributes, **extra}


def config(**scheduler: Any) -> EngineConfig:
    return EngineConfig(database="memory://", scheduler=SchedulerConfig(**{"clock": "manual", **scheduler}))


@pytest.fixture
async def engine() -> Any:
    async with Engine(config()) as e:
        yield e


@pytest.fixture
def outreach() -> Any:
    return load_plan(OUTREACH)


@pytest.fixture
def welcome() -> Any:
    return load_plan(WELCOME)


# ---- execute ---------------------------------------------------------------------------


async def test_execute_returns_a_pending_run_that_starts_when_the_clock_runs(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    assert isinstance(run, ExecutionRun)
    assert (run.plan_id, run.plan_version, run.contact_id, run.status, run.current_step) == (
        "sales-outreach-v2", 1, "c1", "pending", None)  # fmt: skip
    assert (run.start_tick, run.steps_completed, run.outcome, run.variables, run.completed_at) == (0, 0, None, VARS, None)
    assert run.started_at is not None
    await engine.run_until_idle()
    now = await engine.get_run(run.id)
    assert (now.status, now.current_step, now.steps_completed) == ("waiting", "wait-1", 1)


async def test_a_contact_may_be_a_contact_struct(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, Contact(id="c1", email="c1@acme.test", attributes={"company": "Acme"}), VARS)
    await engine.run_until_idle()
    assert (await engine.get_run(run.id)).current_step == "wait-1"


async def test_a_second_execute_for_an_enrolled_contact_raises_already_enrolled(engine: Engine, outreach: Any) -> None:
    first = await engine.execute(outreach, contact("c1"), VARS)
    with pytest.raises(AlreadyEnrolledError) as caught:
        await engine.execute(outreach, contact("c1"), VARS)
    assert (caught.value.plan_id, caught.value.contact_id, caught.value.run_id) == ("sales-outreach-v2", "c1", first.id)
    assert (await engine.list_runs()).total == 1


async def test_a_contact_can_be_enrolled_again_after_its_run_ended(engine: Engine, outreach: Any) -> None:
    first = await engine.execute(outreach, contact("c1"), VARS)
    await engine.cancel_run(first.id, "done")
    second = await engine.execute(outreach, contact("c1"), VARS)
    assert second.id != first.id
    assert (await engine.list_runs(contact_id="c1")).total == 2


async def test_the_same_contact_can_be_in_two_different_plans(engine: Engine, outreach: Any, welcome: Any) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS)
    assert a.id != b.id


async def test_the_same_idempotency_key_returns_the_first_run(engine: Engine, outreach: Any) -> None:
    first = await engine.execute(outreach, contact("c1"), VARS, idempotency_key="signup-42")
    await engine.run_until_idle()
    again = await engine.execute(outreach, contact("c1"), VARS, idempotency_key="signup-42")
    assert again.id == first.id
    assert again.status == "waiting"
    assert (await engine.list_runs()).total == 1
    other = await engine.execute(outreach, contact("c2"), VARS, idempotency_key="signup-43")
    assert other.id != first.id


async def test_start_at_in_the_past_is_refused(engine: Engine, outreach: Any) -> None:
    await engine.advance_clock(10)
    with pytest.raises(StartInPastError) as caught:
        await engine.execute(outreach, contact("c1"), VARS, start_at=9)
    assert (caught.value.start_at, caught.value.current_tick) == (9, 10)
    assert (await engine.list_runs()).total == 0
    now = await engine.execute(outreach, contact("c1"), VARS, start_at=10)
    assert now.start_tick == 10


async def test_start_at_in_the_future_stays_pending_until_that_tick(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS, start_at=100)
    await engine.advance_clock(99)
    assert (await engine.get_run(run.id)).status == "pending"
    await engine.advance_clock(1)
    view = await engine.get_run(run.id)
    assert (view.status, view.current_step, view.start_tick) == ("waiting", "wait-1", 100)
    entered = await engine.audit.query(run_id=run.id, actions=["step.entered"])
    assert [(e.step_id, e.tick) for e in entered] == [("initial-email", 100), ("wait-1", 100)]


async def test_an_unknown_run_raises_run_not_found(engine: Engine) -> None:
    for call in (engine.get_run, engine.pause_run, engine.resume_run, engine.retry_run,
                 engine.get_timeline, engine.verify_audit_chain, engine.replay):  # fmt: skip
        with pytest.raises(RunNotFoundError) as caught:
            await call("01UNKNOWN")
        assert caught.value.run_id == "01UNKNOWN"
    with pytest.raises(RunNotFoundError):
        await engine.cancel_run("01UNKNOWN", "x")
    with pytest.raises(RunNotFoundError):
        await engine.audit.get_by_run("01UNKNOWN")


# ---- list_runs -------------------------------------------------------------------------


async def five_runs(engine: Engine, outreach: Any, welcome: Any) -> list[str]:
    """c1..c3 in outreach, c1 and c4 in welcome; c2's outreach run cancelled, c3's paused."""
    ids = [
        (await engine.execute(outreach, contact("c1"), VARS)).id,
        (await engine.execute(outreach, contact("c2"), VARS)).id,
        (await engine.execute(outreach, contact("c3"), VARS)).id,
        (await engine.execute(welcome, contact("c1"), VARS)).id,
        (await engine.execute(welcome, contact("c4"), VARS)).id,
    ]
    await engine.run_until_idle()
    await engine.cancel_run(ids[1], "test")
    await engine.pause_run(ids[2])
    return ids


async def test_list_runs_without_filters_lists_everything_ordered_by_run_id(engine: Engine, outreach: Any, welcome: Any) -> None:
    ids = await five_runs(engine, outreach, welcome)
    page = await engine.list_runs()
    assert isinstance(page, RunPage)
    assert page.total == 5
    assert [r.id for r in page.runs] == sorted(ids)


async def test_run_ids_and_list_runs_follow_creation_order(engine: Engine, outreach: Any) -> None:
    # engine.list_runs: "ordered by run id (creation order)"; dee.ids: ULIDs "sortable by
    # creation time". Runs created within one millisecond must keep that promise too.
    # bulk_execute creates many runs per millisecond; run_ids lists them in creation order.
    result = await engine.bulk_execute(outreach, [contact(f"c{i:03d}") for i in range(300)], VARS)
    assert result.created == 300
    listed = [r.id for r in (await engine.list_runs(limit=1000)).runs]
    assert listed == result.run_ids


async def test_list_runs_filters_by_one_status_or_several(engine: Engine, outreach: Any, welcome: Any) -> None:
    ids = await five_runs(engine, outreach, welcome)
    waiting = await engine.list_runs(status="waiting")
    assert ([r.id for r in waiting.runs], waiting.total) == (sorted([ids[0], ids[3], ids[4]]), 3)
    cancelled = await engine.list_runs(status="cancelled")
    assert [r.id for r in cancelled.runs] == [ids[1]]
    several = await engine.list_runs(status=["paused", "cancelled"])
    assert ([r.id for r in several.runs], several.total) == (sorted([ids[1], ids[2]]), 2)
    assert (await engine.list_runs(status="failed")).total == 0


async def test_list_runs_filters_by_plan_and_contact_together(engine: Engine, outreach: Any, welcome: Any) -> None:
    ids = await five_runs(engine, outreach, welcome)
    assert [r.id for r in (await engine.list_runs(plan_id="welcome-sequence")).runs] == sorted([ids[3], ids[4]])
    assert [r.id for r in (await engine.list_runs(contact_id="c1")).runs] == sorted([ids[0], ids[3]])
    both = await engine.list_runs(plan_id="sales-outreach-v2", contact_id="c1")
    assert ([r.id for r in both.runs], both.total) == ([ids[0]], 1)
    mixed = await engine.list_runs(status="waiting", plan_id="sales-outreach-v2")
    assert [r.id for r in mixed.runs] == [ids[0]]
    assert (await engine.list_runs(plan_id="nope")).total == 0


async def test_list_runs_pages_with_limit_and_offset_and_reports_the_total(engine: Engine, outreach: Any, welcome: Any) -> None:
    ids = sorted(await five_runs(engine, outreach, welcome))
    first = await engine.list_runs(limit=2)
    second = await engine.list_runs(limit=2, offset=2)
    third = await engine.list_runs(limit=2, offset=4)
    beyond = await engine.list_runs(limit=2, offset=10)
    assert [r.id for r in first.runs] == ids[:2]
    assert [r.id for r in second.runs] == ids[2:4]
    assert [r.id for r in third.runs] == ids[4:]
    assert beyond.runs == []
    assert {first.total, second.total, third.total, beyond.total} == {5}
    filtered = await engine.list_runs(plan_id="sales-outreach-v2", limit=1, offset=1)
    outreach_ids = [r.id for r in (await engine.list_runs(plan_id="sales-outreach-v2")).runs]
    assert ([r.id for r in filtered.runs], filtered.total) == (outreach_ids[1:2], 3)


async def test_list_runs_filters_by_start_tick(engine: Engine, outreach: Any) -> None:
    early = await engine.execute(outreach, contact("c1"), VARS, start_at=5)
    late = await engine.execute(outreach, contact("c2"), VARS, start_at=50)
    assert [r.id for r in (await engine.list_runs(started_after=10)).runs] == [late.id]
    assert [r.id for r in (await engine.list_runs(started_before=10)).runs] == [early.id]


# ---- bulk ------------------------------------------------------------------------------


async def test_bulk_execute_counts_created_and_skipped(engine: Engine, outreach: Any) -> None:
    await engine.execute(outreach, contact("c2"), VARS)
    await engine.suppress("c4", "global", "asked", "support")
    result = await engine.bulk_execute(outreach, [contact("c1"), contact("c2"), contact("c3"), contact("c4"), contact("c1")], VARS)
    assert isinstance(result, BulkResult)
    assert (result.created, result.skipped, result.errors) == (2, 3, [])
    assert len(result.run_ids) == 2
    assert sorted([(await engine.get_run(r)).contact_id for r in result.run_ids]) == ["c1", "c3"]
    assert (await engine.list_runs()).total == 3


async def test_bulk_execute_reports_a_bad_contact_without_stopping(engine: Engine, outreach: Any) -> None:
    # SPEC 3.1: BulkResult(created, skipped, errors); one malformed contact is an error entry,
    # not an exception that aborts the batch half-way (c1 would already be enrolled).
    result = await engine.bulk_execute(outreach, [contact("c1"), {"id": "c2", "email": 5}, contact("c3")], VARS)
    assert (result.created, result.skipped) == (2, 0)
    assert [e.contact_id for e in result.errors] == ["c2"]
    assert sorted([(await engine.get_run(r)).contact_id for r in result.run_ids]) == ["c1", "c3"]


async def test_bulk_cancel_cancels_what_matches_and_counts_it(engine: Engine, outreach: Any, welcome: Any) -> None:
    ids = await five_runs(engine, outreach, welcome)
    cancelled = await engine.bulk_cancel({"plan_id": "sales-outreach-v2"}, "campaign stopped")
    assert cancelled == 2  # c1 waiting and c3 paused; c2's run was cancelled already
    statuses = {r.id: r.status for r in (await engine.list_runs()).runs}
    assert statuses == {ids[0]: "cancelled", ids[1]: "cancelled", ids[2]: "cancelled", ids[3]: "waiting", ids[4]: "waiting"}
    last = (await engine.audit.get_by_run(ids[2]))[-1]
    assert (last.action, last.output) == ("run.cancelled", {"reason": "campaign stopped"})
    assert await engine.bulk_cancel({"status": "waiting", "contact_id": "c4"}, "x") == 1
    assert (await engine.get_run(ids[4])).status == "cancelled"
    assert await engine.bulk_cancel({"plan_id": "sales-outreach-v2"}, "again") == 0


# ---- commands --------------------------------------------------------------------------


async def test_pause_and_resume_a_waiting_run(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.run_until_idle()
    await engine.pause_run(run.id)
    assert (await engine.get_run(run.id)).status == "paused"
    await engine.advance_clock(4 * DAY)  # wait-1 was due at 3 days: a paused run does not wake
    paused = await engine.get_run(run.id)
    assert (paused.status, paused.current_step) == ("paused", "wait-1")
    await engine.resume_run(run.id)
    await engine.run_until_idle()
    resumed = await engine.get_run(run.id)
    # the overdue wait fires at the resume tick; no open, so the cold path: sent, now on wait-3
    assert (resumed.status, resumed.current_step, resumed.current_tick) == ("waiting", "wait-3", 4 * DAY)
    done = await engine.audit.query(run_id=run.id, actions=["wait.completed"])
    assert [(e.step_id, e.tick, e.output["result"]["targetTick"]) for e in done] == [("wait-1", 4 * DAY, 3 * DAY)]  # type: ignore[index]


async def test_resume_before_the_timer_keeps_its_target_tick(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.run_until_idle()
    await engine.pause_run(run.id)
    await engine.advance_clock(DAY)
    await engine.resume_run(run.id)
    assert (await engine.get_run(run.id)).status == "waiting"
    await engine.advance_clock(2 * DAY)
    done = await engine.audit.query(run_id=run.id, actions=["wait.completed"])
    assert [(e.step_id, e.tick) for e in done] == [("wait-1", 3 * DAY)]


@pytest.mark.parametrize("status", ["pending", "paused", "completed", "cancelled"])
async def test_pause_is_refused_unless_active_or_waiting(engine: Engine, outreach: Any, status: str) -> None:
    run_id = await run_in(engine, outreach, status)
    before = await engine.audit.get_by_run(run_id)
    with pytest.raises(InvalidTransitionError) as caught:
        await engine.pause_run(run_id)
    assert (caught.value.run_id, caught.value.from_status) == (run_id, status)
    assert (await engine.get_run(run_id)).status == status
    assert await engine.audit.get_by_run(run_id) == before


@pytest.mark.parametrize("status", ["pending", "waiting", "completed", "cancelled"])
async def test_resume_is_refused_unless_paused(engine: Engine, outreach: Any, status: str) -> None:
    run_id = await run_in(engine, outreach, status)
    with pytest.raises(InvalidTransitionError) as caught:
        await engine.resume_run(run_id)
    assert caught.value.from_status == status
    assert (await engine.get_run(run_id)).status == status


@pytest.mark.parametrize("status", ["pending", "waiting", "paused", "completed", "cancelled"])
async def test_retry_is_refused_unless_failed(engine: Engine, outreach: Any, status: str) -> None:
    run_id = await run_in(engine, outreach, status)
    with pytest.raises(InvalidTransitionError) as caught:
        await engine.retry_run(run_id)
    assert caught.value.from_status == status
    assert (await engine.get_run(run_id)).status == status


@pytest.mark.parametrize("status", ["completed", "cancelled"])
async def test_cancel_is_refused_for_ended_runs(engine: Engine, outreach: Any, status: str) -> None:
    run_id = await run_in(engine, outreach, status)
    with pytest.raises(InvalidTransitionError) as caught:
        await engine.cancel_run(run_id, "again")
    assert caught.value.from_status == status


@pytest.mark.parametrize("status", ["pending", "waiting", "paused", "failed"])
async def test_cancel_ends_any_non_terminal_run_with_its_reason(engine: Engine, outreach: Any, status: str) -> None:
    run_id = await run_in(engine, outreach, status)
    await engine.cancel_run(run_id, "customer asked")
    view = await engine.get_run(run_id)
    assert (view.status, view.steps_remaining) == ("cancelled", 0)
    assert view.completed_at is not None
    last = (await engine.audit.get_by_run(run_id))[-1]
    assert (last.action, last.output) == ("run.cancelled", {"reason": "customer asked"})
    assert (await engine.verify_audit_chain(run_id)).valid is True


async def run_in(engine: Engine, plan: Any, status: str) -> str:
    """A run of `plan` brought into `status` through the public API."""
    if status == "failed":
        run = await engine.execute(plan, contact("cf", email="cf@fail.test"), VARS)
        await engine.run_until_idle()
    elif status == "completed":
        run = await engine.execute(plan, contact("cc"), VARS)
        await engine.run_until_idle()
        await engine.ingest_event("email.replied", "cc", {}, step_id="initial-email")
        await engine.run_until_idle()
    else:
        run = await engine.execute(plan, contact("c" + status), VARS, start_at=engine.current_tick + (5 if status == "pending" else 0))
        if status != "pending":
            await engine.run_until_idle()
        if status == "paused":
            await engine.pause_run(run.id)
        if status == "cancelled":
            await engine.cancel_run(run.id, "setup")
    assert (await engine.get_run(run.id)).status == status
    return run.id


async def test_retry_re_enters_the_failed_step_with_a_new_attempt(engine: Engine, outreach: Any) -> None:
    run_id = await run_in(engine, outreach, "failed")
    failed = await engine.get_run(run_id)
    assert (failed.status, failed.current_step) == ("failed", "initial-email")
    await engine.advance_clock(7)
    await engine.retry_run(run_id)
    await engine.run_until_idle()  # the retried send's answer
    retried = (await engine.audit.query(run_id=run_id, actions=["run.retried"]))
    assert [(e.step_id, e.tick, e.output) for e in retried] == [("initial-email", 7, {"attempt": 2})]
    entered = await engine.audit.query(run_id=run_id, actions=["step.entered"])
    assert [(e.step_id, e.tick) for e in entered] == [("initial-email", 0), ("initial-email", 7)]
    keys = [e.output["idempotencyKey"] for e in await engine.audit.query(run_id=run_id, actions=["step.dispatched"])]  # type: ignore[index]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert (await engine.get_run(run_id)).status == "failed"  # fail.test always fails
    assert (await engine.verify_audit_chain(run_id)).valid is True


# ---- events ----------------------------------------------------------------------------


async def test_the_same_event_id_is_applied_once(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.run_until_idle()
    first = await engine.ingest_event("email.opened", "c1", {}, step_id="initial-email", event_id="ev-1")
    await engine.run_until_idle()
    second = await engine.ingest_event("email.opened", "c1", {}, step_id="initial-email", event_id="ev-1")
    await engine.run_until_idle()
    assert (first, second) == ([run.id], [run.id])  # a retry gets the first answer; applied once (below)
    received = await engine.audit.query(run_id=run.id, actions=["event.received"])
    assert [(e.step_id, e.input["eventId"]) for e in received] == [("initial-email", "ev-1")]  # type: ignore[index]


async def test_an_event_without_run_id_reaches_every_non_terminal_run_of_the_contact(engine: Engine, outreach: Any, welcome: Any) -> None:
    ended = await engine.execute(outreach, contact("c1"), VARS)
    await engine.cancel_run(ended.id, "restart")
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS)
    other = await engine.execute(outreach, contact("c2"), VARS)
    await engine.run_until_idle()
    routed = await engine.ingest_event("email.clicked", "c1", {"url": "https://x"}, event_id="ev-9")
    await engine.run_until_idle()
    assert routed == [a.id, b.id]
    for run_id, expected in ((a.id, 1), (b.id, 1), (ended.id, 0), (other.id, 0)):
        got = await engine.audit.query(run_id=run_id, actions=["event.received"])
        assert len(got) == expected, run_id


async def test_an_event_with_run_id_reaches_only_that_run(engine: Engine, outreach: Any, welcome: Any) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS)
    await engine.run_until_idle()
    assert await engine.ingest_event("email.clicked", "c1", {}, run_id=b.id) == [b.id]
    await engine.run_until_idle()
    assert await engine.audit.query(run_id=a.id, actions=["event.received"]) == []
    assert len(await engine.audit.query(run_id=b.id, actions=["event.received"])) == 1


async def test_a_reply_ends_the_run_through_the_exit_condition(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.advance_clock(DAY)
    await engine.ingest_event("email.replied", "c1", {}, step_id="initial-email")
    await engine.run_until_idle()
    view = await engine.get_run(run.id)
    assert (view.status, view.outcome, view.current_tick) == ("completed", "replied", DAY)


# ---- suppression and consent -----------------------------------------------------------


async def test_a_global_suppression_cancels_the_contacts_runs_and_blocks_new_ones(engine: Engine, outreach: Any, welcome: Any) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS, start_at=10)
    c = await engine.execute(outreach, contact("c2"), VARS)
    await engine.run_until_idle()
    cancelled = await engine.suppress("c1", "global", "complaint", "support")
    assert cancelled == 2
    await engine.run_until_idle()  # the partition applies the cancellations at its next tick
    assert [(await engine.get_run(r)).status for r in (a.id, b.id, c.id)] == ["cancelled", "cancelled", "waiting"]
    last = (await engine.audit.get_by_run(a.id))[-1]
    assert (last.action, last.output) == ("run.cancelled", {"reason": "suppressed (global): complaint"})
    with pytest.raises(ContactSuppressedError) as caught:
        await engine.execute(outreach, contact("c1"), VARS)
    assert (caught.value.contact_id, caught.value.level) == ("c1", "global")
    with pytest.raises(ContactSuppressedError):
        await engine.execute(welcome, contact("c1"), VARS)
    await engine.execute(welcome, contact("c2"), VARS)  # others are unaffected


async def test_a_plan_suppression_covers_only_that_plan(engine: Engine, outreach: Any, welcome: Any) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS)
    await engine.run_until_idle()
    assert await engine.suppress("c1", "plan", "not interested", "crm", plan_id="welcome-sequence") == 1
    await engine.run_until_idle()
    assert [(await engine.get_run(r)).status for r in (a.id, b.id)] == ["waiting", "cancelled"]
    with pytest.raises(ContactSuppressedError):
        await engine.execute(welcome, contact("c1"), VARS)


async def test_record_consent_stamps_the_current_tick(engine: Engine) -> None:
    await engine.advance_clock(42)
    await engine.record_consent(ConsentRecord(contact_id="c1", channel="email", status="granted", source="form"))
    assert engine._backend.store.consents[-1].tick == 42


# ---- the clock -------------------------------------------------------------------------


async def test_the_manual_clock_cannot_be_driven_on_a_wall_clock_engine() -> None:
    engine = Engine(EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="wall")))
    with pytest.raises(ClockModeError):
        await engine.advance_clock(1)
    with pytest.raises(ClockModeError):
        await engine.run_until_idle()
    assert engine.current_tick == 0


async def test_the_clock_only_moves_forward(engine: Engine) -> None:
    await engine.advance_clock(5)
    with pytest.raises(ValueError):
        await engine.advance_clock(-1)
    assert engine.current_tick == 5


async def test_advance_clock_fires_timers_at_their_own_tick(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.advance_clock(10 * DAY)  # one call crossing several timers
    view = await engine.get_run(run.id)
    assert (view.status, view.outcome, view.current_tick) == ("completed", "no_response", 9 * DAY)
    done = await engine.audit.query(run_id=run.id, actions=["wait.completed"])
    assert [(e.step_id, e.tick) for e in done] == [("wait-1", 3 * DAY), ("wait-3", 7 * DAY), ("wait-4", 9 * DAY)]
    assert engine.current_tick == 10 * DAY


# ---- views -----------------------------------------------------------------------------


async def test_get_context_at_returns_what_the_step_saw(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.advance_clock(100)
    await engine.ingest_event("email.opened", "c1", {}, step_id="initial-email")
    await engine.advance_clock(4 * DAY)
    ctx = await engine.audit.get_context_at(run.id, "check-email-1")
    assert ctx is not None
    assert ctx["tick"] == 3 * DAY
    assert ctx["variables"] == VARS
    assert ctx["contact"]["id"] == "c1" and ctx["contact"]["attributes"] == {"company": "Acme", "first_name": "C1"}
    assert [dict(e) for e in ctx["events"]] == [{"type": "email.opened", "step_id": "initial-email", "tick": 100}]
    assert [(r["stepId"], r["outcome"]) for r in ctx["results"]] == [("initial-email", "delivered"), ("wait-1", "completed")]
    first = await engine.audit.get_context_at(run.id, "initial-email")
    assert first is not None
    assert (first["tick"], list(first["events"]), list(first["results"])) == (0, [], [])
    assert await engine.audit.get_context_at(run.id, "cold-follow-up") is None


async def test_steps_remaining_decreases_along_the_run(engine: Engine, outreach: Any) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    seen = [(run.status, run.current_step, run.steps_remaining, run.steps_completed)]
    await engine.run_until_idle()
    await engine.ingest_event("email.opened", "c1", {}, step_id="initial-email")
    for ticks in (0, 3 * DAY, 2 * DAY, 2 * DAY):
        await engine.advance_clock(ticks)
        view = await engine.get_run(run.id)
        seen.append((view.status, view.current_step, view.steps_remaining, view.steps_completed))
    assert seen == [
        ("pending", None, 10, 0),
        ("waiting", "wait-1", 9, 1),
        ("waiting", "wait-2", 6, 4),
        ("waiting", "wait-4", 3, 7),
        ("completed", "end-no-reply", 0, 10),
    ]


async def test_audit_query_filters_by_action_and_tick_across_runs(engine: Engine, outreach: Any) -> None:
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(outreach, contact("c2"), VARS, start_at=10)
    await engine.advance_clock(20)
    started = await engine.audit.query(actions=["run.started"])
    assert sorted(e.run_id for e in started) == sorted([a.id, b.id])
    late = await engine.audit.query(actions=["step.entered"], from_tick=5, to_tick=20)
    assert [(e.run_id, e.step_id, e.tick) for e in late] == [(b.id, "initial-email", 10), (b.id, "wait-1", 10)]
