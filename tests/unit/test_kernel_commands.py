"""Run commands in the kernel (SPEC section 4): pause, resume, cancel and retry from every status.

Allowed commands move the run and journal one entry; refused ones land in `Advance.rejected` and
change nothing. `kernel_helpers.checked_advance` asserts for every call that each transition is in
`ALLOWED` and chains from the old status to the new one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dee.errors import InvalidTransitionError
from dee.kernel.inputs import AnyInput, Cancel, ChannelResult, Event, Pause, Resume, Retry, Suppressed
from dee.kernel.machine import KernelEnv, Rejection
from dee.kernel.state import StepResult
from dee.kernel.status import ALLOWED
from dee.plan import steps
from dee.plan.model import Duration
from tests.unit.kernel_helpers import (
    Driver,
    checked_advance,
    compile_plan,
    encoded,
    outreach_plan,
    spec_key,
    template_store,
)


def _plan():
    return compile_plan([
        steps.send_email("mail", "tmpl_intro", "Hi {{ product }}"),
        steps.wait("w", Duration(seconds=100)),
        steps.send_email("again", "tmpl_warm", "Again"),
        steps.end("done", "finished"),
    ])


# ---- one run in each status --------------------------------------------------------------------


def pending() -> Driver:
    d = Driver(_plan(), start_tick=100, accepted_tick=0)
    assert d.state.status == "pending"
    return d


def waiting() -> Driver:
    d = Driver(_plan())
    d.feed(now=0)
    assert d.state.status == "waiting"
    return d


def paused() -> Driver:
    d = waiting()
    d.feed(Pause(5))
    assert d.state.status == "paused"
    return d


def failed() -> Driver:
    d = waiting()
    d.fail_next(3, "permanent", "554 rejected")
    assert d.state.status == "failed"
    return d


def completed() -> Driver:
    d = Driver(_plan())
    d.run()
    assert d.state.status == "completed"
    return d


def cancelled() -> Driver:
    d = waiting()
    d.feed(Cancel(5, reason="test"))
    assert d.state.status == "cancelled"
    return d


STATUSES: dict[str, Callable[[], Driver]] = {
    "pending": pending, "waiting": waiting, "paused": paused,
    "failed": failed, "completed": completed, "cancelled": cancelled,
}
COMMANDS: dict[str, Callable[[int], AnyInput]] = {
    "pause": lambda t: Pause(t, command_id="cmd"),
    "resume": lambda t: Resume(t, command_id="cmd"),
    "cancel": lambda t: Cancel(t, reason="operator request", command_id="cmd"),
    "retry": lambda t: Retry(t, command_id="cmd"),
}
TARGET = {"pause": "paused", "resume": "active", "cancel": "cancelled", "retry": "active"}

# (status, command) -> (status after, entry actions, transitions)
ALLOWED_COMMANDS: dict[tuple[str, str], tuple[str, list[str], list[tuple[str, str]]]] = {
    ("pending", "cancel"): ("cancelled", ["run.cancelled"], [("pending", "cancelled")]),
    ("waiting", "pause"): ("paused", ["run.paused"], [("waiting", "paused")]),
    ("waiting", "cancel"): ("cancelled", ["run.cancelled"], [("waiting", "cancelled")]),
    ("paused", "resume"): ("waiting", ["run.resumed"], [("paused", "active"), ("active", "waiting")]),
    ("paused", "cancel"): ("cancelled", ["run.cancelled"], [("paused", "cancelled")]),
    ("failed", "cancel"): ("cancelled", ["run.cancelled"], [("failed", "cancelled")]),
    ("failed", "retry"): ("waiting", ["run.retried", "step.entered", "step.dispatched"],
                          [("failed", "active"), ("active", "waiting")]),
}
MATRIX = [(s, c) for s in STATUSES for c in COMMANDS]
REFUSED = [pair for pair in MATRIX if pair not in ALLOWED_COMMANDS]


def test_the_matrix_covers_every_status_and_command() -> None:
    assert len(MATRIX) == 24
    assert len(REFUSED) == 17
    for (status, command), (_, _, moves) in ALLOWED_COMMANDS.items():
        assert (status, TARGET[command]) in ALLOWED
        assert all(move in ALLOWED for move in moves)


@pytest.mark.parametrize(("status", "command"), list(ALLOWED_COMMANDS))
def test_allowed_command(status: str, command: str) -> None:
    d = STATUSES[status]()
    tick = d.state.current_tick
    result = d.feed(COMMANDS[command](tick))
    after, actions, moves = ALLOWED_COMMANDS[(status, command)]
    assert result.rejected == []
    assert d.state.status == after
    assert [e.action for e in result.entries] == actions
    assert all(e.tick == tick for e in result.entries)
    assert result.transitions == moves
    journal = result.entries[0]
    assert journal.input is not None and journal.input["commandId"] == "cmd"
    if command == "cancel":
        assert journal.output == {"reason": "operator request"}
        assert d.state.completed_tick == tick
        assert d.state.wake_tick is None and d.state.dispatch is None
    if command == "retry":
        assert journal.output == {"attempt": 2}
        assert d.state.run_attempt == 2


@pytest.mark.parametrize(("status", "command"), REFUSED)
def test_refused_command_changes_nothing(status: str, command: str) -> None:
    d = STATUSES[status]()
    state = d.state
    inp = COMMANDS[command](state.current_tick)
    result = checked_advance(state, [inp], state.current_tick, d.env)
    assert encoded(result.state) == encoded(checked_advance(state, [], state.current_tick, d.env).state)  # as if never sent
    assert result.entries == [] and result.effects == [] and result.transitions == []
    assert len(result.rejected) == 1
    rejection = result.rejected[0]
    assert rejection.input == inp
    assert rejection.from_status == status
    assert rejection.reason


@pytest.mark.parametrize(("status", "command"), REFUSED)
def test_refusal_names_the_transition_it_refused(status: str, command: str) -> None:
    """`Rejection.error(run_id)` is the `InvalidTransitionError` the engine raises: it must name the
    status the command asked for (SPEC 4: "anything else is refused with InvalidTransitionError")."""
    d = STATUSES[status]()
    result = checked_advance(d.state, [COMMANDS[command](d.state.current_tick)], d.state.current_tick, d.env)
    rejection = result.rejected[0]
    assert (rejection.from_status, rejection.to_status) == (status, TARGET[command])
    error = rejection.error("run-1")
    assert isinstance(error, InvalidTransitionError)
    assert (error.run_id, error.from_status, error.to_status) == ("run-1", status, TARGET[command])
    assert f"cannot go from {status} to {TARGET[command]}" in str(error)


def test_rejection_error_carries_the_reason() -> None:
    d = pending()
    result = d.feed(Pause(0))
    error = result.rejected[0].error("run-1")
    assert isinstance(error, InvalidTransitionError)
    assert str(error) == "run run-1: cannot go from pending to paused: only an active or waiting run can be paused"
    assert isinstance(result.rejected[0], Rejection)


def test_a_refused_command_between_allowed_ones_is_skipped() -> None:
    d = waiting()
    result = d.feed(Pause(1), Pause(2), Resume(3))
    assert [e.action for e in result.entries] == ["run.paused", "run.resumed"]
    assert len(result.rejected) == 1 and result.rejected[0].input == Pause(2)
    assert d.state.status == "waiting"


def test_suppression_cancels_with_its_reason() -> None:
    d = waiting()
    d.feed(Suppressed(9, "global", "complaint", source="support"))
    assert d.state.status == "cancelled"
    assert d.entries[-1].action == "run.cancelled"
    assert d.entries[-1].output == {"reason": "suppressed (global): complaint"}


def test_a_result_for_a_cancelled_run_is_refused() -> None:
    d = waiting()
    key = d.outstanding[0].idempotency_key
    d.feed(Cancel(5, reason="stop"))
    state = d.state
    result = d.feed(ChannelResult(6, key, "delivered"))
    assert result.entries == [] and result.rejected[0].reason == "run has ended"
    assert d.state.status == "cancelled" and d.state.results == state.results


# ---- pause and timers ---------------------------------------------------------------------------


def _waiting_on_timer() -> Driver:
    d = waiting()
    d.deliver(0)
    assert d.state.timer == "wait" and d.state.wake_tick == 100
    return d


def test_paused_timer_keeps_its_target_tick() -> None:
    d = _waiting_on_timer()
    d.feed(Pause(10))
    assert d.state.wake_tick == 100
    d.feed(Resume(50))
    assert d.state.status == "waiting"
    assert d.state.wake_tick == 100
    d.feed(now=99)
    assert d.of("wait.completed") == []
    d.feed(now=100)
    assert [e.tick for e in d.of("wait.completed")] == [100]
    assert d.result_of("w") == StepResult("w", "wait", 100, "completed", target_tick=100)


def test_a_paused_run_never_wakes() -> None:
    d = _waiting_on_timer()
    d.feed(Pause(10))
    quiet = d.feed(now=10_000)
    assert quiet.entries == [] and quiet.effects == []
    assert d.state.status == "paused"
    assert d.state.wake_tick == 100
    assert d.state.due(10_000) is False


def test_a_timer_already_past_fires_at_the_resume_tick() -> None:
    d = _waiting_on_timer()
    d.feed(Pause(10))
    d.feed(now=200)
    start = len(d.entries)
    d.feed(Resume(250))
    assert d.actions(since=start)[:4] == [
        (250, "run.resumed", "w"),
        (250, "wait.completed", "w"),
        (250, "step.entered", "again"),
        (250, "step.dispatched", "again"),
    ]
    assert d.result_of("w") == StepResult("w", "wait", 250, "completed", target_tick=100)
    assert d.outstanding[0].idempotency_key == spec_key("run-1", "again", 250)


def test_pause_and_resume_in_one_call_after_the_timer_tick() -> None:
    d = _waiting_on_timer()
    d.feed(Pause(10), Resume(300), now=300)
    assert [e.tick for e in d.of("wait.completed")] == [300]


def test_a_channel_result_while_paused_is_held_and_applied_at_resume() -> None:
    d = waiting()
    key = d.outstanding[0].idempotency_key
    d.feed(Pause(1))
    held = d.feed(ChannelResult(2, key, "delivered"))
    assert [(e.action, e.output) for e in held.entries] == [("event.received", {"held": "run is paused"})]
    assert held.entries[0].input is not None and held.entries[0].input["idempotencyKey"] == key
    assert d.state.status == "paused"
    assert d.state.held == (ChannelResult(2, key, "delivered"),)
    assert d.state.results == ()

    start = len(d.entries)
    d.feed(Resume(7))
    assert d.actions(since=start) == [
        (7, "run.resumed", "mail"),
        (7, "step.executed", "mail"),
        (7, "step.entered", "w"),
        (7, "wait.started", "w"),
    ]
    assert d.state.held == ()
    assert d.state.dispatch is None
    assert d.result_of("mail").outcome == "delivered"
    assert d.state.wake_tick == 107


def test_a_failure_held_while_paused_schedules_its_retry_from_the_resume_tick() -> None:
    d = waiting()
    key = d.outstanding[0].idempotency_key
    d.feed(Pause(1))
    d.feed(ChannelResult(2, key, "failed", error_kind="transient", error="reset"))
    assert d.of("error.retried") == []
    d.feed(Resume(10))
    assert d.of("error.retried")[0].tick == 10
    assert d.state.wake_tick == 40


def test_an_event_while_paused_is_visible_after_resume() -> None:
    d = Driver(outreach_plan())
    d.run(until=0)
    d.feed(Pause(100))
    d.feed(Event(200, "r", "email.replied", step_id="initial-email"))
    assert d.state.status == "paused"  # a paused run goes nowhere, not even to its end
    d.feed(Resume(300))
    assert (d.state.status, d.state.outcome, d.state.completed_tick) == ("completed", "replied", 300)


def test_an_unsubscribe_stops_a_paused_run_at_once() -> None:
    # a paused run would otherwise resume into a send
    d = Driver(outreach_plan())
    d.run(until=0)
    d.feed(Pause(100))
    d.feed(Event(200, "u", "email.unsubscribed", step_id="initial-email"))
    assert (d.state.status, d.state.completed_tick, d.state.contact.unsubscribed) == ("cancelled", 200, True)
    assert d.actions()[-1] == (200, "run.cancelled", "wait-1")


# ---- retry_run ----------------------------------------------------------------------------------


def test_retry_reenters_the_failed_step_at_the_retry_tick_with_a_new_key() -> None:
    d = failed()
    old = d.dispatches()[0]
    start = len(d.entries)
    d.feed(Retry(100))
    assert d.actions(since=start) == [
        (100, "run.retried", "mail"),
        (100, "step.entered", "mail"),
        (100, "step.dispatched", "mail"),
    ]
    new = d.outstanding[0]
    assert new.idempotency_key != old.idempotency_key
    assert new.message_id != old.message_id
    assert new.tick == 100
    assert new.attempt == 1
    # SPEC 6: the key is sha256(run_id|step_id|tick) of the tick this execution began at
    assert new.idempotency_key == spec_key("run-1", "mail", 100)
    d.deliver(101)
    assert d.state.status == "waiting"
    assert [(r.step_id, r.tick, r.outcome) for r in d.state.results] == [
        ("mail", 0, "failed"), ("mail", 100, "delivered")]


def test_steps_after_a_retry_keep_the_spec_idempotency_key() -> None:
    d = failed()
    d.feed(Retry(100))
    d.deliver(100)
    d.feed(now=200)
    again = d.outstanding[0]
    assert again.step_id == "again"
    assert again.idempotency_key == spec_key("run-1", "again", 200)


def test_retry_after_fixing_the_template_sends() -> None:
    plan = compile_plan([steps.send_email("mail", "tmpl_broken", "Hi"), steps.end("done", "sent")])
    d = Driver(plan)
    d.feed(now=0)
    assert d.state.status == "failed"
    fixed = template_store(tmpl_broken={"text": "Hi {{ contact.first_name }}"})
    d.env = KernelEnv(plan, fixed)
    d.feed(Retry(50))
    assert d.state.status == "waiting"
    assert d.outstanding[0].message["text"] == "Hi Ada"
    d.deliver(51)
    assert d.state.outcome == "sent"


def test_retry_of_a_step_that_still_fails_fails_again() -> None:
    plan = compile_plan([steps.send_email("mail", "tmpl_broken", "Hi")])
    d = Driver(plan)
    d.feed(now=0)
    d.feed(Retry(10))
    assert d.state.status == "failed"
    assert [e.action for e in d.entries[-4:]] == ["run.retried", "step.entered", "error.occurred", "run.failed"]
    d.feed(Retry(20))
    assert d.state.run_attempt == 3
    assert d.of("run.retried")[-1].output == {"attempt": 3}
