"""`Engine.get_timeline` (SPEC 3.1; dee.kernel.timeline): one line per audit entry, chain order,
the outcome pulled to the front and the rest of the entry's output as data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from dee import Engine, EngineConfig, RunNotFoundError, SchedulerConfig, TimelineEntry, load_plan
from dee.kernel.timeline import timeline
from dee.records import ConsentRecord

DAY = 86400
CALL_OUTCOMES = ("answered", "voicemail", "no_answer", "busy")


@pytest.fixture
async def engine() -> Any:
    async with Engine(EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"))) as e:
        yield e


async def outreach(engine: Engine) -> str:
    """The contact opens the first email right away: warm path, call, breakup, no_response."""
    plan = load_plan("config/plans/sales-outreach-v2.yaml")
    # the contact agreed to be called
    await engine.record_consent(ConsentRecord(contact_id="c1", channel="voice", status="granted", source="form"))
    run = await engine.execute(plan, {"id": "c1", "email": "a@acme.test", "phone": "+15550001", "attributes": {"company": "Acme"}},
                               {"product": "DEE"})  # fmt: skip
    await engine.run_until_idle()
    await engine.ingest_event("email.opened", "c1", {"userAgent": "mail"}, step_id="initial-email")
    await engine.advance_clock(8 * DAY)
    return run.id


async def test_the_outreach_timeline_lists_every_entry_in_chain_order(engine: Engine) -> None:
    run_id = await outreach(engine)
    lines = await engine.get_timeline(run_id)
    assert all(isinstance(line, TimelineEntry) for line in lines)
    call = next(line.outcome for line in lines if line.step == "call-attempt" and line.action == "step.executed")
    assert call in CALL_OUTCOMES
    assert [(t.tick, t.step, t.action, t.outcome) for t in lines] == [
        (0, None, "run.started", "pending"),
        (0, "initial-email", "step.entered", None),
        (0, "initial-email", "policy.evaluated", "allow"),
        (0, "initial-email", "step.dispatched", None),
        (0, "initial-email", "step.executed", "delivered"),
        (0, "wait-1", "step.entered", None),
        (0, "wait-1", "wait.started", None),
        (0, "initial-email", "event.received", None),
        (3 * DAY, "wait-1", "wait.completed", "completed"),
        (3 * DAY, "check-email-1", "step.entered", None),
        (3 * DAY, "check-email-1", "step.evaluated", "branch:warm-follow-up"),
        (3 * DAY, "warm-follow-up", "step.entered", None),
        (3 * DAY, "warm-follow-up", "policy.evaluated", "allow"),
        (3 * DAY, "warm-follow-up", "step.dispatched", None),
        (3 * DAY, "warm-follow-up", "step.executed", "delivered"),
        (3 * DAY, "wait-2", "step.entered", None),
        (3 * DAY, "wait-2", "wait.started", None),
        (5 * DAY, "wait-2", "wait.completed", "completed"),
        (5 * DAY, "check-email-2", "step.entered", None),
        (5 * DAY, "check-email-2", "step.evaluated", "branch:call-attempt"),
        (5 * DAY, "call-attempt", "step.entered", None),
        (5 * DAY, "call-attempt", "policy.evaluated", "allow"),
        (5 * DAY, "call-attempt", "step.dispatched", None),
        (5 * DAY, "call-attempt", "step.executed", call),
        (5 * DAY, "wait-4", "step.entered", None),
        (5 * DAY, "wait-4", "wait.started", None),
        (7 * DAY, "wait-4", "wait.completed", "completed"),
        (7 * DAY, "breakup-email", "step.entered", None),
        (7 * DAY, "breakup-email", "policy.evaluated", "allow"),
        (7 * DAY, "breakup-email", "step.dispatched", None),
        (7 * DAY, "breakup-email", "step.executed", "delivered"),
        (7 * DAY, "end-no-reply", "step.entered", None),
        (7 * DAY, "end-no-reply", "step.executed", "no_response"),
        (7 * DAY, "end-no-reply", "run.completed", "no_response"),
    ]


async def test_the_timeline_follows_the_audit_chain_one_to_one(engine: Engine) -> None:
    run_id = await outreach(engine)
    entries = await engine.audit.get_by_run(run_id)
    lines = await engine.get_timeline(run_id)
    assert len(lines) == len(entries) == 34
    assert [(t.tick, t.timestamp, t.step, t.action) for t in lines] == [
        (e.tick, e.timestamp, e.step_id, e.action) for e in entries
    ]
    ticks = [t.tick for t in lines]
    assert ticks == sorted(ticks)
    for line in lines:
        assert datetime.fromisoformat(line.timestamp).tzinfo is not None
    assert lines == timeline(entries)


async def test_the_timeline_data_carries_the_rest_of_each_entry(engine: Engine) -> None:
    run_id = await outreach(engine)
    lines = await engine.get_timeline(run_id)
    entries = await engine.audit.get_by_run(run_id)

    dispatched = next(t for t in lines if t.action == "step.dispatched" and t.step == "initial-email")
    executed = next(t for t in lines if t.action == "step.executed" and t.step == "initial-email")
    assert dispatched.data["channel"] == "email"
    assert dispatched.data["attempt"] == 1
    assert executed.data["idempotencyKey"] == dispatched.data["idempotencyKey"]
    assert executed.data["contentHash"] == dispatched.data["contentHash"]
    assert executed.data["type"] == "sendEmail" and executed.data["tick"] == 0
    assert "stepId" not in executed.data and "outcome" not in executed.data

    policy = next(t for t in lines if t.action == "policy.evaluated" and t.step == "initial-email")
    assert policy.outcome == "allow"
    assert [g["gate"] for g in policy.data["gates"]] == ["consent", "suppression", "calling-hours"]
    assert all(g["verdict"] == "allow" for g in policy.data["gates"])

    wait = next(t for t in lines if t.action == "wait.started" and t.step == "wait-1")
    assert wait.data == {"targetTick": 3 * DAY}
    done = next(t for t in lines if t.action == "wait.completed" and t.step == "wait-1")
    assert done.data == {"type": "wait", "tick": 3 * DAY, "targetTick": 3 * DAY}

    branch = next(t for t in lines if t.action == "step.evaluated" and t.step == "check-email-1")
    assert branch.data == {
        "evaluated": [
            {"when": 'events.hasReply("initial-email")', "result": False},
            {"when": 'events.hasOpen("initial-email")', "result": True},
        ],
        "type": "branch",
        "tick": 3 * DAY,
    }

    event = next(t for t in lines if t.action == "event.received")
    assert event.data == {"eventType": "email.opened", "stepId": "initial-email", "event": "email.opened"}

    started = lines[0]
    assert started.data == {"status": "pending", "planChecksum": entries[0].output["planChecksum"]}  # type: ignore[index]
    assert lines[-1].data == {"outcome": "no_response", "endStep": "end-no-reply"}


async def test_a_cancelled_run_ends_its_timeline_with_the_reason(engine: Engine) -> None:
    plan = load_plan("config/plans/sales-outreach-v2.yaml")
    run = await engine.execute(plan, {"id": "c2", "email": "b@acme.test", "attributes": {"company": "Acme"}}, {"product": "DEE"})
    await engine.advance_clock(DAY)
    await engine.pause_run(run.id)
    await engine.resume_run(run.id)
    await engine.cancel_run(run.id, "asked us to stop")
    lines = await engine.get_timeline(run.id)
    assert [(t.tick, t.step, t.action) for t in lines[-3:]] == [
        (DAY, "wait-1", "run.paused"),
        (DAY, "wait-1", "run.resumed"),
        (DAY, "wait-1", "run.cancelled"),
    ]
    assert lines[-1].data == {"reason": "asked us to stop"}


async def test_the_timeline_of_an_unknown_run_is_an_error(engine: Engine) -> None:
    with pytest.raises(RunNotFoundError) as caught:
        await engine.get_timeline("01NOPE")
    assert caught.value.run_id == "01NOPE"


async def test_a_pending_run_has_a_one_line_timeline(engine: Engine) -> None:
    plan = load_plan("config/plans/sales-outreach-v2.yaml")
    run = await engine.execute(plan, {"id": "c3", "email": "c@acme.test"}, {"product": "DEE"}, start_at=50)
    lines = await engine.get_timeline(run.id)
    assert [(t.tick, t.step, t.action, t.outcome) for t in lines] == [(0, None, "run.started", "pending")]
