"""Policy facts and the timers of their tick: in force from their tick when they arrive in time,
after the timers when they arrive late, and replayed (and stepped through) in the order the run
lived them, whatever else shared their `advance` call."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from dee import EngineConfig
from dee.config import PolicyConfig
from dee.kernel.audit import EntryDraft
from dee.kernel.debug import Debugger
from dee.kernel.inputs import AnyInput, ChannelResult, PolicyChanged, Resume, SendsNoted, Start
from dee.kernel.machine import KernelEnv, settled_tick
from dee.kernel.policy import Consent, PolicyFacts, SentMark
from dee.kernel.replay import replay_entries
from dee.kernel.state import RunState
from dee.shell.envs import history_ticks
from tests.unit.kernel_helpers import checked_advance, checked_start, make_contact, outreach_plan, plugins, template_store

REVOKED = PolicyFacts({"email": Consent("revoked", 100)})
START = Start(0, "r1", "sales-outreach-v2", 1, "x", make_contact(timezone="UTC"), {"product": "DEE"}, 100)


def kernel_env() -> KernelEnv:
    gates = tuple(plugins().policy_gates(EngineConfig(policy=PolicyConfig(caps=("email 1/day",), calling_hours=False))).values())
    return KernelEnv(plan=outreach_plan(), templates=template_store(), gates=gates, history_ticks=history_ticks(gates, 1000))


def live(calls: Sequence[tuple[Sequence[AnyInput], int]]) -> tuple[RunState, list[EntryDraft]]:
    """The run started at tick 0 (its first step due at 100), through one `advance` call per item."""
    first = checked_start(START)
    state, entries = first.state, list(first.entries)
    for inputs, now in calls:
        result = checked_advance(state, list(inputs), now, kernel_env())
        state, entries = result.state, entries + result.entries
    return state, entries


def replays_identically(entries: list[EntryDraft]) -> None:
    result = replay_entries(entries, lambda _start: kernel_env())
    assert result.identical, result.diffs


def actions(entries: list[EntryDraft]) -> list[str]:
    return [e.action for e in entries if e.action in ("step.dispatched", "step.skipped", "event.received")]


def test_a_fact_in_time_refuses_the_send_of_its_tick() -> None:
    _, entries = live([([PolicyChanged(100, REVOKED)], 100)])
    assert actions(entries) == ["event.received", "step.skipped"]
    assert entries[1].input is not None and "afterTimers" not in entries[1].input  # in force from its tick: not marked
    replays_identically(entries)


def test_a_fact_at_a_new_runs_own_tick_refuses_its_first_send() -> None:
    # enrolled at tick 100 with its first step due at once; the revocation stamped 100 comes in
    # the run's first call: none of tick 100's timers has fired, so it is still in time
    first = checked_start(msgspec.structs.replace(START, tick=100))
    assert settled_tick(first.state) == 99
    result = checked_advance(first.state, [PolicyChanged(100, REVOKED)], 100, kernel_env())
    entries = [*first.entries, *result.entries]
    assert actions(entries) == ["event.received", "step.skipped"]
    assert entries[1].input is not None and "afterTimers" not in entries[1].input
    assert settled_tick(result.state) == 100  # advanced: a fact of tick 100 from now on is late
    replays_identically(entries)


def test_a_fact_reaching_a_run_after_its_timers_of_that_tick_fired_is_replayed_after_them() -> None:
    # the send of tick 100 went; the revocation stamped 100 arrived in a later call of the same tick
    state, entries = live([([], 100), ([PolicyChanged(100, REVOKED)], 100)])
    assert actions(entries) == ["step.dispatched", "event.received"]
    [fact] = [e for e in entries if e.action == "event.received"]
    assert fact.tick == 100 and fact.input is not None and fact.input["afterTimers"] is True
    assert state.facts.consents == REVOKED.consents
    replays_identically(entries)  # before `after_timers`, replay refused the send that had gone out


def test_a_late_send_of_another_run_is_noted_after_the_send_it_did_not_hold() -> None:
    other = SentMark(100, "email", "m-other-run", "welcome-sequence")
    state, entries = live([([], 100), ([SendsNoted(100, (other,))], 100)])
    [sent] = [e for e in entries if e.action == "step.dispatched"]
    assert sent.output is not None and other in state.facts.sends
    state, more = live([([], 100), ([SendsNoted(100, (other,))], 100),
                        ([ChannelResult(101, sent.output["idempotencyKey"], "delivered")], 101)])  # fmt: skip
    assert actions(more) == ["step.dispatched", "event.received"]
    assert [e.step_id for e in more if e.output and "result" in e.output] == [sent.step_id]  # the send's result
    replays_identically(more)  # the step's result is compared: replayed, the send must not be held by the cap


def test_a_refused_command_ahead_of_a_fact_does_not_let_the_timer_jump_the_fact() -> None:
    # `resume` of a run that is not paused is refused and journals nothing; the fact behind it
    # still comes before the timer of its tick, as replay (which never sees the command) has it
    _state, entries = live([([Resume(100), PolicyChanged(100, REVOKED)], 100)])
    assert actions(entries) == ["event.received", "step.skipped"]
    replays_identically(entries)


async def test_the_debugger_steps_facts_before_the_timer_of_their_tick_and_late_facts_after() -> None:
    first = SentMark(100, "email", "m-a", "welcome-sequence")
    second = SentMark(100, "voice", "m-b", "welcome-sequence")
    _, entries = live([([SendsNoted(100, (first,)), SendsNoted(100, (second,))], 100), ([PolicyChanged(100, REVOKED)], 100)])
    debugger = Debugger(entries, lambda _start: kernel_env())
    moves = []
    while (move := debugger.peek()) is not None:
        moves.append((move.kind, [e.action for e in await debugger.step_forward()]))
    assert moves[0] == ("input", ["event.received", "event.received"])  # both facts of tick 100, together
    assert moves[1] == ("timer", ["step.entered", "policy.evaluated"])  # deferred: the other run's email is today's one
    assert moves[2] == ("input", ["event.received"])  # the late revocation, after the timer
    assert [(e.action, e.output) for e in debugger.entries] == [(e.action, e.output) for e in entries]
