"""Replay (SPEC 7) through the in-memory Engine: the four divergences it must catch, the journal
entry of a non-dry run, and the step-by-step Debugger.

The reference run is the outreach plan of `config/plans/sales-outreach-v2.yaml` for one contact
who opens the first email: warm follow-up, call, breakup email, `no_response`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dee import (
    ChannelsConfig,
    EmailChannelConfig,
    Engine,
    EngineConfig,
    ReplayDiff,
    SchedulerConfig,
    VoiceChannelConfig,
    load_plan,
)
from dee.errors import AuditChainError
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import AnyInput, Event, Start, input_from_builtins
from dee.kernel.machine import KernelEnv
from dee.kernel.replay import inputs_of, replay_entries, start_of, trace
from dee.plan.compiled import CompiledPlan
from dee.plan.model import Condition, Plan
from dee.plan.prepare import prepare_plan
from dee.plugin import hookimpl
from dee.plugin.contracts import DispatchResponse
from dee.plugin.manager import PluginManager
from dee.project.templates import MemoryTemplateStore
from dee.records import ConsentRecord

DAY = 86400
PLAN_FILE = "config/plans/sales-outreach-v2.yaml"
CONTACT = {"id": "c1", "email": "ann@acme.test", "phone": "+15551230001", "attributes": {"company": "Acme", "first_name": "Ann"}}


def config() -> EngineConfig:
    return EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"))


@pytest.fixture
async def engine() -> Any:
    async with Engine(config()) as e:
        yield e


async def outreach_run(engine: Engine) -> str:
    """Open at tick 100, click at tick 300000, then run to the end (tick 8 days); the contact
    agreed to be called."""
    await engine.record_consent(ConsentRecord(contact_id=CONTACT["id"], channel="voice", status="granted", source="form"))
    run = await engine.execute(load_plan(PLAN_FILE), CONTACT, {"product": "DEE"})
    await engine.advance_clock(100)
    await engine.ingest_event("email.opened", "c1", {}, step_id="initial-email", event_id="ev-open")
    await engine.advance_clock(300_000 - 100)
    await engine.ingest_event("email.clicked", "c1", {}, step_id="initial-email", event_id="ev-click")
    await engine.advance_clock(8 * DAY - 300_000)
    finished = await engine.get_run(run.id)
    assert (finished.status, finished.outcome) == ("completed", "no_response")
    return run.id


def env_with(engine: Engine, plan: CompiledPlan, templates: Any = None) -> Callable[[Start], KernelEnv]:
    """An environment like the engine's own, with another plan version (and/or templates)."""
    cfg = engine.config

    def env_for(start: Start) -> KernelEnv:
        return KernelEnv(
            plan=plan,
            templates=engine.templates if templates is None else templates,
            tick_interval_ms=cfg.scheduler.tick_interval_ms,
            settings=cfg.kernel_settings(),
            message_domain=cfg.message_domain,
            gates=tuple(engine.plugins.policy_gates(cfg).values()),
        )

    return env_for


def outcomes(result: Any) -> list[tuple[str, str, int, str]]:
    return [(s.original_result.step_id, s.original_result.type, s.original_result.tick, s.original_result.outcome)
            for s in result.steps if s.original_result]  # fmt: skip


# ---- 1. identical -------------------------------------------------------------------------


async def test_replaying_a_finished_run_is_identical_step_by_step(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    result = await engine.replay(run_id)
    assert result.identical is True
    assert result.diffs == []
    assert all(step.identical for step in result.steps)
    assert all(step.original_result == step.replayed_result for step in result.steps)
    call_outcome = outcomes(result)[8][3]
    assert call_outcome in ("answered", "voicemail", "no_answer", "busy")  # the simulated adapter's
    assert [(r[0], r[3]) for r in outcomes(result)] == [
        ("initial-email", "delivered"),
        ("initial-email", "received"),
        ("wait-1", "completed"),
        ("check-email-1", "branch:warm-follow-up"),
        ("warm-follow-up", "delivered"),
        ("initial-email", "received"),
        ("wait-2", "completed"),
        ("check-email-2", "branch:call-attempt"),
        ("call-attempt", call_outcome),
        ("wait-4", "completed"),
        ("breakup-email", "delivered"),
        ("end-no-reply", "no_response"),
        ("(run)", "no_response"),
    ]
    sends = [s.original_result for s in result.steps if s.original_result and s.original_result.type == "sendEmail"]
    assert len(sends) == 3
    assert all(s.idempotency_key and s.content_hash for s in sends)
    wait1 = next(s.original_result for s in result.steps if s.id == "wait-1")
    assert (wait1.tick, wait1.target_tick) == (3 * DAY, 3 * DAY)


async def test_replay_compares_against_the_recorded_results(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    entries = await engine.audit.get_by_run(run_id)
    result = await engine.replay(run_id)
    assert [s.original_result for s in result.steps] == trace(entries)


# ---- 2. a template edited after the send ---------------------------------------------------


async def test_a_template_edited_after_the_send_shows_as_a_content_hash_diff(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    entries = await engine.audit.get_by_run(run_id)
    sent = next(e for e in entries if e.action == "step.executed" and e.step_id == "warm-follow-up")
    original_hash = sent.output["result"]["contentHash"]  # type: ignore[index]

    # The engine's templates are the directory store chained with the plugins' stores; a reload
    # after an edit means a new directory store in its place (stores are never edited in place).
    directory = engine.templates.stores[0]
    edited = dict(directory.get("email", "tmpl_warm_follow_up"))
    edited["text"] = edited["text"] + "\nP.S. Prices go up next month.\n"
    engine.templates.stores[0] = directory.with_document("email", "tmpl_warm_follow_up", edited)

    result = await engine.replay(run_id)
    assert result.identical is False
    assert len(result.diffs) == 1
    diff = result.diffs[0]
    assert (diff.step, diff.field, diff.expected) == ("warm-follow-up", "content_hash", original_hash)
    assert isinstance(diff.actual, str) and len(diff.actual) == 64 and diff.actual != original_hash
    flagged = [s.id for s in result.steps if not s.identical]
    assert flagged == ["warm-follow-up"]


async def test_a_template_edit_through_a_memory_store_via_replay_entries(engine: Engine) -> None:
    """The same divergence with an environment built from a MemoryTemplateStore only."""
    run_id = await outreach_run(engine)
    entries = await engine.audit.get_by_run(run_id)
    plan = prepare_plan(load_plan(PLAN_FILE), engine.plugins.step_types(), engine.templates)
    directory = engine.templates.stores[0]
    docs = {kind: {i: directory.get(kind, i) for i in directory.ids(kind)} for kind in ("email", "voice", "voicemail")}
    docs["email"]["tmpl_breakup"] = {**docs["email"]["tmpl_breakup"], "text": "Last one, promise."}
    same = replay_entries(entries, env_with(engine, plan, MemoryTemplateStore(docs)))
    assert same.identical is False
    assert [(d.step, d.field) for d in same.diffs] == [("breakup-email", "content_hash")]
    unchanged = {kind: {i: directory.get(kind, i) for i in directory.ids(kind)} for kind in ("email", "voice", "voicemail")}
    assert replay_entries(entries, env_with(engine, plan, MemoryTemplateStore(unchanged))).identical is True


# ---- 3. a new plan version with a different branch condition ------------------------------


def with_branch(plan: Plan, step_id: str, conditions: list[Condition]) -> Plan:
    steps = tuple(
        msgspec.structs.replace(s, params={"conditions": msgspec.to_builtins(conditions)}) if s.id == step_id else s
        for s in plan.steps
    )
    return msgspec.structs.replace(plan, steps=steps, checksum="", version=None)


async def test_a_new_plan_version_with_another_branch_condition_diffs_on_that_branch(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    entries = await engine.audit.get_by_run(run_id)
    v1 = load_plan(PLAN_FILE)
    v2 = with_branch(v1, "check-email-1", [
        Condition(when='events.hasReply("initial-email")', goto="end-replied"),
        Condition(when='events.hasClick("initial-email")', goto="warm-follow-up"),
        Condition(when="default", goto="cold-follow-up"),
    ])  # fmt: skip
    compiled_v2 = prepare_plan(v2, engine.plugins.step_types(), engine.templates)
    assert compiled_v2.plan.checksum != prepare_plan(v1, engine.plugins.step_types(), engine.templates).plan.checksum
    other = await engine.execute(compiled_v2.plan, {"id": "c9", "email": "z@acme.test"}, {"product": "DEE"})
    assert other.plan_version == 2  # a real new version of the same plan id

    result = replay_entries(entries, env_with(engine, compiled_v2))
    assert result.identical is False
    branch = [d for d in result.diffs if d.step == "check-email-1"]
    assert branch == [ReplayDiff("check-email-1", "outcome", "branch:warm-follow-up", "branch:cold-follow-up")]
    assert result.diffs[0] == branch[0]  # nothing diverges before the branch
    index = next(i for i, s in enumerate(result.steps) if s.id == "check-email-1")
    assert all(s.identical for s in result.steps[:index])
    assert result.steps[index].identical is False

    same = replay_entries(entries, env_with(engine, prepare_plan(v1, engine.plugins.step_types(), engine.templates)))
    assert same.identical is True


# ---- 4. events in another order ------------------------------------------------------------


async def test_events_in_another_order_diff_on_the_branch_that_saw_them(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    entries = await engine.audit.get_by_run(run_id)
    _, recorded = inputs_of(entries)
    events = [i for i in recorded if isinstance(i, Event)]
    assert [(e.type, e.tick) for e in events] == [("email.opened", 100), ("email.clicked", 300_000)]
    opened, clicked = events
    swapped = [
        msgspec.structs.replace(i, tick=clicked.tick) if i is opened
        else msgspec.structs.replace(i, tick=opened.tick) if i is clicked else i
        for i in recorded
    ]  # fmt: skip
    swapped.sort(key=lambda i: i.tick)

    result = await engine.replay(run_id, inputs=swapped)
    assert result.identical is False
    assert result.diffs[0] == ReplayDiff("initial-email", "type", "event:email.opened", "event:email.clicked")
    assert ReplayDiff("check-email-1", "outcome", "branch:warm-follow-up", "branch:cold-follow-up") in result.diffs

    # the recorded order, passed explicitly, is identical again
    assert (await engine.replay(run_id, inputs=recorded)).identical is True


async def test_an_event_dropped_from_the_inputs_is_a_diff(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    _, recorded = inputs_of(await engine.audit.get_by_run(run_id))
    without_open = [i for i in recorded if not (isinstance(i, Event) and i.type == "email.opened")]
    result = await engine.replay(run_id, inputs=without_open)
    assert result.identical is False
    assert result.steps[0].identical is True  # the first send is unaffected
    assert result.steps[1].id == "initial-email" and result.steps[1].identical is False
    assert result.steps[1].original_result.type == "event:email.opened"  # type: ignore[union-attr]
    replayed = [(s.replayed_result.step_id, s.replayed_result.outcome) for s in result.steps if s.replayed_result]
    assert ("check-email-1", "branch:cold-follow-up") in replayed
    assert ("check-email-1", "branch:warm-follow-up") not in replayed


# ---- dry_run ------------------------------------------------------------------------------


class CountingAdapter:
    """A channel adapter that logs every request and answers a repeated key from memory."""

    name = "counting"

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.requests: list[tuple[str, int]] = []
        self.sent: list[str] = []
        self.answers: dict[str, DispatchResponse] = {}

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        self.requests.append((request.idempotency_key, request.attempt))
        if request.idempotency_key not in self.answers:
            self.sent.append(request.idempotency_key)
            outcome = "answered" if self.channel == "voice" else None
            self.answers[request.idempotency_key] = DispatchResponse("delivered", outcome=outcome)
        return self.answers[request.idempotency_key]


class CountingPlugin:
    def __init__(self) -> None:
        self.adapters = {"email": CountingAdapter("email"), "voice": CountingAdapter("voice")}

    @hookimpl
    def dee_channel_adapters(self, config: Any) -> list[Any]:
        return list(self.adapters.values())


@pytest.fixture
async def counted() -> Any:
    plugin = CountingPlugin()
    cfg = msgspec.structs.replace(config(), channels=ChannelsConfig(
        email=EmailChannelConfig(adapter="counting"), voice=VoiceChannelConfig(adapter="counting")))  # fmt: skip
    async with Engine(cfg, plugins=PluginManager.load(extra=[("counting", plugin)])) as e:
        yield e, plugin.adapters


async def test_dry_run_changes_nothing(counted: Any) -> None:
    engine, adapters = counted
    run_id = await outreach_run(engine)
    before_entries = await engine.audit.get_by_run(run_id)
    before_run = await engine.get_run(run_id)
    assert [len(adapters["email"].requests), len(adapters["voice"].requests)] == [3, 1]

    result = await engine.replay(run_id, dry_run=True)
    assert result.identical is True
    assert await engine.audit.get_by_run(run_id) == before_entries
    assert await engine.get_run(run_id) == before_run
    assert [len(adapters["email"].requests), len(adapters["voice"].requests)] == [3, 1]  # nothing re-issued
    assert (await engine.verify_audit_chain(run_id)).entries == len(before_entries)


async def test_a_recorded_replay_reissues_the_original_keys_and_appends_one_verifying_entry(counted: Any) -> None:
    engine, adapters = counted
    run_id = await outreach_run(engine)
    before = await engine.audit.get_by_run(run_id)
    original_keys = [e.output["idempotencyKey"] for e in before if e.action == "step.dispatched"]  # type: ignore[index]
    assert len(original_keys) == 4
    email, voice = adapters["email"], adapters["voice"]
    assert email.sent + voice.sent == [original_keys[i] for i in (0, 1, 3)] + [original_keys[2]]

    result = await engine.replay(run_id, dry_run=False)
    assert result.identical is True
    # re-issued with the original keys and attempts; the adapters answered from memory
    reissued = email.requests[3:] + voice.requests[1:]
    assert sorted(reissued) == sorted((k, 1) for k in original_keys)
    assert len(email.sent) == 3 and len(voice.sent) == 1

    after = await engine.audit.get_by_run(run_id)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1
    entry = after[-1]
    assert (entry.action, entry.seq, entry.step_id, entry.tick) == ("replay.recorded", len(before) + 1, None, 8 * DAY)
    assert entry.output == {"identical": True, "diffs": 0, "reissued": 4, "fields": []}
    assert entry.previous_checksum == before[-1].checksum

    check = await engine.verify_audit_chain(run_id)
    assert (check.valid, check.entries, check.broken_at) == (True, len(before) + 1, None)
    again = await engine.replay(run_id)
    assert again.identical is True  # the journal entry itself is not part of the trace


async def test_a_recorded_what_if_replay_never_sends_what_the_run_did_not(counted: Any) -> None:
    """Without the open, the run would have taken the cold branch: its email is a first send no
    gate of today has asked about, and is not issued; the answered ones are re-issued."""
    engine, adapters = counted
    run_id = await outreach_run(engine)
    _, recorded = inputs_of(await engine.audit.get_by_run(run_id))
    without_open = [i for i in recorded if not (isinstance(i, Event) and i.type == "email.opened")]
    sent_before = [*adapters["email"].sent, *adapters["voice"].sent]
    result = await engine.replay(run_id, dry_run=False, inputs=without_open)
    assert result.identical is False
    assert [*adapters["email"].sent, *adapters["voice"].sent] == sent_before  # nothing new went out
    assert {d.idempotency_key for d in result.dispatches} <= set(sent_before)
    assert (await engine.audit.get_by_run(run_id))[-1].output["reissued"] == len(result.dispatches)  # type: ignore[index]


async def test_a_recorded_replay_of_a_divergent_run_names_the_fields(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    directory = engine.templates.stores[0]
    edited = {**directory.get("email", "tmpl_cold_intro"), "text": "Hello."}
    engine.templates.stores[0] = directory.with_document("email", "tmpl_cold_intro", edited)
    await engine.replay(run_id, dry_run=False)
    entry = (await engine.audit.get_by_run(run_id))[-1]
    assert entry.output == {"identical": False, "diffs": 1, "reissued": 4, "fields": ["initial-email.content_hash"]}
    assert (await engine.verify_audit_chain(run_id)).valid is True


# ---- the Debugger --------------------------------------------------------------------------


def key(e: Any) -> tuple[str, str | None, int]:
    return (e.action, e.step_id, e.tick)


async def test_the_debugger_walks_a_run_to_the_end_reproducing_the_recorded_entries(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    recorded = await engine.audit.get_by_run(run_id)
    debugger = await engine.debug(run_id)
    assert [key(e) for e in debugger.entries] == [key(recorded[0])]
    produced = list(debugger.entries)
    moves = 0
    while debugger.has_next():
        move = debugger.peek()
        assert move is not None
        new = await debugger.step_forward()
        assert new, f"move {move} produced nothing"
        assert all(e.tick == move.tick for e in new)
        produced += new
        moves += 1
    assert debugger.peek() is None
    assert await debugger.step_forward() == []
    assert [key(e) for e in produced] == [key(e) for e in recorded]
    assert [key(e) for e in debugger.entries] == [key(e) for e in recorded]
    assert [(e.seq, e.input, e.output) for e in produced] == [(e.seq, e.input, e.output) for e in recorded]
    assert debugger.state.status == "completed"
    assert debugger.state.outcome == "no_response"
    # the start timer + 4 channel results + 2 events + 3 wait timers
    assert moves == 10


async def test_peek_executes_nothing_and_describes_the_next_move(engine: Engine) -> None:
    run_id = await outreach_run(engine)
    debugger = await engine.debug(run_id)
    first = debugger.peek()
    assert first is not None
    assert (first.kind, first.tick, first.step_id, first.input) == ("timer", 0, None, None)
    assert debugger.peek() == first
    assert len(debugger.entries) == 1 and debugger.state.status == "pending"

    await debugger.step_forward()  # start: initial-email dispatched
    move = debugger.peek()
    assert move is not None
    assert (move.kind, move.tick, move.step_id) == ("input", 0, "initial-email")
    assert move.input is not None and move.input["kind"] == "result"
    state, count = debugger.state, len(debugger.entries)
    for _ in range(3):
        debugger.peek()
    assert debugger.state is state and len(debugger.entries) == count

    await debugger.step_forward()  # result: wait-1 starts
    move = debugger.peek()
    assert move is not None
    assert (move.kind, move.tick, move.step_id) == ("input", 100, "wait-1")
    assert move.input is not None and (move.input["kind"], move.input["type"]) == ("event", "email.opened")
    await debugger.step_forward()
    timer = debugger.peek()
    assert timer is not None
    assert (timer.kind, timer.tick, timer.step_id, timer.input) == ("timer", 3 * DAY, "wait-1", None)
    assert list(timer.context["events"]) == [{"type": "email.opened", "step_id": "initial-email", "tick": 100}]
    assert timer.context["tick"] == 3 * DAY


async def test_debugging_never_touches_the_live_run(engine: Engine) -> None:
    run = await engine.execute(load_plan(PLAN_FILE), CONTACT, {"product": "DEE"})
    await engine.advance_clock(10)
    live_entries = await engine.audit.get_by_run(run.id)
    live = await engine.get_run(run.id)
    assert live.status == "waiting"
    debugger = await engine.debug(run.id)
    while debugger.has_next():
        await debugger.step_forward()
    assert await engine.audit.get_by_run(run.id) == live_entries
    assert await engine.get_run(run.id) == live
    assert debugger.state.current_step == "wait-1"


# ---- every kind of input replays ------------------------------------------------------------


def person(cid: str, email: str | None = None) -> dict[str, Any]:
    return {"id": cid, "email": email or f"{cid}@acme.test", "phone": "+15550002", "attributes": {"company": "Acme"}}


async def test_runs_with_commands_retries_bounces_and_suppressions_replay_identically(engine: Engine) -> None:
    plan = load_plan(PLAN_FILE)
    runs = {
        "paused": await engine.execute(plan, person("p1"), {"product": "DEE"}),
        "transient": await engine.execute(plan, person("f1", "f1@flaky.test"), {"product": "DEE"}),
        "retried": await engine.execute(plan, person("x1", "x1@fail.test"), {"product": "DEE"}),
        "hard-bounce": await engine.execute(plan, person("b1", "b1@bounce.test"), {"product": "DEE"}),
        "soft-bounce": await engine.execute(plan, person("s1", "s1@soft.test"), {"product": "DEE"}),
        "unsubscribed": await engine.execute(plan, person("u1"), {"product": "DEE"}),
        "suppressed": await engine.execute(plan, person("z1"), {"product": "DEE"}),
        "future-start": await engine.execute(plan, person("l1"), {"product": "DEE"}, start_at=500),
    }
    await engine.run_until_idle()
    await engine.pause_run(runs["paused"].id)
    await engine.advance_clock(DAY)
    await engine.retry_run(runs["retried"].id)
    await engine.ingest_event("email.unsubscribed", "u1", {})
    await engine.suppress("z1", "global", "complaint", "support")
    await engine.advance_clock(3 * DAY)
    await engine.resume_run(runs["paused"].id)
    await engine.advance_clock(10 * DAY)

    ends = {name: ((v := await engine.get_run(r.id)).status, v.outcome) for name, r in runs.items()}
    assert ends == {
        "paused": ("completed", "no_response"),
        "transient": ("completed", "no_response"),
        "retried": ("failed", None),
        "hard-bounce": ("completed", "undeliverable"),
        "soft-bounce": ("failed", None),
        "unsubscribed": ("completed", "unsubscribed"),
        "suppressed": ("cancelled", None),
        "future-start": ("completed", "no_response"),
    }
    for name, run in runs.items():
        result = await engine.replay(run.id)
        assert (name, result.identical, result.diffs) == (name, True, [])
        recorded = await engine.audit.get_by_run(run.id)
        debugger = await engine.debug(run.id)
        while debugger.has_next():
            await debugger.step_forward()
        assert [key(e) for e in debugger.entries] == [key(e) for e in recorded], name
        assert debugger.state.status == ends[name][0], name


RECORDED_INPUTS = [
    {"kind": "event", "tick": 3, "eventId": "e1", "type": "email.opened", "stepId": "hello", "data": {"x": [1]}},
    {"kind": "result", "tick": 2, "runId": "r", "idempotencyKey": "k" * 64, "attempt": 1, "status": "delivered"},
    {"kind": "pause", "tick": 4, "commandId": "c1"},
    {"kind": "contact", "tick": 5, "unsubscribed": True},
    {"kind": "replay", "tick": 6, "identical": False, "fields": ["outcome"]},
]
BAD_INPUTS = [
    {"kind": "nope", "tick": 1}, {"tick": 1}, {"kind": ["event"], "tick": 1}, {"kind": None, "tick": 1},
    {"kind": "event", "tick": "soon", "eventId": "e", "type": "t"}, {"kind": "event", "tick": 1},
]


@pytest.mark.parametrize("value", RECORDED_INPUTS, ids=lambda v: v["kind"])
def test_a_recorded_input_converts_to_the_member_its_kind_names(value: dict[str, Any]) -> None:
    """`input_from_builtins` looks the member up by kind (fast); the result is what converting
    to the whole union gives."""
    assert input_from_builtins(value) == msgspec.convert(value, AnyInput)


@pytest.mark.parametrize("value", BAD_INPUTS)
def test_an_input_that_is_not_valid_is_refused_with_a_validation_error(value: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        input_from_builtins(value)


async def test_a_run_replays_from_its_export_file_alone(tmp_path: Path) -> None:
    from dee.ops.cli import main

    async with Engine(config()) as e:
        run = await e.execute(load_plan(PLAN_FILE), CONTACT, {"product": "DEE"})
        await e.advance_clock(10 * 86_400)
        document = await e.audit.export(run.id, "json", tmp_path / "run.json")
        assert (await e.replayer.replay_export(document)).identical
    tampered = json.loads(document)
    tampered["plan"]["steps"][1]["duration"] = {"days": 4}  # the first wait, a day longer
    (tmp_path / "edited.json").write_text(json.dumps(tampered))
    assert await asyncio.to_thread(main, ["runs", "replay", "--export", str(tmp_path / "run.json")]) == 0
    assert await asyncio.to_thread(main, ["runs", "replay", "--export", str(tmp_path / "edited.json")]) == 1


async def test_the_start_of_a_log_is_read_without_decoding_its_other_inputs(engine: Engine) -> None:
    # what looks a run's plan version up before replaying it: the start input alone, so the
    # others are decoded once, by the replay itself
    entries = list(await engine.audit.get_by_run(await outreach_run(engine)))
    start, _ = inputs_of(entries)
    broken = [entries[0], msgspec.structs.replace(entries[1], input={"kind": "no-such-input"}), *entries[2:]]
    assert start_of(broken) == start
    with pytest.raises(msgspec.ValidationError):
        inputs_of(broken)
    with pytest.raises(AuditChainError, match=r"does not begin with run\.started"):
        start_of(entries[1:])
