"""Runs through the Engine API on both backends (SPEC 3.1 and 4): `execute` and its refusals,
`bulk_execute`, `get_run`, `list_runs`, and the commands pause, resume, cancel and retry from
every status, with identical results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dee import AlreadyEnrolledError, BulkResult, Engine, ExecutionRun, RunPage, StartInPastError
from dee.plan.model import Plan
from tests.contract.scenarios import (
    DAY,
    OUTREACH_ID,
    VARS,
    WELCOME_ID,
    actions,
    contact,
    error_of,
    outputs,
    refusal,
    view,
)

STATUSES = ("pending", "waiting", "paused", "failed", "completed", "cancelled")

# ---- execute ---------------------------------------------------------------------------------


async def test_execute_starts_at_its_tick_and_enrols_a_contact_once_per_plan(engine: Engine, outreach: Plan) -> None:
    await engine.advance_clock(10)
    with pytest.raises(StartInPastError) as past:
        await engine.execute(outreach, contact("c1"), VARS, start_at=9)
    assert error_of(past.value) == ("StartInPastError", {"start_at": 9, "current_tick": 10})
    assert (await engine.list_runs()).total == 0

    future = await engine.execute(outreach, contact("c1"), VARS, start_at=20)
    assert isinstance(future, ExecutionRun)
    assert (future.plan_id, future.plan_version, future.contact_id, future.status, future.current_step) == (
        OUTREACH_ID, 1, "c1", "pending", None)  # fmt: skip
    assert (future.start_tick, future.steps_completed, future.steps_remaining, future.outcome, future.variables) == (
        20, 0, 10, None, VARS)  # fmt: skip
    assert future.started_at is not None and future.completed_at is None
    await engine.advance_clock(9)
    assert await view(engine, future.id) == ("pending", None, None)
    await engine.advance_clock(1)
    started = await engine.get_run(future.id)
    assert (started.status, started.current_step, started.current_tick, started.steps_completed) == ("waiting", "wait-1", 20, 1)
    entered = await actions(engine, future.id, "step.entered")
    assert entered == [("step.entered", "initial-email", 20), ("step.entered", "wait-1", 20)]

    # a second enrolment of the contact in the plan, while its run has not ended
    with pytest.raises(AlreadyEnrolledError) as enrolled:
        await engine.execute(outreach, contact("c1"), VARS)
    assert error_of(enrolled.value) == ("AlreadyEnrolledError", {"plan_id": OUTREACH_ID, "contact_id": "c1", "run_id": future.id})
    await engine.cancel_run(future.id, "restart")
    again = await engine.execute(outreach, contact("c1"), VARS)  # an ended run does not block
    assert again.id != future.id
    assert [r.id for r in (await engine.list_runs(contact_id="c1")).runs] == [future.id, again.id]

    # the same idempotency key twice: the first run, not a second one
    keyed = await engine.execute(outreach, contact("c2"), VARS, idempotency_key="signup-42")
    await engine.run_until_idle()
    repeated = await engine.execute(outreach, contact("c2"), VARS, idempotency_key="signup-42")
    assert (repeated.id, repeated.status, repeated.current_step) == (keyed.id, "waiting", "wait-1")
    assert (await engine.list_runs(contact_id="c2")).total == 1
    other = await engine.execute(outreach, contact("c3"), VARS, idempotency_key="signup-43")
    assert other.id not in (keyed.id, again.id)
    assert (await engine.list_runs()).total == 4


async def test_unknown_runs_raise_run_not_found(engine: Engine) -> None:
    unknown = "01UNKNOWNRUN0000000000000"
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_run": lambda: engine.get_run(unknown), "pause_run": lambda: engine.pause_run(unknown),
        "resume_run": lambda: engine.resume_run(unknown), "retry_run": lambda: engine.retry_run(unknown),
        "cancel_run": lambda: engine.cancel_run(unknown, "x"), "get_timeline": lambda: engine.get_timeline(unknown),
        "verify_audit_chain": lambda: engine.verify_audit_chain(unknown), "replay": lambda: engine.replay(unknown),
        "debug": lambda: engine.debug(unknown), "audit.get_by_run": lambda: engine.audit.get_by_run(unknown),
        "audit.export": lambda: engine.audit.export(unknown),
        "verify_audit_chains": lambda: engine.verify_audit_chains([unknown]),
        "ingest_event": lambda: engine.ingest_event("email.opened", "c1", {}, run_id=unknown),
    }  # fmt: skip
    seen = {name: await refusal(call()) for name, call in calls.items()}
    assert seen == {name: ("RunNotFoundError", {"run_id": unknown}) for name in calls}


# ---- bulk_execute ------------------------------------------------------------------------------


@pytest.mark.deployment(max_runs_per_tick=1)
async def test_bulk_execute_counts_created_skipped_and_invalid_contacts(engine: Engine, outreach: Plan) -> None:
    assert engine.config.scheduler.max_runs_per_tick == 1  # the marker reaches both backends
    enrolled = await engine.execute(outreach, contact("c2"), VARS)
    await engine.suppress("c4", "global", "asked", "support")
    batch = [contact("c1"), contact("c2"), contact("c3"), contact("c4"), contact("c1"), {"id": "c5", "email": 5},
             contact("c6")]  # fmt: skip
    result = await engine.bulk_execute(outreach, batch, VARS)
    assert isinstance(result, BulkResult)
    # c2 enrolled before, c4 suppressed, c1's second entry enrolled earlier in the batch
    assert (result.created, result.skipped, len(result.run_ids)) == (3, 3, 3)
    assert [e.contact_id for e in result.errors] == ["c5"]
    assert result.errors[0].error.startswith("invalid contact:")
    assert sorted([(await engine.get_run(r)).contact_id for r in result.run_ids]) == ["c1", "c3", "c6"]
    page = await engine.list_runs()
    assert (page.total, sorted(r.id for r in page.runs)) == (4, sorted([enrolled.id, *result.run_ids]))
    await engine.run_until_idle()
    settled = {r.contact_id: (r.status, r.current_step) for r in (await engine.list_runs()).runs}
    assert settled == dict.fromkeys(("c1", "c2", "c3", "c6"), ("waiting", "wait-1"))
    again = await engine.bulk_execute(outreach, [contact("c1"), contact("c3")], VARS)
    assert (again.created, again.skipped, again.errors, again.run_ids) == (0, 2, [], [])


# ---- list_runs -------------------------------------------------------------------------------


async def test_list_runs_filters_pages_and_counts(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    made = [
        await engine.execute(outreach, contact("c1"), VARS),
        await engine.execute(outreach, contact("c2"), VARS),
        await engine.execute(outreach, contact("c3"), VARS),
        await engine.execute(welcome, contact("c1"), VARS),
        await engine.execute(welcome, contact("c4"), VARS, start_at=20),
    ]
    await engine.run_until_idle()
    await engine.cancel_run(made[1].id, "test")
    await engine.pause_run(made[2].id)
    label = {r.id: f"{'o' if r.plan_id == OUTREACH_ID else 'w'}-{r.contact_id}" for r in made}

    async def listed(**filters: Any) -> tuple[list[str], int]:
        page = await engine.list_runs(**filters)
        assert isinstance(page, RunPage)
        return [label[r.id] for r in page.runs], page.total

    assert [r.id for r in (await engine.list_runs()).runs] == [r.id for r in made]  # run id = creation order
    assert {
        "all": await listed(),
        "waiting": await listed(status="waiting"),
        "several": await listed(status=["paused", "cancelled", "pending"]),
        "failed": await listed(status="failed"),
        "welcome": await listed(plan_id=WELCOME_ID),
        "c1": await listed(contact_id="c1"),
        "o-c1-waiting": await listed(plan_id=OUTREACH_ID, contact_id="c1", status="waiting"),
        "no plan": await listed(plan_id="nope"),
        "page 1": await listed(limit=2),
        "page 2": await listed(limit=2, offset=2),
        "page 3": await listed(limit=2, offset=4),
        "beyond": await listed(limit=2, offset=10),
        "outreach 2nd": await listed(plan_id=OUTREACH_ID, limit=1, offset=1),
        "after 10": await listed(started_after=10),
        "before 10": await listed(started_before=10),
        "0 < start < 21": await listed(started_after=0, started_before=21),
    } == {
        "all": (["o-c1", "o-c2", "o-c3", "w-c1", "w-c4"], 5),
        "waiting": (["o-c1", "w-c1"], 2),
        "several": (["o-c2", "o-c3", "w-c4"], 3),
        "failed": ([], 0),
        "welcome": (["w-c1", "w-c4"], 2),
        "c1": (["o-c1", "w-c1"], 2),
        "o-c1-waiting": (["o-c1"], 1),
        "no plan": ([], 0),
        "page 1": (["o-c1", "o-c2"], 5),
        "page 2": (["o-c3", "w-c1"], 5),
        "page 3": (["w-c4"], 5),
        "beyond": ([], 5),
        "outreach 2nd": (["o-c2"], 3),
        "after 10": (["w-c4"], 1),
        "before 10": (["o-c1", "o-c2", "o-c3", "w-c1"], 4),
        "0 < start < 21": (["w-c4"], 1),
    }
    assert (await engine.list_runs(contact_id="c1")).runs == [await engine.get_run(made[0].id), await engine.get_run(made[3].id)]


# ---- commands from every status ----------------------------------------------------------------


async def runs_in_every_status(engine: Engine, plan: Plan) -> dict[str, str]:
    """One run of `plan` per status of STATUSES, each for its own contact, through the public API."""
    ids = {
        "pending": (await engine.execute(plan, contact("c-pending"), VARS, start_at=50)).id,
        "waiting": (await engine.execute(plan, contact("c-waiting"), VARS)).id,
        "paused": (await engine.execute(plan, contact("c-paused"), VARS)).id,
        "failed": (await engine.execute(plan, contact("c-failed", "x@fail.test"), VARS)).id,
        "completed": (await engine.execute(plan, contact("c-completed"), VARS)).id,
        "cancelled": (await engine.execute(plan, contact("c-cancelled"), VARS)).id,
    }
    await engine.run_until_idle()
    await engine.pause_run(ids["paused"])
    await engine.cancel_run(ids["cancelled"], "setup")
    await engine.ingest_event("email.replied", "c-completed", {}, step_id="initial-email")
    await engine.run_until_idle()
    assert {s: (await engine.get_run(r)).status for s, r in ids.items()} == {s: s for s in STATUSES}
    return ids


async def test_commands_are_refused_where_spec_4_does_not_allow_them(engine: Engine, outreach: Plan) -> None:
    ids = await runs_in_every_status(engine, outreach)
    before = {s: await actions(engine, r) for s, r in ids.items()}
    commands: dict[str, Callable[[str], Awaitable[None]]] = {
        "pause": engine.pause_run, "resume": engine.resume_run, "retry": engine.retry_run,
        "cancel": lambda r: engine.cancel_run(r, "again"),
    }  # fmt: skip
    allowed = {"pause": "waiting", "resume": "paused", "retry": "failed"}
    seen: dict[str, dict[str, Any]] = {}
    for name, command in commands.items():
        for status, run_id in ids.items():
            if status == allowed.get(name) or (name == "cancel" and status in ("pending", "waiting", "paused", "failed")):
                continue
            kind, attrs = await refusal(command(run_id))
            assert attrs.pop("run_id") == run_id
            seen.setdefault(name, {})[status] = (kind, attrs)
    ended = "run has ended"

    def refused(to: str, why: str, *statuses: str) -> dict[str, Any]:
        return {s: ("InvalidTransitionError", {"from_status": s, "to_status": to, "why": why if s not in (
            "completed", "cancelled") else ended}) for s in statuses}  # fmt: skip

    assert seen == {
        "pause": refused("paused", "only an active or waiting run can be paused", "pending", "paused", "failed", "completed",
                         "cancelled"),
        "resume": refused("active", "only a paused run can be resumed", "pending", "waiting", "failed", "completed", "cancelled"),
        "retry": refused("active", "only a failed run can be retried", "pending", "waiting", "paused", "completed", "cancelled"),
        "cancel": refused("cancelled", ended, "completed", "cancelled"),
    }  # fmt: skip
    await engine.run_until_idle()
    assert {s: await actions(engine, r) for s, r in ids.items()} == before  # a refusal changes nothing
    assert {s: (await engine.get_run(r)).status for s, r in ids.items()} == {s: s for s in STATUSES}


async def test_pause_resume_and_cancel_are_journaled_at_their_tick(engine: Engine, outreach: Plan) -> None:
    ids = await runs_in_every_status(engine, outreach)
    await engine.pause_run(ids["waiting"])
    assert await view(engine, ids["waiting"]) == ("paused", None, "wait-1")
    await engine.advance_clock(5)
    await engine.resume_run(ids["paused"])
    assert await view(engine, ids["paused"]) == ("waiting", None, "wait-1")  # paused -> active -> back on its timer
    reasons = {s: f"asked while {s}" for s in ("pending", "waiting", "failed")}
    for status, reason in reasons.items():
        await engine.cancel_run(ids[status], reason)
    ends = {}
    for status in reasons:
        run = await engine.get_run(ids[status])
        cancelled = await outputs(engine, run.id, "run.cancelled")
        ends[status] = (run.status, run.steps_remaining, run.completed_at is not None, cancelled)
    assert ends == {
        "pending": ("cancelled", 0, True, [(None, 5, {"reason": "asked while pending"})]),
        "waiting": ("cancelled", 0, True, [("wait-1", 5, {"reason": "asked while waiting"})]),
        "failed": ("cancelled", 0, True, [("initial-email", 5, {"reason": "asked while failed"})]),
    }
    assert (await actions(engine, ids["waiting"]))[-2:] == [("run.paused", "wait-1", 0), ("run.cancelled", "wait-1", 5)]
    assert (await actions(engine, ids["paused"]))[-2:] == [("run.paused", "wait-1", 0), ("run.resumed", "wait-1", 5)]
    await engine.advance_clock(100)  # the cancelled pending run never starts
    assert await actions(engine, ids["pending"]) == [("run.started", None, 0), ("run.cancelled", None, 5)]
    for run_id in ids.values():
        assert (await engine.verify_audit_chain(run_id)).valid is True


async def test_a_timer_that_passed_while_paused_fires_at_the_resume_tick(engine: Engine, outreach: Plan) -> None:
    late = await engine.execute(outreach, contact("late"), VARS)
    early = await engine.execute(outreach, contact("early"), VARS)
    await engine.run_until_idle()
    await engine.pause_run(late.id)
    await engine.pause_run(early.id)
    await engine.advance_clock(DAY)
    await engine.resume_run(early.id)  # before its timer: the timer keeps its target tick
    await engine.advance_clock(3 * DAY)  # wait-1 was due at 3 days: the paused run does not wake
    assert await view(engine, late.id) == ("paused", None, "wait-1")
    assert await actions(engine, late.id, "wait.completed") == []
    await engine.resume_run(late.id)
    await engine.run_until_idle()
    resumed = await engine.get_run(late.id)
    # no open: the cold path, its follow-up sent at the resume tick; now on wait-3
    assert (resumed.status, resumed.current_step, resumed.current_tick) == ("waiting", "wait-3", 4 * DAY)
    waits = {name: [(s, t, (o or {})["result"]["targetTick"]) for s, t, o in await outputs(engine, r, "wait.completed")]
             for name, r in (("late", late.id), ("early", early.id))}  # fmt: skip
    assert waits == {"late": [("wait-1", 4 * DAY, 3 * DAY)], "early": [("wait-1", 3 * DAY, 3 * DAY)]}
    assert await outputs(engine, late.id, "wait.started") == [
        ("wait-1", 0, {"targetTick": 3 * DAY}), ("wait-3", 4 * DAY, {"targetTick": 8 * DAY})]  # fmt: skip


async def test_retry_of_a_failed_run_is_a_new_attempt_with_a_new_key(engine: Engine, outreach: Plan) -> None:
    later = await engine.execute(outreach, contact("later", "later@fail.test"), VARS)
    at_once = await engine.execute(outreach, contact("at-once", "at-once@fail.test"), VARS)
    await engine.run_until_idle()
    assert [await view(engine, r) for r in (later.id, at_once.id)] == [("failed", None, "initial-email")] * 2
    await engine.retry_run(at_once.id)  # in the tick its failed execution began
    await engine.advance_clock(7)
    await engine.retry_run(later.id)
    await engine.run_until_idle()
    seen = {}
    for name, run_id in (("later", later.id), ("at-once", at_once.id)):
        keys = [(o or {})["idempotencyKey"] for _, _, o in await outputs(engine, run_id, "step.dispatched")]
        seen[name] = (
            await outputs(engine, run_id, "run.retried"), await actions(engine, run_id, "step.entered", "run.failed"),
            len(keys), len(set(keys)), await view(engine, run_id), (await engine.verify_audit_chain(run_id)).valid,
        )  # fmt: skip
    assert seen == {
        "later": ([("initial-email", 7, {"attempt": 2})], [
            ("step.entered", "initial-email", 0), ("run.failed", "initial-email", 0),
            ("step.entered", "initial-email", 7), ("run.failed", "initial-email", 7),
        ], 2, 2, ("failed", None, "initial-email"), True),  # fail.test fails every attempt
        "at-once": ([("initial-email", 0, {"attempt": 2})], [
            ("step.entered", "initial-email", 0), ("run.failed", "initial-email", 0),
            ("step.entered", "initial-email", 0), ("run.failed", "initial-email", 0),
        ], 2, 2, ("failed", None, "initial-email"), True),
    }  # fmt: skip
