"""Events and channel outcomes on both backends: the outreach plan's main paths (reply, open,
silence, hard bounce), routing of `ingest_event` with and without a run, the same event id
applied once, and the channels' retry policies (transient failure, soft bounce)."""

from __future__ import annotations

import pytest

from dee import Engine, RunNotFoundError
from dee.plan.model import Plan
from tests.contract.scenarios import (
    DAY,
    MAIN_PATHS,
    VARS,
    actions,
    contact,
    main_paths,
    outputs,
    same_partition,
    trace,
    view,
)


async def test_the_outreach_plans_main_paths(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    ids = await main_paths(engine, outreach, welcome)
    assert {name: (await view(engine, r), await trace(engine, r)) for name, r in ids.items()} == MAIN_PATHS
    bounced = await outputs(engine, ids["bounced"], "step.executed")
    assert [(s, t, (o or {})["result"]["outcome"], (o or {})["error"]) for s, t, o in bounced] == [
        ("initial-email", 10, "bounced", "550 mailbox does not exist")]  # fmt: skip
    heard = await outputs(engine, ids["bounced-welcome"], "event.received")
    assert heard == [(None, 10, {"contactChanged": ["bounced"]})]
    assert engine.current_tick == 10 * DAY + 100


async def test_an_event_reaches_the_contacts_live_runs_or_only_the_run_it_names(
    engine: Engine, outreach: Plan, welcome: Plan
) -> None:
    ended = await engine.execute(outreach, contact("c1"), VARS)
    await engine.cancel_run(ended.id, "restart")
    a = await engine.execute(outreach, contact("c1"), VARS)
    b = await engine.execute(welcome, contact("c1"), VARS)
    other = await engine.execute(outreach, contact("c2"), VARS)
    await engine.run_until_idle()
    runs = {"ended": ended.id, "a": a.id, "b": b.id, "other": other.id}

    async def received() -> dict[str, int]:
        return {name: len(await actions(engine, r, "event.received")) for name, r in runs.items()}

    assert await engine.ingest_event("email.clicked", "c1", {"url": "https://x"}, event_id="ev-1") == sorted([a.id, b.id])
    await engine.run_until_idle()
    assert await received() == {"ended": 0, "a": 1, "b": 1, "other": 0}
    assert await engine.ingest_event("email.clicked", "c1", {}, run_id=b.id, event_id="ev-2") == [b.id]
    await engine.run_until_idle()
    assert await received() == {"ended": 0, "a": 1, "b": 2, "other": 0}
    with pytest.raises(RunNotFoundError):
        await engine.ingest_event("email.clicked", "c1", {}, run_id="01NOSUCHRUN", event_id="ev-3")
    assert await engine.ingest_event("email.clicked", "nobody", {}, event_id="ev-4") == []  # a contact without runs
    # an event naming a run of another contact of the same partition reaches no run
    here, neighbour = same_partition(2, "n")
    theirs = await engine.execute(outreach, contact(neighbour), VARS)
    with pytest.raises(RunNotFoundError):
        await engine.ingest_event("email.clicked", here, {}, run_id=theirs.id, event_id="ev-6")
    await engine.run_until_idle()
    assert await outputs(engine, theirs.id, "event.received") == []

    # an event naming the message (not the step) is matched to the step that sent it
    message_id = (await outputs(engine, other.id, "step.dispatched"))[0][2]["messageId"]  # type: ignore[index]
    await engine.advance_clock(50)
    assert await engine.ingest_event("email.opened", "c2", {}, message_id=message_id, event_id="ev-5") == [other.id]
    await engine.advance_clock(3 * DAY)
    assert await outputs(engine, other.id, "event.received") == [
        ("initial-email", 50, {"eventType": "email.opened", "stepId": "initial-email"})]  # fmt: skip
    assert await view(engine, other.id) == ("waiting", None, "wait-2")  # the open took it down the warm path
    clicks = await outputs(engine, b.id, "event.received")
    assert clicks == [(None, 0, {"eventType": "email.clicked", "stepId": None})] * 2


async def test_the_same_event_id_is_applied_once_and_answered_alike(engine: Engine, outreach: Plan) -> None:
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.run_until_idle()
    first = await engine.ingest_event("email.opened", "c1", {"ua": "x"}, step_id="initial-email", event_id="ev-1")
    second = await engine.ingest_event("email.opened", "c1", {"ua": "x"}, step_id="initial-email", event_id="ev-1")
    await engine.run_until_idle()
    third = await engine.ingest_event("email.opened", "c1", {"ua": "x"}, step_id="initial-email", event_id="ev-1")
    await engine.run_until_idle()
    assert (first, second, third) == ([run.id], [run.id], [run.id])
    received = await engine.audit.query(run_id=run.id, actions=["event.received"])
    assert [(e.step_id, e.tick, (e.input or {}).get("eventId"), (e.input or {}).get("type")) for e in received] == [
        ("initial-email", 0, "ev-1", "email.opened")]  # fmt: skip
    await engine.advance_clock(3 * DAY)  # the open is visible to the branch: the warm path
    assert await view(engine, run.id) == ("waiting", None, "wait-2")


async def test_failed_sends_are_retried_by_their_error_kind(engine: Engine, outreach: Plan) -> None:
    flaky = await engine.execute(outreach, contact("flaky", "flaky@flaky.test"), VARS)
    soft = await engine.execute(outreach, contact("soft", "soft@soft.test"), VARS)
    failing = await engine.execute(outreach, contact("failing", "failing@fail.test"), VARS)
    await engine.advance_clock(2 * DAY)
    hour = 3600
    retried = {name: [(t, (o or {})["errorKind"], (o or {})["attempt"], (o or {})["nextTick"])
                      for _, t, o in await outputs(engine, r, "error.retried")]
               for name, r in (("flaky", flaky.id), ("soft", soft.id), ("failing", failing.id))}  # fmt: skip
    assert retried == {
        "flaky": [(0, "transient", 1, 30)],
        "soft": [(0, "soft_bounce", 1, 8 * hour), (8 * hour, "soft_bounce", 2, 16 * hour),
                 (16 * hour, "soft_bounce", 3, 24 * hour)],
        "failing": [],
    }  # fmt: skip
    assert [await view(engine, r) for r in (flaky.id, soft.id, failing.id)] == [
        ("waiting", None, "wait-1"), ("failed", None, "initial-email"), ("failed", None, "initial-email")]  # fmt: skip
    assert await outputs(engine, flaky.id, "wait.started") == [("wait-1", 30, {"targetTick": 30 + 3 * DAY})]
    ends = {name: await outputs(engine, r, "run.failed") for name, r in (("soft", soft.id), ("failing", failing.id))}
    assert ends == {
        "soft": [("initial-email", 24 * hour, {"error": "soft_bounce: 452 mailbox full"})],
        "failing": [("initial-email", 0, {"error": "permanent: 554 rejected"})],
    }
