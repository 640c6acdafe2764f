"""The kernel's state machine (SPEC sections 4 and 5, DESIGN section 3): paths through a plan,
exit conditions, timers against inputs, tick arithmetic, bookkeeping and purity.

Every kernel call goes through `kernel_helpers.checked_advance`, which also asserts that each
transition is in `ALLOWED`, that the input state is never mutated and that the call is
deterministic.
"""

from __future__ import annotations

import msgspec
import pytest

from dee.kernel.contact import Contact
from dee.kernel.context import StepContext
from dee.kernel.idempotency import idempotency_key, message_id
from dee.kernel.inputs import ChannelResult, ContactChanged, Event, Pause, Resume
from dee.kernel.machine import advance
from dee.kernel.recorded import entered_contexts
from dee.kernel.state import StepResult
from dee.plan import steps, transitions
from dee.plan.model import Condition, Duration, Edge, ExitCondition
from tests.unit.kernel_helpers import (
    DAY,
    HOUR,
    Driver,
    checked_advance,
    compile_plan,
    encoded,
    make_contact,
    outreach_plan,
)


def voicemail(request):
    return {"status": "delivered", "outcome": "voicemail" if request.channel == "voice" else None}


# ---- the outreach plan (SPEC's done-when) ------------------------------------------------------


def test_outreach_opened_never_replied_follows_the_warm_path_to_no_response() -> None:
    d = Driver(outreach_plan())
    d.run(until=0)  # start, send the initial email, start wait-1
    d.feed(Event(2 * HOUR, "open-1", "email.opened", step_id="initial-email"))
    d.run(respond=voicemail)

    assert d.entered() == [
        ("initial-email", 0),
        ("wait-1", 0),
        ("check-email-1", 3 * DAY),
        ("warm-follow-up", 3 * DAY),
        ("wait-2", 3 * DAY),
        ("check-email-2", 5 * DAY),
        ("call-attempt", 5 * DAY),
        ("wait-4", 5 * DAY),
        ("breakup-email", 7 * DAY),
        ("end-no-reply", 7 * DAY),
    ]
    assert (3 * DAY, 5 * DAY, 7 * DAY) == (259_200, 432_000, 604_800)
    assert d.state.status == "completed"
    assert d.state.outcome == "no_response"
    assert d.state.completed_tick == 604_800
    assert d.state.steps_completed == 10
    assert [(r.step_id, r.tick, r.outcome) for r in d.state.results] == [
        ("initial-email", 0, "delivered"),
        ("wait-1", 259_200, "completed"),
        ("check-email-1", 259_200, "branch:warm-follow-up"),
        ("warm-follow-up", 259_200, "delivered"),
        ("wait-2", 432_000, "completed"),
        ("check-email-2", 432_000, "branch:call-attempt"),
        ("call-attempt", 432_000, "voicemail"),
        ("wait-4", 604_800, "completed"),
        ("breakup-email", 604_800, "delivered"),
        ("end-no-reply", 604_800, "no_response"),
    ]
    assert d.actions() == [
        (0, "run.started", None),
        (0, "step.entered", "initial-email"),
        (0, "step.dispatched", "initial-email"),
        (0, "step.executed", "initial-email"),
        (0, "step.entered", "wait-1"),
        (0, "wait.started", "wait-1"),
        (7200, "event.received", "initial-email"),
        (259_200, "wait.completed", "wait-1"),
        (259_200, "step.entered", "check-email-1"),
        (259_200, "step.evaluated", "check-email-1"),
        (259_200, "step.entered", "warm-follow-up"),
        (259_200, "step.dispatched", "warm-follow-up"),
        (259_200, "step.executed", "warm-follow-up"),
        (259_200, "step.entered", "wait-2"),
        (259_200, "wait.started", "wait-2"),
        (432_000, "wait.completed", "wait-2"),
        (432_000, "step.entered", "check-email-2"),
        (432_000, "step.evaluated", "check-email-2"),
        (432_000, "step.entered", "call-attempt"),
        (432_000, "step.dispatched", "call-attempt"),
        (432_000, "step.executed", "call-attempt"),
        (432_000, "step.entered", "wait-4"),
        (432_000, "wait.started", "wait-4"),
        (604_800, "wait.completed", "wait-4"),
        (604_800, "step.entered", "breakup-email"),
        (604_800, "step.dispatched", "breakup-email"),
        (604_800, "step.executed", "breakup-email"),
        (604_800, "step.entered", "end-no-reply"),
        (604_800, "step.executed", "end-no-reply"),
        (604_800, "run.completed", "end-no-reply"),
    ]
    assert d.entries[-1].output == {"outcome": "no_response", "endStep": "end-no-reply"}
    assert [e.output["targetTick"] for e in d.of("wait.started")] == [259_200, 432_000, 604_800]
    d.check_entries()


def test_outreach_reply_before_day_three_completes_by_exit_condition_at_the_reply_tick() -> None:
    d = Driver(outreach_plan())
    d.run(until=0)
    reply_tick = 2 * DAY + 5
    d.feed(Event(reply_tick, "reply-1", "email.replied", step_id="initial-email"))

    assert d.state.status == "completed"
    assert d.state.outcome == "replied"
    assert d.state.completed_tick == reply_tick
    assert d.state.wake_tick is None
    assert d.actions(since=6) == [
        (reply_tick, "event.received", "initial-email"),
        (reply_tick, "run.completed", "wait-1"),
    ]
    assert d.entries[-1].output == {"outcome": "replied", "exitCondition": "events.hasReply(any)"}
    assert d.transitions[-1] == ("waiting", "completed")
    assert [s for s, _ in d.entered()] == ["initial-email", "wait-1"]
    # nothing fires later: the wait's timer was dropped with the run
    later = d.feed(now=10 * DAY)
    assert later.entries == [] and later.effects == []
    d.check_entries()


def test_outreach_reply_matched_by_message_id_only() -> None:
    """An event that names only the engine-assigned Message-ID is tied to the step that sent it."""
    d = Driver(outreach_plan())
    d.run(until=0)
    msg_id = d.dispatches()[0].message_id
    d.feed(Event(DAY, "reply-1", "email.replied", message_id=msg_id))
    assert d.entries[-2].action == "event.received"
    assert d.entries[-2].step_id == "initial-email"
    assert d.entries[-2].output == {"eventType": "email.replied", "stepId": "initial-email"}
    assert d.state.outcome == "replied"


def test_outreach_not_opened_follows_the_cold_path() -> None:
    d = Driver(outreach_plan())
    d.run(respond=voicemail)
    assert d.entered() == [
        ("initial-email", 0),
        ("wait-1", 0),
        ("check-email-1", 3 * DAY),
        ("cold-follow-up", 3 * DAY),
        ("wait-3", 3 * DAY),
        ("call-attempt", 7 * DAY),
        ("wait-4", 7 * DAY),
        ("breakup-email", 9 * DAY),
        ("end-no-reply", 9 * DAY),
    ]
    assert d.result_of("check-email-1").outcome == "branch:cold-follow-up"
    assert d.state.status == "completed"
    assert d.state.outcome == "no_response"
    assert d.state.steps_completed == 9
    d.check_entries()


def test_reply_to_the_warm_follow_up_without_exit_conditions_takes_the_branch() -> None:
    d = Driver(outreach_plan(with_exits=False))
    d.run(until=0)
    d.feed(Event(HOUR, "open-1", "email.opened", step_id="initial-email"))
    d.run(until=3 * DAY)
    d.feed(Event(4 * DAY, "reply-2", "email.replied", step_id="warm-follow-up"))
    assert d.state.status == "waiting"  # no exit condition: the reply is only recorded
    d.run()
    assert [s for s, _ in d.entered()][-2:] == ["check-email-2", "end-replied"]
    assert d.state.outcome == "replied"
    assert d.state.completed_tick == 5 * DAY


# ---- plans without an end step ----------------------------------------------------------------


def test_a_linear_plans_last_step_completes_the_run_with_outcome_completed() -> None:
    plan = compile_plan([
        steps.send_email("hello", "tmpl_intro", "Hi"),
        steps.wait("pause", Duration(hours=1)),
    ])
    d = Driver(plan)
    d.run()
    assert d.state.status == "completed"
    assert d.state.outcome == "completed"
    assert d.state.completed_tick == HOUR
    assert d.entries[-1].action == "run.completed"
    assert d.entries[-1].output == {"outcome": "completed", "lastStep": "pause"}
    assert d.state.steps_completed == 2


def test_a_send_step_with_no_successor_completes_when_delivered() -> None:
    plan = compile_plan([steps.wait("w", Duration(minutes=1)), steps.send_email("last", "tmpl_warm", "Hi")])
    d = Driver(plan, start_tick=10)
    d.feed(now=70)
    assert d.state.status == "waiting"
    assert d.entered() == [("w", 10), ("last", 70)]
    d.deliver(75)
    assert d.state.status == "completed"
    assert d.state.outcome == "completed"
    assert d.state.completed_tick == 75
    assert d.actions(since=-2) == [(75, "step.executed", "last"), (75, "run.completed", "last")]


def test_pending_until_the_start_tick() -> None:
    plan = compile_plan([steps.wait("w", Duration(seconds=5))])
    d = Driver(plan, start_tick=100, accepted_tick=40)
    assert d.state.status == "pending"
    assert d.state.wake_tick == 100
    assert d.entries[0].tick == 40
    quiet = d.feed(now=99)
    assert quiet.entries == [] and d.state.status == "pending"
    d.feed(now=100)
    assert d.entered() == [("w", 100)]
    assert d.state.wake_tick == 105
    assert d.transitions == [("pending", "active"), ("active", "waiting")]


# ---- exit conditions ----------------------------------------------------------------------------


def _exit_plan(exits):
    return compile_plan(
        [
            steps.send_email("first", "tmpl_intro", "Hi"),
            steps.wait("w", Duration(seconds=200)),
            steps.send_email("second", "tmpl_warm", "Again"),
        ],
        exits=exits,
    )


def test_exit_condition_checked_when_an_input_arrives() -> None:
    d = Driver(_exit_plan([ExitCondition('contact.attributes.tier == "gold"', "upgraded")]),
               contact=make_contact(attributes={"company": "Acme", "tier": "bronze"}))
    d.run(until=0)
    assert d.state.status == "waiting"
    d.feed(ContactChanged(50, attributes={"tier": "silver"}))
    assert d.state.status == "waiting"
    d.feed(ContactChanged(60, attributes={"tier": "gold"}))
    assert d.state.status == "completed"
    assert d.state.outcome == "upgraded"
    assert d.state.completed_tick == 60
    assert d.entries[-1].output == {"outcome": "upgraded", "exitCondition": 'contact.attributes.tier == "gold"'}


def test_exit_condition_on_a_missing_attribute_fails_the_run_closed() -> None:
    """Evaluation can fail only on facts of the snapshot; when it does, the run fails (fail-closed)."""
    d = Driver(_exit_plan([ExitCondition('contact.attributes.tier == "gold"', "upgraded")]))
    d.run(until=0)
    assert d.state.status == "failed"
    assert d.entered() == []  # checked before the first step goes on
    assert d.dispatches() == []
    assert d.entries[-1].action == "run.failed"
    assert "contact.attributes.tier" in d.entries[-1].output["error"]


def test_exit_condition_checked_when_a_wait_timer_fires() -> None:
    d = Driver(_exit_plan([ExitCondition("tick >= 150", "too_late")]))
    d.run()
    assert d.state.status == "completed"
    assert d.state.outcome == "too_late"
    assert d.state.completed_tick == 200
    # the run ends when the timer fires, before the wait goes on to `second`
    assert d.actions(since=-1) == [(200, "run.completed", "w")]
    assert [s for s, _ in d.entered()] == ["first", "w"]
    assert len(d.dispatches()) == 1


def test_exit_condition_checked_when_the_start_timer_fires() -> None:
    """An event seen while pending does not touch the run; the start timer does, before step 1."""
    d = Driver(_exit_plan([ExitCondition("events.hasReply(any)", "replied")]), start_tick=100)
    d.feed(Event(20, "r", "email.replied"))
    assert d.state.status == "pending"
    d.feed(now=100)
    assert d.state.status == "completed"
    assert d.state.outcome == "replied"
    assert d.state.completed_tick == 100
    assert d.entered() == []
    assert d.dispatches() == []


def test_unsubscribe_event_meets_the_exit_condition() -> None:
    d = Driver(outreach_plan())
    d.run(until=0)
    d.feed(Event(DAY, "u1", "email.unsubscribed", step_id="initial-email"))
    assert d.state.contact.unsubscribed is True
    assert d.state.status == "completed"
    assert d.state.outcome == "unsubscribed"
    assert d.entries[-1].output == {"outcome": "unsubscribed", "exitCondition": "contact.unsubscribed"}


def test_unsubscribe_without_an_exit_condition_cancels_the_run() -> None:
    d = Driver(outreach_plan(with_exits=False))
    d.run(until=0)
    d.feed(Event(DAY, "u1", "email.unsubscribed", step_id="initial-email"))
    assert d.state.contact.unsubscribed is True
    assert d.state.status == "cancelled"
    assert d.state.outcome is None
    assert d.state.completed_tick == DAY
    assert d.state.wake_tick is None
    assert d.actions(since=-2) == [(DAY, "event.received", "initial-email"), (DAY, "run.cancelled", "wait-1")]
    assert d.entries[-1].output == {"reason": "contact unsubscribed"}
    assert d.transitions[-1] == ("waiting", "cancelled")


def test_unsubscribed_contact_change_cancels_the_run() -> None:
    d = Driver(outreach_plan(with_exits=False))
    d.run(until=0)
    d.feed(ContactChanged(30, unsubscribed=True))
    assert d.state.status == "cancelled"
    assert d.entries[-1].output == {"reason": "contact unsubscribed"}


# ---- timers against inputs ----------------------------------------------------------------------


def _reply_branch_plan():
    return compile_plan(
        [
            steps.send_email("mail", "tmpl_intro", "Hi"),
            steps.wait("w", Duration(seconds=100)),
            steps.branch("check", [Condition('events.hasReply("mail")', "end-replied"),
                                   Condition("default", "end-cold")]),
            steps.end("end-replied", "replied"),
            steps.end("end-cold", "cold"),
        ],
        transitions.explicit([Edge("mail", "w"), Edge("w", "check")]),
    )


def test_a_timer_fires_before_an_input_of_the_same_tick() -> None:
    d = Driver(_reply_branch_plan())
    d.run(until=0)
    start = len(d.entries)
    d.feed(Event(100, "r", "email.replied", step_id="mail"), now=100)
    assert d.actions(since=start) == [
        (100, "wait.completed", "w"),
        (100, "step.entered", "check"),
        (100, "step.evaluated", "check"),
        (100, "step.entered", "end-cold"),
        (100, "step.executed", "end-cold"),
        (100, "run.completed", "end-cold"),
    ]
    assert d.state.outcome == "cold"
    assert len(d.rejected) == 1 and d.rejected[0].reason == "run has ended"


def test_an_input_one_tick_before_the_timer_is_seen_by_the_branch() -> None:
    d = Driver(_reply_branch_plan())
    d.run(until=0)
    d.feed(Event(99, "r", "email.replied", step_id="mail"), now=100)
    assert d.state.outcome == "replied"
    assert d.state.completed_tick == 100


def test_one_call_or_one_call_per_tick_gives_the_same_trace() -> None:
    a = Driver(_reply_branch_plan())
    a.run(until=0)
    a.feed(Event(40, "o", "email.opened", step_id="mail"), Event(100, "r", "email.replied", step_id="mail"),
           now=300)
    b = Driver(_reply_branch_plan())
    b.run(until=0)
    b.feed(Event(40, "o", "email.opened", step_id="mail"))
    b.feed(now=100)
    b.feed(Event(100, "r", "email.replied", step_id="mail"), now=300)
    assert msgspec.json.encode(a.entries) == msgspec.json.encode(b.entries)
    assert encoded(a.state) == encoded(b.state)


def test_a_timer_processed_late_fires_at_its_own_tick() -> None:
    d = Driver(_reply_branch_plan())
    d.run(until=0)
    d.feed(now=160)
    assert [e.tick for e in d.entries if e.action == "wait.completed"] == [100]
    assert d.state.completed_tick == 100
    assert d.state.current_tick == 160


def test_inputs_out_of_tick_order_are_refused() -> None:
    d = Driver(_reply_branch_plan())
    d.run(until=0)
    before = encoded(d.state)
    with pytest.raises(ValueError, match="ordered by tick"):
        advance(d.state, [Event(20, "b", "email.opened"), Event(10, "a", "email.opened")], 30, d.env)
    assert encoded(d.state) == before


def test_an_input_after_now_is_refused() -> None:
    d = Driver(_reply_branch_plan())
    d.run(until=0)
    with pytest.raises(ValueError, match=r"an input at tick 31 is after now \(30\)"):
        advance(d.state, [Event(31, "a", "email.opened")], 30, d.env)


# ---- durations in ticks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "tick_ms", "ticks"),
    [
        (Duration(days=3), 1000, 259_200),
        (Duration(days=3), 60_000, 4_320),
        (Duration(hours=1, minutes=1, seconds=1), 1000, 3_661),
        (Duration(hours=1, minutes=1, seconds=1), 60_000, 62),  # 61.02 minutes, rounded up
        (Duration(seconds=90), 60_000, 2),
        (Duration(minutes=1), 60_000, 1),
        (Duration(seconds=1), 60_000, 1),
        (Duration(seconds=1), 1000, 1),
    ],
)
def test_wait_duration_in_ticks(duration: Duration, tick_ms: int, ticks: int) -> None:
    plan = compile_plan([steps.wait("w", duration), steps.end("e", "done")])
    d = Driver(plan, start_tick=7, tick_interval_ms=tick_ms)
    d.run(until=7)
    assert d.of("wait.started")[0].output == {"targetTick": 7 + ticks}
    assert d.state.wake_tick == 7 + ticks
    d.feed(now=7 + ticks - 1)
    assert d.state.status == "waiting"
    d.feed(now=7 + ticks)
    assert d.state.status == "completed"
    assert d.result_of("w") == StepResult("w", "wait", 7 + ticks, "completed", target_tick=7 + ticks)


# ---- bookkeeping and purity ---------------------------------------------------------------------


def test_steps_completed_counts_every_finished_step() -> None:
    d = Driver(outreach_plan())
    counts = [d.state.steps_completed]
    d.run(until=0)
    counts.append(d.state.steps_completed)  # initial-email delivered (wait-1 running)
    d.run(until=3 * DAY)
    counts.append(d.state.steps_completed)  # + wait-1, check-email-1, cold-follow-up
    d.run(respond=voicemail)
    counts.append(d.state.steps_completed)
    assert counts == [0, 1, 4, 9]
    assert d.state.steps_completed == len(d.state.results)


def test_entry_seq_is_contiguous_across_calls_and_states_seq_follows() -> None:
    d = Driver(outreach_plan())
    d.run(until=0)
    d.feed(Pause(10))
    d.feed(Event(20, "o", "email.opened", step_id="initial-email"))
    d.feed(Resume(30))
    d.run(respond=voicemail)
    d.check_entries()
    assert [s for s, _ in d.entered()][3] == "warm-follow-up"  # the open seen while paused counts
    assert len(d.entries) == 32  # the 30 of the warm path, plus run.paused and run.resumed
    assert d.entries[0].action == "run.started" and d.entries[0].seq == 1


def test_advance_never_mutates_its_input_state() -> None:
    d = Driver(outreach_plan())
    states = [d.state]
    d.run(until=0)
    states.append(d.state)
    d.feed(Event(5, "o", "email.opened", step_id="initial-email"))
    states.append(d.state)
    snapshots = [encoded(s) for s in states]
    # advance every saved state through a busy stretch; none of them may change
    for state in states:
        checked_advance(state, [Event(6, "r", "email.replied", step_id="initial-email")], 8 * DAY, d.env)
        checked_advance(state, [ChannelResult(6, "unknown-key", "delivered")], 6, d.env)
    assert [encoded(s) for s in states] == snapshots


def test_entries_carry_run_and_plan_ids_and_the_step_context() -> None:
    d = Driver(outreach_plan(), run_id="run-xyz", variables={"product": "DEE", "n": 2})
    d.run(until=0)
    assert {e.run_id for e in d.entries} == {"run-xyz"}
    assert {e.plan_id for e in d.entries} == {"sales-outreach-v2"}
    _, context = next(entered_contexts(d.entries))
    assert context["tick"] == 0
    assert context["variables"] == {"product": "DEE", "n": 2}
    assert context["contact"]["id"] == "c1"
    assert d.entries[0].input is not None and d.entries[0].input["runId"] == "run-xyz"


def test_a_step_context_derives_its_key_and_message_id_once() -> None:
    ctx = StepContext("run-1", "p", 1, "email", "send_email", 10, 7, Contact("c1"), {}, (), (), 1, "dee.test", 1000, None, {},
                      lambda _source: None)  # type: ignore[arg-type,return-value]  # fmt: skip
    assert ctx.idempotency_key == idempotency_key("run-1", "email", 7)
    assert ctx.message_id == message_id(ctx.idempotency_key, "dee.test", "run-1")
    assert ctx.idempotency_key is ctx.idempotency_key and ctx.message_id is ctx.message_id  # kept, not derived again
