"""The whole Engine API of SPEC section 3.1 through the real daemon path: writes are stream
messages answered after commit by the in-process scheduler, reads come from Postgres.

Tests that count or cancel across the whole deployment (list_runs totals, bulk operations,
availability) get their own migrated deployment. The others share one module-wide deployment
and engine to keep the file fast: each uses its own contact ids (`uid`) and works with ticks
relative to the clock when it starts (`t0`), since the manual clock belongs to the deployment.
Run status rules are those of SPEC section 4; runs reach each status through the public API.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio

from dee import (
    AlreadyEnrolledError,
    BulkResult,
    ConsentRecord,
    ContactSuppressedError,
    DeeError,
    Engine,
    EngineConfig,
    EngineUnavailableError,
    ExecutionRun,
    RunNotFoundError,
    RunPage,
    StartInPastError,
    load_plan,
    partition_for,
)
from dee.config import ClientConfig
from dee.ops.scratch import scratch_deployment
from dee.plan.model import Plan
from tests.integration.conftest import deployment_config

DAY = 86_400
OUTREACH = "config/plans/sales-outreach-v2.yaml"
WELCOME = "config/plans/welcome-sequence.yaml"
VARS = {"product": "DEE"}
STATUSES = ("pending", "waiting", "paused", "failed", "completed", "cancelled")

# One event loop for the whole module: the shared engine's tasks must keep running (a loop
# frozen while other tests run lets its Redis reads time out).
pytestmark = pytest.mark.asyncio(loop_scope="module")
_counter = itertools.count()


def uid(name: str) -> str:
    """A contact id no other test of the shared deployment uses."""
    return f"{name}-{next(_counter)}"


def contact(cid: str, email: str | None = None) -> dict[str, Any]:
    return {
        "id": cid, "email": email or f"{cid}@acme.test", "phone": "+15550001",
        "attributes": {"company": "Acme", "first_name": cid.upper()},
    }  # fmt: skip


@pytest.fixture(scope="module")
def outreach() -> Plan:
    return load_plan(OUTREACH)


@pytest.fixture(scope="module")
def welcome() -> Plan:
    return load_plan(WELCOME)


@pytest_asyncio.fixture(loop_scope="module")
async def deployment(request: pytest.FixtureRequest) -> AsyncIterator[EngineConfig]:
    """conftest's `deployment` (with its `deployment` marker), on the module's event loop."""
    marker = request.node.get_closest_marker("deployment")
    config = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}", **(marker.kwargs if marker else {}))
    async with scratch_deployment(config):
        yield config


@pytest_asyncio.fixture(loop_scope="module")
async def engine(deployment: EngineConfig) -> AsyncIterator[Engine]:
    """An engine on a deployment of its own."""
    async with Engine(deployment, scheduler=True) as e:
        yield e


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_config() -> AsyncIterator[EngineConfig]:
    async with scratch_deployment(deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}")) as config:
        yield config


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def eng(shared_config: EngineConfig) -> AsyncIterator[Engine]:
    """The engine of the module-wide deployment."""
    async with Engine(shared_config, scheduler=True) as e:
        await e.run_until_idle()
        yield e


async def now(engine: Engine) -> int:
    """The deployment's manual tick once everything due by it has been processed."""
    await engine.run_until_idle()
    return engine.current_tick


async def actions(engine: Engine, run_id: str) -> list[tuple[str, str | None, int]]:
    return [(e.action, e.step_id, e.tick) for e in await engine.audit.get_by_run(run_id)]


async def runs_in_every_status(engine: Engine, plan: Plan) -> dict[str, str]:
    """One run of `plan` per status of STATUSES, each for its own contact, through the public API."""
    t0 = await now(engine)
    who = {s: uid(f"c-{s}") for s in STATUSES}
    ids = {
        "pending": (await engine.execute(plan, contact(who["pending"]), VARS, start_at=t0 + 50)).id,
        "waiting": (await engine.execute(plan, contact(who["waiting"]), VARS)).id,
        "paused": (await engine.execute(plan, contact(who["paused"]), VARS)).id,
        "failed": (await engine.execute(plan, contact(who["failed"], "x@fail.test"), VARS)).id,
        "completed": (await engine.execute(plan, contact(who["completed"]), VARS)).id,
        "cancelled": (await engine.execute(plan, contact(who["cancelled"]), VARS)).id,
    }
    await engine.run_until_idle()
    await engine.pause_run(ids["paused"])
    await engine.cancel_run(ids["cancelled"], "setup")
    await engine.ingest_event("email.replied", who["completed"], {}, step_id="initial-email")
    await engine.run_until_idle()
    assert {s: (await engine.get_run(r)).status for s, r in ids.items()} == {s: s for s in STATUSES}
    return ids


async def refusals(call: Any, ids: dict[str, str], statuses: list[str]) -> dict[str, Any]:
    """What `call(run_id)` raised for the run in each status: (error class, run, from, to)."""
    seen: dict[str, Any] = {}
    for status in statuses:
        try:
            await call(ids[status])
        except DeeError as exc:
            seen[status] = (type(exc).__name__, getattr(exc, "run_id", None), getattr(exc, "from_status", None),
                            getattr(exc, "to_status", None))  # fmt: skip
        else:
            seen[status] = "accepted"
    return seen


# ---- execute (own deployments) -------------------------------------------------------------


async def test_execute_returns_the_run(engine: Engine, outreach: Plan) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    assert isinstance(run, ExecutionRun)
    assert (run.plan_id, run.plan_version, run.contact_id) == ("sales-outreach-v2", 1, "c1")
    # the reply comes after the enrolment commit; the first tick may or may not have run by then
    assert (run.status, run.current_step) in (("pending", None), ("waiting", "initial-email"))
    assert (run.start_tick, run.current_tick, run.outcome, run.variables, run.completed_at) == (0, 0, None, VARS, None)
    assert run.started_at is not None
    await engine.run_until_idle()
    view = await engine.get_run(run.id)
    assert (view.status, view.current_step, view.steps_completed, view.steps_remaining) == ("waiting", "wait-1", 1, 9)
    assert (await engine.list_runs()).runs == [view]


async def test_start_at_in_the_past_raises_start_in_past(engine: Engine, outreach: Plan) -> None:
    await engine.advance_clock(10)
    with pytest.raises(StartInPastError) as caught:
        await engine.execute(outreach, contact("c1"), VARS, start_at=9)
    assert (caught.value.start_at, caught.value.current_tick) == (9, 10)
    assert (await engine.list_runs()).total == 0
    run = await engine.execute(outreach, contact("c1"), VARS, start_at=10)
    assert run.start_tick == 10
    await engine.run_until_idle()
    started = await engine.get_run(run.id)
    assert (started.status, started.current_step, started.current_tick) == ("waiting", "wait-1", 10)


# ---- execute (shared deployment) -----------------------------------------------------------


async def test_a_second_execute_raises_already_enrolled_with_the_first_run(eng: Engine, outreach: Plan) -> None:
    cid = uid("enrolled")
    first = await eng.execute(outreach, contact(cid), VARS)
    with pytest.raises(AlreadyEnrolledError) as caught:
        await eng.execute(outreach, contact(cid), VARS)
    assert (caught.value.contact_id, caught.value.plan_id, caught.value.run_id) == (cid, "sales-outreach-v2", first.id)
    assert (await eng.list_runs(contact_id=cid)).total == 1
    await eng.cancel_run(first.id, "restart")
    second = await eng.execute(outreach, contact(cid), VARS)  # a terminal run does not block
    assert second.id != first.id
    assert [r.id for r in (await eng.list_runs(contact_id=cid)).runs] == [first.id, second.id]


async def test_the_same_idempotency_key_twice_returns_the_first_run(eng: Engine, outreach: Plan) -> None:
    cid, key = uid("idem"), uid("signup")
    first = await eng.execute(outreach, contact(cid), VARS, idempotency_key=key)
    await eng.run_until_idle()
    again = await eng.execute(outreach, contact(cid), VARS, idempotency_key=key)
    assert (again.id, again.status, again.current_step) == (first.id, "waiting", "wait-1")
    assert (await eng.list_runs(contact_id=cid)).total == 1
    other = await eng.execute(outreach, contact(uid("idem")), VARS, idempotency_key=key + "-other")
    assert other.id != first.id


async def test_start_at_in_the_future_stays_pending_until_the_clock_reaches_it(eng: Engine, outreach: Plan) -> None:
    t0 = await now(eng)
    run = await eng.execute(outreach, contact(uid("future")), VARS, start_at=t0 + 100)
    assert (run.status, run.current_step, run.start_tick, run.steps_remaining) == ("pending", None, t0 + 100, 10)
    await eng.advance_clock(99)
    assert (await eng.get_run(run.id)).status == "pending"
    await eng.advance_clock(1)
    view = await eng.get_run(run.id)
    assert (view.status, view.current_step, view.start_tick, view.current_tick) == ("waiting", "wait-1", t0 + 100, t0 + 100)
    entered = await eng.audit.query(run_id=run.id, actions=["step.entered"])
    assert [(e.step_id, e.tick) for e in entered] == [("initial-email", t0 + 100), ("wait-1", t0 + 100)]


async def test_unknown_runs_raise_run_not_found(eng: Engine) -> None:
    for call in (eng.get_run, eng.pause_run, eng.resume_run, eng.retry_run,
                 eng.get_timeline, eng.verify_audit_chain, eng.replay, eng.debug,
                 eng.audit.get_by_run):  # fmt: skip
        with pytest.raises(RunNotFoundError) as caught:
            await call("01UNKNOWNRUN")
        assert caught.value.run_id == "01UNKNOWNRUN", call
    with pytest.raises(RunNotFoundError) as caught:
        await eng.cancel_run("01UNKNOWNRUN", "x")
    assert caught.value.run_id == "01UNKNOWNRUN"


# ---- list_runs and bulk (own deployments) ---------------------------------------------------


async def test_list_runs_filters_pages_and_counts(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    ids = [
        (await engine.execute(outreach, contact("c1"), VARS)).id,
        (await engine.execute(outreach, contact("c2"), VARS)).id,
        (await engine.execute(outreach, contact("c3"), VARS)).id,
        (await engine.execute(welcome, contact("c1"), VARS)).id,
        (await engine.execute(welcome, contact("c4"), VARS, start_at=20)).id,
    ]
    await engine.run_until_idle()
    await engine.cancel_run(ids[1], "test")
    await engine.pause_run(ids[2])

    everything = await engine.list_runs()
    assert isinstance(everything, RunPage)
    assert ([r.id for r in everything.runs], everything.total) == (sorted(ids), 5)
    waiting = await engine.list_runs(status="waiting")
    assert ([r.id for r in waiting.runs], waiting.total) == (sorted([ids[0], ids[3]]), 2)
    several = await engine.list_runs(status=["paused", "cancelled", "pending"])
    assert ([r.id for r in several.runs], several.total) == (sorted([ids[1], ids[2], ids[4]]), 3)
    assert (await engine.list_runs(status="failed")) == RunPage([], 0)
    by_plan = await engine.list_runs(plan_id="welcome-sequence")
    assert ([r.id for r in by_plan.runs], by_plan.total) == (sorted([ids[3], ids[4]]), 2)
    by_contact = await engine.list_runs(contact_id="c1")
    assert ([r.id for r in by_contact.runs], by_contact.total) == (sorted([ids[0], ids[3]]), 2)
    both = await engine.list_runs(plan_id="sales-outreach-v2", contact_id="c1", status="waiting")
    assert ([r.id for r in both.runs], both.total) == ([ids[0]], 1)
    assert (await engine.list_runs(plan_id="nope")).total == 0

    ordered = sorted(ids)
    pages = [await engine.list_runs(limit=2, offset=o) for o in (0, 2, 4, 10)]
    assert [[r.id for r in p.runs] for p in pages] == [ordered[:2], ordered[2:4], ordered[4:], []]
    assert [p.total for p in pages] == [5, 5, 5, 5]
    page = await engine.list_runs(plan_id="sales-outreach-v2", limit=1, offset=1)
    assert ([r.id for r in page.runs], page.total) == ([sorted(ids[:3])[1]], 3)
    assert [r.id for r in (await engine.list_runs(started_after=10)).runs] == [ids[4]]
    assert [r.id for r in (await engine.list_runs(started_before=10)).runs] == sorted(ids[:4])


async def test_bulk_execute_counts_created_and_skipped(engine: Engine, outreach: Plan) -> None:
    enrolled = await engine.execute(outreach, contact("c2"), VARS)
    await engine.suppress("c4", "global", "asked", "support")
    batch = [contact("c1"), contact("c2"), contact("c3"), contact("c4"), contact("c1"), {"id": "c5", "email": 5}]
    result = await engine.bulk_execute(outreach, batch, VARS)
    assert isinstance(result, BulkResult)
    assert (result.created, result.skipped, len(result.run_ids)) == (2, 3, 2)
    assert [e.contact_id for e in result.errors] == ["c5"]
    assert sorted([(await engine.get_run(r)).contact_id for r in result.run_ids]) == ["c1", "c3"]
    page = await engine.list_runs()
    assert (page.total, sorted(r.id for r in page.runs)) == (3, sorted([enrolled.id, *result.run_ids]))


async def test_bulk_execute_of_2000_contacts_across_partitions_lists_every_run(engine: Engine, outreach: Plan) -> None:
    people = [contact(f"bulk-{i:04d}") for i in range(2000)]
    assert {partition_for(p["id"], 4) for p in people} == {0, 1, 2, 3}
    result = await engine.bulk_execute(outreach, people, VARS)
    assert (result.created, result.skipped, result.errors) == (2000, 0, [])
    assert len(result.run_ids) == len(set(result.run_ids)) == 2000
    page = await engine.list_runs(limit=5000)
    assert page.total == 2000
    assert sorted(r.id for r in page.runs) == sorted(result.run_ids)
    assert [r.id for r in page.runs] == result.run_ids  # run_ids in creation (= run id) order
    assert sorted(r.contact_id for r in page.runs) == [p["id"] for p in people]
    await engine.run_until_idle()
    assert (await engine.list_runs(status="waiting", limit=1)).total == 2000
    assert {r.current_step for r in (await engine.list_runs(limit=5000)).runs} == {"wait-1"}
    again = await engine.bulk_execute(outreach, people[:100], VARS)
    assert (again.created, again.skipped, again.run_ids) == (0, 100, [])


async def test_bulk_cancel_cancels_what_matches_and_counts_it(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    a = (await engine.execute(outreach, contact("c1"), VARS)).id
    b = (await engine.execute(outreach, contact("c2"), VARS)).id
    c = (await engine.execute(outreach, contact("c3"), VARS, start_at=30)).id
    d = (await engine.execute(welcome, contact("c1"), VARS)).id
    e = (await engine.execute(welcome, contact("c4"), VARS)).id
    await engine.run_until_idle()
    await engine.cancel_run(b, "earlier")
    await engine.pause_run(a)
    assert await engine.bulk_cancel({"plan_id": "sales-outreach-v2"}, "campaign stopped") == 2  # a paused, c pending
    statuses = {r.id: r.status for r in (await engine.list_runs()).runs}
    assert statuses == {a: "cancelled", b: "cancelled", c: "cancelled", d: "waiting", e: "waiting"}
    for run_id in (a, c):
        last = (await engine.audit.get_by_run(run_id))[-1]
        assert (last.action, last.output) == ("run.cancelled", {"reason": "campaign stopped"})
    assert (await engine.audit.get_by_run(b))[-1].output == {"reason": "earlier"}
    assert await engine.bulk_cancel({"plan_id": "sales-outreach-v2"}, "again") == 0
    # list_runs-style filters: `status` may be one status (a string) or a list
    assert await engine.bulk_cancel({"status": ["waiting"], "contact_id": "c4"}, "x") == 1
    assert (await engine.get_run(e)).status == "cancelled"
    assert await engine.bulk_cancel({"status": "waiting", "contact_id": "c1"}, "y") == 1
    assert (await engine.get_run(d)).status == "cancelled"


# ---- commands from every status (SPEC section 4) ----------------------------------------


async def test_pause_from_every_status(eng: Engine, outreach: Plan) -> None:
    ids = await runs_in_every_status(eng, outreach)
    refused = [s for s in STATUSES if s != "waiting"]
    before = {s: await actions(eng, ids[s]) for s in refused}
    t = await now(eng)
    await eng.pause_run(ids["waiting"])
    view = await eng.get_run(ids["waiting"])
    assert (view.status, view.current_step) == ("paused", "wait-1")
    assert (await actions(eng, ids["waiting"]))[-1] == ("run.paused", "wait-1", t)
    assert await refusals(eng.pause_run, ids, refused) == {
        s: ("InvalidTransitionError", ids[s], s, "paused") for s in refused
    }
    assert {s: (await eng.get_run(ids[s])).status for s in refused} == {s: s for s in refused}
    assert {s: await actions(eng, ids[s]) for s in refused} == before


async def test_resume_from_every_status(eng: Engine, outreach: Plan) -> None:
    ids = await runs_in_every_status(eng, outreach)
    refused = [s for s in STATUSES if s != "paused"]
    before = {s: await actions(eng, ids[s]) for s in refused}
    t = await now(eng)
    await eng.advance_clock(5)
    await eng.resume_run(ids["paused"])
    view = await eng.get_run(ids["paused"])
    assert (view.status, view.current_step) == ("waiting", "wait-1")  # paused -> active -> back on its timer
    assert (await actions(eng, ids["paused"]))[-2:] == [("run.paused", "wait-1", t), ("run.resumed", "wait-1", t + 5)]
    assert await refusals(eng.resume_run, ids, refused) == {
        s: ("InvalidTransitionError", ids[s], s, "active") for s in refused
    }
    assert {s: (await eng.get_run(ids[s])).status for s in refused} == {s: s for s in refused}
    assert {s: await actions(eng, ids[s]) for s in refused} == before


async def test_cancel_from_every_status(eng: Engine, outreach: Plan) -> None:
    ids = await runs_in_every_status(eng, outreach)
    allowed = ["pending", "waiting", "paused", "failed"]
    refused = ["completed", "cancelled"]
    before = {s: await actions(eng, ids[s]) for s in refused}
    for status in allowed:
        await eng.cancel_run(ids[status], f"asked while {status}")
    for status in allowed:
        view = await eng.get_run(ids[status])
        assert (view.status, view.steps_remaining, view.completed_at is not None) == ("cancelled", 0, True), status
        last = (await eng.audit.get_by_run(ids[status]))[-1]
        assert (last.action, last.output) == ("run.cancelled", {"reason": f"asked while {status}"}), status
        assert (await eng.verify_audit_chain(ids[status])).valid is True
    assert await refusals(lambda r: eng.cancel_run(r, "again"), ids, refused) == {
        s: ("InvalidTransitionError", ids[s], s, "cancelled") for s in refused
    }
    assert {s: await actions(eng, ids[s]) for s in refused} == before
    await eng.advance_clock(100)  # the cancelled pending run never starts
    assert (await eng.get_run(ids["pending"])).status == "cancelled"
    assert [a for a, _, _ in await actions(eng, ids["pending"])] == ["run.started", "run.cancelled"]


async def test_retry_from_every_status(eng: Engine, outreach: Plan) -> None:
    ids = await runs_in_every_status(eng, outreach)
    refused = [s for s in STATUSES if s != "failed"]
    before = {s: await actions(eng, ids[s]) for s in refused}
    failed = await eng.get_run(ids["failed"])
    assert (failed.status, failed.current_step, failed.outcome) == ("failed", "initial-email", None)
    first_entered = (await eng.audit.query(run_id=ids["failed"], actions=["step.entered"]))[0].tick
    t = await now(eng)
    await eng.advance_clock(7)
    await eng.retry_run(ids["failed"])
    await eng.run_until_idle()
    retried = await eng.audit.query(run_id=ids["failed"], actions=["run.retried"])
    assert [(e.step_id, e.tick, e.output) for e in retried] == [("initial-email", t + 7, {"attempt": 2})]
    entered = await eng.audit.query(run_id=ids["failed"], actions=["step.entered"])
    assert [(e.step_id, e.tick) for e in entered] == [("initial-email", first_entered), ("initial-email", t + 7)]
    dispatched = await eng.audit.query(run_id=ids["failed"], actions=["step.dispatched"])
    keys = [e.output["idempotencyKey"] for e in dispatched]  # type: ignore[index]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert (await eng.get_run(ids["failed"])).status == "failed"  # fail.test fails every time
    assert [a for a, _, _ in await actions(eng, ids["failed"])].count("run.failed") == 2
    assert (await eng.verify_audit_chain(ids["failed"])).valid is True
    assert await refusals(eng.retry_run, ids, refused) == {
        s: ("InvalidTransitionError", ids[s], s, "active") for s in refused
    }
    assert {s: (await eng.get_run(ids[s])).status for s in refused} == {s: s for s in refused}
    assert {s: await actions(eng, ids[s]) for s in refused} == before


async def test_a_paused_runs_timer_keeps_its_target_tick(eng: Engine, outreach: Plan) -> None:
    t0 = await now(eng)
    run = await eng.execute(outreach, contact(uid("timer")), VARS)
    await eng.run_until_idle()
    await eng.pause_run(run.id)
    await eng.advance_clock(DAY)
    await eng.resume_run(run.id)
    assert (await eng.get_run(run.id)).status == "waiting"
    await eng.advance_clock(2 * DAY - 1)
    assert (await eng.get_run(run.id)).current_step == "wait-1"
    await eng.advance_clock(1)
    done = await eng.audit.query(run_id=run.id, actions=["wait.completed"])
    assert [(e.step_id, e.tick, e.output["result"]["targetTick"]) for e in done] == [  # type: ignore[index]
        ("wait-1", t0 + 3 * DAY, t0 + 3 * DAY)]  # fmt: skip


async def test_a_past_timer_fires_at_the_resume_tick(eng: Engine, outreach: Plan) -> None:
    t0 = await now(eng)
    run = await eng.execute(outreach, contact(uid("overdue")), VARS)
    await eng.run_until_idle()
    await eng.pause_run(run.id)
    await eng.advance_clock(4 * DAY)  # wait-1 was due at 3 days: a paused run does not wake
    paused = await eng.get_run(run.id)
    assert (paused.status, paused.current_step) == ("paused", "wait-1")
    assert await eng.audit.query(run_id=run.id, actions=["wait.completed"]) == []
    await eng.resume_run(run.id)
    await eng.run_until_idle()
    resumed = await eng.get_run(run.id)
    # no open: the cold path; the follow-up is sent at the resume tick, now on wait-3
    assert (resumed.status, resumed.current_step, resumed.current_tick) == ("waiting", "wait-3", t0 + 4 * DAY)
    done = await eng.audit.query(run_id=run.id, actions=["wait.completed"])
    assert [(e.step_id, e.tick, e.output["result"]["targetTick"]) for e in done] == [  # type: ignore[index]
        ("wait-1", t0 + 4 * DAY, t0 + 3 * DAY)]  # fmt: skip


# ---- events, suppression, consent (shared deployment) -----------------------------------


async def test_the_same_event_id_twice_is_applied_once(eng: Engine, outreach: Plan) -> None:
    cid, event_id = uid("ev"), uid("event")
    run = await eng.execute(outreach, contact(cid), VARS)
    await eng.run_until_idle()
    first = await eng.ingest_event("email.opened", cid, {"ua": "x"}, step_id="initial-email", event_id=event_id)
    await eng.run_until_idle()
    await eng.ingest_event("email.opened", cid, {"ua": "x"}, step_id="initial-email", event_id=event_id)
    await eng.run_until_idle()
    assert first == [run.id]
    received = await eng.audit.query(run_id=run.id, actions=["event.received"])
    assert [(e.step_id, e.input["eventId"], e.input["type"]) for e in received] == [  # type: ignore[index]
        ("initial-email", event_id, "email.opened")]  # fmt: skip
    await eng.advance_clock(3 * DAY)  # the open is visible to the branch: the warm path
    assert (await eng.get_run(run.id)).current_step == "wait-2"


async def test_a_duplicate_event_gets_its_first_answer_and_is_applied_once(eng: Engine, outreach: Plan) -> None:
    """Engine.ingest_event: a repeated event id gets the answer of its first delivery."""
    cid, event_id = uid("dup"), uid("event")
    run = await eng.execute(outreach, contact(cid), VARS)
    first = await eng.ingest_event("email.opened", cid, {}, step_id="initial-email", event_id=event_id)
    second = await eng.ingest_event("email.opened", cid, {}, step_id="initial-email", event_id=event_id)
    assert (first, second) == ([run.id], [run.id])
    await eng.run_until_idle()
    received = await eng.audit.query(run_id=run.id, actions=["event.received"])
    assert [e.input["eventId"] for e in received if e.input and e.input.get("kind") == "event"] == [event_id]


async def test_an_event_without_run_id_reaches_every_non_terminal_run_of_the_contact(
    eng: Engine, outreach: Plan, welcome: Plan
) -> None:
    cid, bystander = uid("fan"), uid("fan")
    ended = await eng.execute(outreach, contact(cid), VARS)
    await eng.cancel_run(ended.id, "restart")
    a = await eng.execute(outreach, contact(cid), VARS)
    b = await eng.execute(welcome, contact(cid), VARS)
    other = await eng.execute(outreach, contact(bystander), VARS)
    await eng.run_until_idle()
    routed = await eng.ingest_event("email.clicked", cid, {"url": "https://x"}, event_id=uid("event"))
    await eng.run_until_idle()
    assert routed == sorted([a.id, b.id])
    runs = (a.id, b.id, ended.id, other.id)
    counts = {r: len(await eng.audit.query(run_id=r, actions=["event.received"])) for r in runs}
    assert counts == {a.id: 1, b.id: 1, ended.id: 0, other.id: 0}
    assert await eng.ingest_event("email.clicked", cid, {}, run_id=b.id) == [b.id]
    await eng.run_until_idle()
    counts = {r: len(await eng.audit.query(run_id=r, actions=["event.received"])) for r in runs}
    assert counts == {a.id: 1, b.id: 2, ended.id: 0, other.id: 0}


async def test_a_global_suppression_cancels_the_contacts_runs_and_blocks_new_ones(
    eng: Engine, shared_config: EngineConfig, outreach: Plan, welcome: Plan
) -> None:
    cid, bystander = uid("supp"), uid("supp")
    t0 = await now(eng)
    a = await eng.execute(outreach, contact(cid), VARS)
    b = await eng.execute(welcome, contact(cid), VARS, start_at=t0 + 10)
    c = await eng.execute(outreach, contact(bystander), VARS)
    await eng.run_until_idle()
    assert await eng.suppress(cid, "global", "complaint", "support") == 2
    await eng.run_until_idle()
    assert [(await eng.get_run(r)).status for r in (a.id, b.id, c.id)] == ["cancelled", "cancelled", "waiting"]
    last = (await eng.audit.get_by_run(a.id))[-1]
    assert (last.action, last.output) == ("run.cancelled", {"reason": "suppressed (global): complaint"})
    for plan in (outreach, welcome):
        with pytest.raises(ContactSuppressedError) as caught:
            await eng.execute(plan, contact(cid), VARS)
        assert (caught.value.contact_id, caught.value.level, caught.value.reason) == (cid, "global", "complaint")
    assert (await eng.list_runs(contact_id=cid)).total == 2
    await eng.execute(welcome, contact(bystander), VARS)  # others are unaffected
    conn = await asyncpg.connect(shared_config.database)
    try:
        rows = await conn.fetch(
            "SELECT contact_id, level, reason, source, channel, plan_id, tick FROM suppressions WHERE contact_id = $1", cid
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [(cid, "global", "complaint", "support", None, None, t0)]


async def test_record_consent_is_stored(eng: Engine, shared_config: EngineConfig) -> None:
    cid = uid("consent")
    await eng.advance_clock(42)
    t = await now(eng)
    await eng.record_consent(ConsentRecord(contact_id=cid, channel="email", status="granted", source="form",
                                           expires_tick=t + 1000, evidence={"ip": "10.0.0.1"}))  # fmt: skip
    await eng.record_consent(ConsentRecord(contact_id=cid, channel="voice", status="revoked", source="call"))
    conn = await asyncpg.connect(shared_config.database)
    try:
        rows = await conn.fetch(
            "SELECT contact_id, channel, status, source, tick, expires_tick, evidence::text FROM consents "
            "WHERE contact_id = $1 ORDER BY id", cid,
        )  # fmt: skip
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        (cid, "email", "granted", "form", t, t + 1000, '{"ip": "10.0.0.1"}'),
        (cid, "voice", "revoked", "call", t, None, "{}"),
    ]


async def test_a_hard_bounce_ends_the_run_undeliverable_and_reaches_the_contacts_other_runs(
    eng: Engine, outreach: Plan, welcome: Plan
) -> None:
    cid = uid("bounce")
    other = await eng.execute(welcome, contact(cid, f"{cid}@acme.test"), VARS)
    await eng.run_until_idle()
    assert (await eng.get_run(other.id)).current_step == "wait-1-day"
    await eng.advance_clock(10)
    t = await now(eng)
    bounced = await eng.execute(outreach, contact(cid, f"{cid}@bounce.test"), VARS)
    await eng.run_until_idle()
    view = await eng.get_run(bounced.id)
    assert (view.status, view.outcome, view.current_tick) == ("completed", "undeliverable", t)
    executed = await eng.audit.query(run_id=bounced.id, actions=["step.executed"])
    assert [(e.step_id, e.output["result"]["outcome"]) for e in executed] == [("initial-email", "bounced")]  # type: ignore[index]
    seen = await eng.get_run(other.id)
    assert (seen.status, seen.outcome, seen.current_tick) == ("completed", "bounced", t)
    heard = await eng.audit.query(run_id=other.id, actions=["event.received"])
    assert [(e.tick, e.output) for e in heard] == [(t, {"contactChanged": ["bounced"]})]
    assert (await eng.verify_audit_chain(other.id)).valid is True


# ---- audit, timeline, replay, debug (shared deployment) -------------------------------------


async def completed_outreach(engine: Engine, outreach: Plan, cid: str | None = None) -> tuple[str, int]:
    """A run of the warm path (opened at +100) to its end at +7 days, its contact agreed to be
    called; returns (run id, t0)."""
    cid = cid or uid("done")
    await engine.record_consent(ConsentRecord(contact_id=cid, channel="voice", status="granted", source="form"))
    t0 = await now(engine)
    run = await engine.execute(outreach, contact(cid), VARS)
    await engine.advance_clock(100)
    await engine.ingest_event("email.opened", cid, {}, step_id="initial-email", event_id=uid("open"))
    await engine.advance_clock(10 * DAY)
    view = await engine.get_run(run.id)
    assert (view.status, view.outcome) == ("completed", "no_response")
    return run.id, t0


async def test_audit_access_and_chain_verification(eng: Engine, outreach: Plan) -> None:
    run_id, t0 = await completed_outreach(eng, outreach)
    entries = await eng.audit.get_by_run(run_id)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].previous_checksum == "0" * 64
    assert all(b.previous_checksum == a.checksum for a, b in itertools.pairwise(entries))
    assert (entries[0].action, entries[-1].action, entries[-1].output) == (
        "run.started", "run.completed", {"outcome": "no_response", "endStep": "end-no-reply"})  # fmt: skip
    chain = await eng.verify_audit_chain(run_id)
    assert (chain.valid, chain.entries, chain.first_tick, chain.last_tick, chain.broken_at) == (
        True, len(entries), t0, t0 + 7 * DAY, None)  # fmt: skip

    waits = await eng.audit.query(run_id=run_id, actions=["wait.started", "wait.completed"])
    assert [(e.action, e.step_id, e.tick - t0) for e in waits] == [
        ("wait.started", "wait-1", 0), ("wait.completed", "wait-1", 3 * DAY),
        ("wait.started", "wait-2", 3 * DAY), ("wait.completed", "wait-2", 5 * DAY),
        ("wait.started", "wait-4", 5 * DAY), ("wait.completed", "wait-4", 7 * DAY),
    ]  # fmt: skip
    window = await eng.audit.query(run_id=run_id, actions=["step.entered"], from_tick=t0 + 3 * DAY, to_tick=t0 + 5 * DAY - 1)
    assert [(e.run_id, e.step_id, e.tick - t0) for e in window] == [
        (run_id, "check-email-1", 3 * DAY), (run_id, "warm-follow-up", 3 * DAY), (run_id, "wait-2", 3 * DAY)]  # fmt: skip
    across = await eng.audit.query(actions=["run.completed"], from_tick=t0 + 7 * DAY, to_tick=t0 + 7 * DAY)
    assert run_id in [e.run_id for e in across] and {e.action for e in across} == {"run.completed"}
    assert await eng.audit.query(run_id=run_id, actions=["run.failed"]) == []

    ctx = await eng.audit.get_context_at(run_id, "check-email-1")
    assert ctx is not None
    assert (ctx["tick"], ctx["variables"], ctx["contact"]["id"]) == (t0 + 3 * DAY, VARS, entries[0].input["contact"]["id"])  # type: ignore[index]
    assert [dict(e) for e in ctx["events"]] == [{"type": "email.opened", "step_id": "initial-email", "tick": t0 + 100}]
    assert [(r["stepId"], r["outcome"]) for r in ctx["results"]] == [("initial-email", "delivered"), ("wait-1", "completed")]
    assert await eng.audit.get_context_at(run_id, "cold-follow-up") is None


async def test_an_edited_audit_row_is_reported_at_its_seq_even_when_its_json_does_not_round_trip(
    eng: Engine, outreach: Plan, shared_config: EngineConfig
) -> None:
    run_id, _ = await completed_outreach(eng, outreach)
    conn = await asyncpg.connect(shared_config.database)
    try:  # what only a database superuser can do: switch the append-only trigger off and edit
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_append_only")
            await conn.execute("UPDATE audit_log SET output = '{\"status\": 1e400}' WHERE run_id = $1 AND seq = 3", run_id)
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_append_only")
    finally:
        await conn.close()
    chain = await eng.verify_audit_chain(run_id)
    assert (chain.valid, chain.broken_at) == (False, 3)
    assert chain.reason == "checksum does not match the entry's content"


async def test_get_timeline_lists_the_run_in_order(eng: Engine, outreach: Plan) -> None:
    run_id, t0 = await completed_outreach(eng, outreach)
    lines = await eng.get_timeline(run_id)
    assert len(lines) == len(await eng.audit.get_by_run(run_id))
    shown = [(t.tick - t0, t.step, t.action) for t in lines if t.action in ("step.entered", "event.received", "run.completed")]
    assert shown == [
        (0, "initial-email", "step.entered"), (0, "wait-1", "step.entered"),
        (100, "initial-email", "event.received"),
        (3 * DAY, "check-email-1", "step.entered"), (3 * DAY, "warm-follow-up", "step.entered"),
        (3 * DAY, "wait-2", "step.entered"), (5 * DAY, "check-email-2", "step.entered"),
        (5 * DAY, "call-attempt", "step.entered"), (5 * DAY, "wait-4", "step.entered"),
        (7 * DAY, "breakup-email", "step.entered"), (7 * DAY, "end-no-reply", "step.entered"),
        (7 * DAY, "end-no-reply", "run.completed"),
    ]  # fmt: skip
    assert [t.tick for t in lines] == sorted(t.tick for t in lines)
    assert (lines[0].action, lines[-1].action, lines[-1].outcome) == ("run.started", "run.completed", "no_response")
    branch = next(t for t in lines if t.step == "check-email-1" and t.action != "step.entered")
    assert branch.outcome == "branch:warm-follow-up"


async def test_replay_is_identical_and_a_recorded_replay_keeps_the_chain_valid(eng: Engine, outreach: Plan) -> None:
    run_id, _ = await completed_outreach(eng, outreach)
    before = await eng.audit.get_by_run(run_id)
    dry = await eng.replay(run_id)
    assert (dry.identical, dry.diffs) == (True, [])
    assert len(dry.steps) > 10 and all(s.identical for s in dry.steps)
    assert await eng.audit.get_by_run(run_id) == before  # dry_run touches nothing
    recorded = await eng.replay(run_id, dry_run=False)
    assert recorded.identical is True
    after = await eng.audit.get_by_run(run_id)
    assert after[: len(before)] == before
    assert [(e.action, e.output) for e in after[len(before):]] == [
        ("replay.recorded", {"identical": True, "diffs": 0, "fields": [], "reissued": 4})]  # fmt: skip
    chain = await eng.verify_audit_chain(run_id)
    assert (chain.valid, chain.entries) == (True, len(before) + 1)
    assert (await eng.replay(run_id)).identical is True
    assert (await eng.get_run(run_id)).status == "completed"


async def test_debug_steps_through_a_copy_of_the_run(eng: Engine, outreach: Plan) -> None:
    run_id, t0 = await completed_outreach(eng, outreach)
    live = await eng.audit.get_by_run(run_id)
    debugger = await eng.debug(run_id)
    assert debugger.has_next() is True
    first = debugger.peek()
    assert first is not None and (first.kind, first.tick, first.step_id) == ("timer", t0, None)
    assert debugger.peek() == first  # peeking executes nothing
    produced = list(debugger.entries)
    assert [d.action for d in produced] == ["run.started"]
    moves = 0
    while debugger.has_next():
        produced += await debugger.step_forward()
        moves += 1
    assert moves >= 5
    assert debugger.peek() is None and await debugger.step_forward() == []
    assert [(d.seq, d.action, d.step_id, d.tick, d.output) for d in produced] == [
        (e.seq, e.action, e.step_id, e.tick, e.output) for e in live
    ]
    assert (debugger.state.status, debugger.state.outcome) == ("completed", "no_response")
    assert await eng.audit.get_by_run(run_id) == live  # never the live run


# ---- availability (own deployments) ---------------------------------------------------------


async def test_a_write_to_a_partition_nobody_owns_raises_engine_unavailable(
    deployment: EngineConfig, outreach: Plan
) -> None:
    quick = msgspec.structs.replace(deployment, client=ClientConfig(reply_timeout_ms=300))
    async with Engine(quick, scheduler=False) as client:
        partition = partition_for("c1", 4)
        with pytest.raises(EngineUnavailableError) as caught:
            await client.execute(outreach, contact("c1"), VARS)
        assert caught.value.partition == partition
        assert f"partition {partition}" in str(caught.value)
        other = partition_for("c2", 4)
        with pytest.raises(EngineUnavailableError) as caught:
            await client.ingest_event("email.opened", "c2", {})
        assert caught.value.partition == other
        assert (await client.list_runs()).total == 0  # reads still work without a daemon


@pytest.mark.deployment(partition_key="0-1")
async def test_only_the_partitions_without_an_owner_are_unavailable(
    deployment: EngineConfig, outreach: Plan
) -> None:
    deployment = msgspec.structs.replace(deployment, client=ClientConfig(reply_timeout_ms=300))
    owned = next(f"c{i}" for i in range(100) if partition_for(f"c{i}", 4) in (0, 1))
    orphan = next(f"c{i}" for i in range(100) if partition_for(f"c{i}", 4) in (2, 3))
    async with Engine(deployment, scheduler=True) as engine:
        run = await engine.execute(outreach, contact(owned), VARS)
        await engine.run_until_idle()
        assert (await engine.get_run(run.id)).status == "waiting"
        with pytest.raises(EngineUnavailableError) as caught:
            await engine.execute(outreach, contact(orphan), VARS)
        assert caught.value.partition == partition_for(orphan, 4)


async def test_audit_export_and_the_compliance_report_read_postgres(eng: Engine, outreach: Plan) -> None:
    cid, gone, blocked = uid("report"), uid("unsub"), uid("blocked")
    await eng.record_consent(ConsentRecord(contact_id=cid, channel="email", status="granted", source="form"))
    t0 = await now(eng)
    run_id, _ = await completed_outreach(eng, outreach, cid)
    left = await eng.execute(outreach, contact(gone), VARS)
    await eng.advance_clock(100)
    await eng.ingest_event("email.unsubscribed", gone, {}, event_id=uid("unsub-event"))
    await eng.suppress(blocked, "global", "complaint", "support")
    t1 = await now(eng)
    report = await eng.compliance.report(t0, t1)
    mine = [s for s in report.sends if s.run_id == run_id]
    assert [(s.channel, s.consent) for s in mine] == [("email", "granted"), ("email", "granted"), ("voice", "granted"),
                                                      ("email", "granted")]  # fmt: skip
    assert [(list(c.local_times), c.within_hours) for c in report.calls if c.run_id == run_id] == [(["UTC"], True)]
    assert [(u.contact_id, u.stopped_by, u.ticks) for u in report.unsubscribes if u.run_id == left.id] == [
        (gone, "run.completed", 0)]  # fmt: skip
    assert [(s.contact_id, s.level, s.reason) for s in report.suppressions if s.contact_id == blocked] == [
        (blocked, "global", "complaint")]  # fmt: skip
    assert report.chains.broken == {} and report.chains.runs >= 2
    document = msgspec.json.decode(await eng.audit.export(run_id))
    assert (document["run"]["id"], document["chain"]["valid"]) == (run_id, True)
    assert [e["seq"] for e in document["entries"]] == list(range(1, len(document["entries"]) + 1))
    assert b"chain: VALID" in await eng.audit.export(run_id, "pdf")

