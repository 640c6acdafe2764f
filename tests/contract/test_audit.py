"""What both backends record and how it is read back: timelines, the audit chain and its
verification, `audit.get_by_run` / `query` / `get_context_at` / `export`, replay (dry and
recorded), the debugger, the compliance report with consents, and the manual clock."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest

from dee import ConsentRecord, Engine
from dee.plan.model import Plan
from tests.contract.scenarios import (
    DAY,
    MAIN_PATHS,
    OUTREACH_ID,
    VARS,
    actions,
    contact,
    main_paths,
    outputs,
    trace,
    view,
)

END = 10 * DAY + 100  # the clock once `main_paths` is done


async def test_the_audit_log_is_a_verified_chain_read_by_run_action_and_tick(
    engine: Engine, outreach: Plan, welcome: Plan
) -> None:
    ids = await main_paths(engine, outreach, welcome)
    name = {r: n for n, r in ids.items()}
    warm = ids["warm"]
    entries = await engine.audit.get_by_run(warm)
    assert [e.seq for e in entries] == list(range(1, len(MAIN_PATHS["warm"][1]) + 1))
    assert entries[0].previous_checksum == "0" * 64
    assert all(b.previous_checksum == a.checksum for a, b in itertools.pairwise(entries))
    assert (entries[0].action, entries[-1].action, entries[-1].output) == (
        "run.started", "run.completed", {"outcome": "no_response", "endStep": "end-no-reply"})  # fmt: skip
    chains = await engine.verify_audit_chains(list(ids.values()))
    assert {name[r]: (c.valid, c.entries, c.first_tick, c.last_tick, c.broken_at) for r, c in chains.items()} == {
        "replied": (True, 9, 0, 100, None),
        "warm": (True, 34, 0, 7 * DAY, None),
        "cold": (True, 31, 0, 9 * DAY, None),
        "bounced-welcome": (True, 9, 0, 10, None),
        "bounced": (True, 6, 10, 10, None),
    }
    assert await engine.verify_audit_chain(warm) == chains[warm]

    assert await actions(engine, warm, "wait.started", "wait.completed") == [
        ("wait.started", "wait-1", 0), ("wait.completed", "wait-1", 3 * DAY),
        ("wait.started", "wait-2", 3 * DAY), ("wait.completed", "wait-2", 5 * DAY),
        ("wait.started", "wait-4", 5 * DAY), ("wait.completed", "wait-4", 7 * DAY),
    ]  # fmt: skip
    window = await engine.audit.query(actions=["step.entered"], from_tick=3 * DAY, to_tick=5 * DAY - 1)
    assert [(name[e.run_id], e.step_id, e.tick) for e in window] == [
        ("warm", "check-email-1", 3 * DAY), ("warm", "warm-follow-up", 3 * DAY), ("warm", "wait-2", 3 * DAY),
        ("cold", "check-email-1", 3 * DAY), ("cold", "cold-follow-up", 3 * DAY), ("cold", "wait-3", 3 * DAY),
    ]  # fmt: skip
    ends = await engine.audit.query(actions=["run.completed", "run.failed"])
    assert [(name[e.run_id], e.tick, (e.output or {})["outcome"]) for e in ends] == [
        ("replied", 100, "replied"), ("warm", 7 * DAY, "no_response"), ("cold", 9 * DAY, "no_response"),
        ("bounced-welcome", 10, "bounced"), ("bounced", 10, "undeliverable"),
    ]  # fmt: skip
    at_ten = await engine.audit.query(from_tick=10, to_tick=10)
    assert [(name[e.run_id], e.action) for e in at_ten] == [
        ("bounced-welcome", "event.received"), ("bounced-welcome", "run.completed"),
        ("bounced", "run.started"), ("bounced", "step.entered"), ("bounced", "policy.evaluated"), ("bounced", "step.dispatched"),
        ("bounced", "step.executed"), ("bounced", "run.completed"),
    ]  # fmt: skip
    assert await engine.audit.query(run_id=warm, actions=["run.failed"]) == []
    assert await engine.audit.query(from_tick=END + 1) == []

    ctx = await engine.audit.get_context_at(warm, "check-email-1")
    assert ctx is not None
    assert (ctx["tick"], ctx["variables"], ctx["contact"]["id"], ctx["contact"]["attributes"]) == (
        3 * DAY, VARS, "c-warm", {"company": "Acme", "first_name": "C-WARM"})  # fmt: skip
    assert [dict(e) for e in ctx["events"]] == [{"type": "email.opened", "step_id": "initial-email", "tick": 100}]
    assert [(r["stepId"], r["outcome"]) for r in ctx["results"]] == [("initial-email", "delivered"), ("wait-1", "completed")]
    first = await engine.audit.get_context_at(warm, "initial-email")
    assert first is not None and (first["tick"], list(first["events"]), list(first["results"])) == (0, [], [])
    assert await engine.audit.get_context_at(warm, "cold-follow-up") is None


async def test_every_run_replays_identically_and_a_recorded_replay_extends_its_chain(
    engine: Engine, outreach: Plan, welcome: Plan
) -> None:
    ids = await main_paths(engine, outreach, welcome)
    before = {n: await engine.audit.get_by_run(r) for n, r in ids.items()}
    verdicts = {}
    for n, r in ids.items():
        result = await engine.replay(r)
        verdicts[n] = (result.identical, result.diffs, all(s.identical for s in result.steps), len(result.steps) > 0)
    assert verdicts == dict.fromkeys(ids, (True, [], True, True))
    assert {n: await engine.audit.get_by_run(r) for n, r in ids.items()} == before  # a dry run touches nothing

    recorded = await engine.replay(ids["warm"], dry_run=False)
    assert (recorded.identical, recorded.diffs) == (True, [])
    after = await engine.audit.get_by_run(ids["warm"])
    assert after[: len(before["warm"])] == before["warm"]
    assert [(e.action, e.step_id, e.tick, e.output) for e in after[len(before["warm"]) :]] == [
        ("replay.recorded", None, END, {"identical": True, "diffs": 0, "fields": [], "reissued": 4})]  # fmt: skip
    chain = await engine.verify_audit_chain(ids["warm"])
    assert (chain.valid, chain.entries, chain.last_tick) == (True, 35, END)
    assert (await trace(engine, ids["warm"]))[-1] == (END, None, "replay.recorded", None)
    assert (await engine.replay(ids["warm"])).identical is True  # the verdict is not an input of the run
    assert await view(engine, ids["warm"]) == ("completed", "no_response", "end-no-reply")


async def test_the_debugger_steps_a_copy_of_the_run_to_its_recorded_trace(engine: Engine, outreach: Plan, welcome: Plan) -> None:
    ids = await main_paths(engine, outreach, welcome)
    live = await engine.audit.get_by_run(ids["warm"])
    debugger = await engine.debug(ids["warm"])
    first = debugger.peek()
    assert first is not None and (first.kind, first.tick, first.step_id, first.input) == ("timer", 0, None, None)
    assert debugger.peek() == first  # peeking executes nothing
    assert [d.action for d in debugger.entries] == ["run.started"]
    produced = list(debugger.entries)
    moves = []
    while debugger.has_next():
        move = debugger.peek()
        assert move is not None
        moves.append((move.kind, move.tick, move.step_id, (move.input or {}).get("kind")))
        produced += await debugger.step_forward()
    assert moves == [
        ("timer", 0, None, None), ("input", 0, "initial-email", "result"), ("input", 100, "wait-1", "event"),
        ("timer", 3 * DAY, "wait-1", None), ("input", 3 * DAY, "warm-follow-up", "result"),
        ("timer", 5 * DAY, "wait-2", None), ("input", 5 * DAY, "call-attempt", "result"),
        ("timer", 7 * DAY, "wait-4", None), ("input", 7 * DAY, "breakup-email", "result"),
    ]  # fmt: skip
    assert debugger.peek() is None and await debugger.step_forward() == []
    assert [(d.seq, d.action, d.step_id, d.tick, d.output) for d in produced] == [
        (e.seq, e.action, e.step_id, e.tick, e.output) for e in live]  # fmt: skip
    assert (debugger.state.status, debugger.state.outcome) == ("completed", "no_response")
    assert await engine.audit.get_by_run(ids["warm"]) == live  # never the live run


async def test_the_export_and_the_compliance_report_state_what_was_recorded(
    engine: Engine, outreach: Plan, welcome: Plan, tmp_path: Path
) -> None:
    await engine.record_consent(ConsentRecord(contact_id="c-warm", channel="email", status="granted", source="form",
                                              expires_tick=5 * DAY, evidence={"ip": "10.0.0.1"}))  # fmt: skip
    await engine.record_consent(ConsentRecord(contact_id="c-cold", channel="email", status="granted", source="form"))
    await engine.record_consent(ConsentRecord(contact_id="c-cold", channel="voice", status="revoked", source="call"))
    await engine.suppress("c-blocked", "global", "complaint", "support")
    ids = await main_paths(engine, outreach, welcome, callers=("c-replied", "c-warm", "c-bounced"))  # c-cold revoked it
    gone = await engine.execute(outreach, contact("c-gone"), VARS)
    await engine.advance_clock(100)
    await engine.ingest_event("email.unsubscribed", "c-gone", {}, event_id="unsub-1")
    await engine.run_until_idle()
    assert await view(engine, gone.id) == ("completed", "unsubscribed", "wait-1")
    # the call of the contact whose voice consent was revoked was refused by the consent gate
    [refused] = [o for _, _, o in await outputs(engine, ids["cold"], "policy.evaluated") if (o or {})["verdict"] != "allow"]
    assert (refused["verdict"], refused["reason"]) == ("skip", "voice consent revoked at tick 0")
    assert [(s, o["result"]["outcome"]) for s, _, o in await outputs(engine, ids["cold"], "step.skipped")] == [
        ("call-attempt", "skipped")]  # fmt: skip

    report = await engine.compliance.report(0, END + 100)
    who = {r: n for n, r in ids.items()} | {gone.id: "gone"}
    assert (report.period_from, report.period_to, report.calling_hours) == (0, END + 100, ("08:00", "21:00"))
    assert [(who[s.run_id], s.contact_id, s.step_id, s.channel, s.tick, s.attempt, s.consent) for s in report.sends] == [
        ("replied", "c-replied", "initial-email", "email", 0, 1, "none"),
        ("warm", "c-warm", "initial-email", "email", 0, 1, "granted"),
        ("warm", "c-warm", "warm-follow-up", "email", 3 * DAY, 1, "granted"),
        ("warm", "c-warm", "call-attempt", "voice", 5 * DAY, 1, "granted"),
        ("warm", "c-warm", "breakup-email", "email", 7 * DAY, 1, "expired"),
        ("cold", "c-cold", "initial-email", "email", 0, 1, "granted"),
        ("cold", "c-cold", "cold-follow-up", "email", 3 * DAY, 1, "granted"),
        ("cold", "c-cold", "breakup-email", "email", 9 * DAY, 1, "granted"),
        ("bounced-welcome", "c-bounced", "welcome-email", "email", 0, 1, "none"),
        ("bounced", "c-bounced", "initial-email", "email", 10, 1, "none"),
        ("gone", "c-gone", "initial-email", "email", END, 1, "none"),
    ]  # fmt: skip
    assert (report.sends_by_channel, report.consent_at_send) == (
        {"email": 10, "voice": 1}, {"expired": 1, "granted": 6, "none": 4})  # fmt: skip
    assert [(s.contact_id, s.level, s.reason, s.source, s.tick) for s in report.suppressions] == [
        ("c-blocked", "global", "complaint", "support", 0),
        ("c-gone", "global", "unsubscribe", "email.unsubscribed", END + 100)]  # fmt: skip
    # the contact has no zone, nor does its (fictional) number: the gate used the default, and so does the report
    assert [(who[c.run_id], c.contact_id, c.step_id, list(c.local_times), c.zones_from) for c in report.calls] == [
        ("warm", "c-warm", "call-attempt", ["UTC"], "calling-hours gate")]  # fmt: skip
    unsubscribes = [(who[u.run_id], u.contact_id, u.received_tick, u.stopped_tick, u.stopped_by, u.ticks)
                    for u in report.unsubscribes]  # fmt: skip
    assert unsubscribes == [("gone", "c-gone", END + 100, END + 100, "run.completed", 0)]
    assert (report.chains.runs, report.chains.valid, report.chains.broken) == (6, 6, {})
    assert [(s.contact_id, s.tick) for s in (await engine.compliance.report(1, 10)).sends] == [("c-bounced", 10)]
    with pytest.raises(ValueError):
        await engine.compliance.report(10, 9)

    warm = ids["warm"]
    out = tmp_path / "warm.json"
    exported = await engine.audit.export(warm, output=out)
    assert out.read_bytes() == exported
    document = msgspec.json.decode(exported)
    assert document["format"] == "dee.audit-export/1"
    assert (document["run"]["id"], document["run"]["planId"], document["run"]["contactId"], document["run"]["status"]) == (
        warm, OUTREACH_ID, "c-warm", "completed")  # fmt: skip
    assert (document["plan"]["id"], document["plan"]["version"]) == (OUTREACH_ID, 1)
    assert (document["chain"]["valid"], document["chain"]["entries"]) == (True, 34)
    assert [e["seq"] for e in document["entries"]] == list(range(1, 35))
    assert [e["checksum"] for e in document["entries"]] == [e.checksum for e in await engine.audit.get_by_run(warm)]
    assert b"chain: VALID - 34 entries" in await engine.audit.export(warm, "pdf")


async def test_the_manual_clock_fires_every_timer_at_its_own_tick(engine: Engine, outreach: Plan) -> None:
    assert engine.current_tick == 0
    with pytest.raises(ValueError):
        await engine.advance_clock(-1)
    await engine.advance_clock(5)
    assert engine.current_tick == 5
    run = await engine.execute(outreach, contact("c1"), VARS)
    await engine.advance_clock(10 * DAY)  # one call crossing three timers
    assert engine.current_tick == 5 + 10 * DAY
    done = await engine.get_run(run.id)
    assert (done.status, done.outcome, done.current_tick, done.steps_remaining) == ("completed", "no_response", 5 + 9 * DAY, 0)
    assert [(s, t) for s, t, _ in await outputs(engine, run.id, "wait.completed")] == [
        ("wait-1", 5 + 3 * DAY), ("wait-3", 5 + 7 * DAY), ("wait-4", 5 + 9 * DAY)]  # fmt: skip
    settled = await actions(engine, run.id)
    await engine.run_until_idle()  # nothing due: nothing happens
    await engine.advance_clock(0)
    assert (await actions(engine, run.id), engine.current_tick) == (settled, 5 + 10 * DAY)
