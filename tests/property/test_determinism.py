"""Property-based tests of the kernel's invariants (SPEC sections 1, 4, 5, 7; DESIGN 3 and 7).

Each test draws random valid plans and random runs of them (see `strategies`), drives them
through `dee.kernel.machine.advance` the way a partition worker would (see `driver`), and checks
one invariant. "Identical" always means byte-identical msgspec encodings of the audit entry
drafts, the effects and the final `RunState`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import msgspec
import pytest
from driver import Recording, all_at_once, drive, drive_steps, encode, feed, one_per_call, split
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from strategies import Scenario, retry_after_failing_at_start, scenario_pairs, scenarios

from dee.kernel.audit import seal, verify_chain
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import AnyInput, Cancel, Pause, Resume, Retry, Start
from dee.kernel.machine import Advance, KernelEnv, advance
from dee.kernel.replay import replay_entries, trace
from dee.kernel.state import TERMINAL_STATUSES, ZERO_CHECKSUM, RunState
from dee.kernel.status import ALLOWED
from dee.plan.model import Plan

SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
# Example counts are tuned so the whole file runs in ~20 s; DEE_PROPERTY_SCALE=20 hunts harder.
SCALE = float(os.environ.get("DEE_PROPERTY_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def has_cycle(plan: Plan) -> bool:
    index = {s.id: i for i, s in enumerate(plan.steps)}
    targets = [(e.from_, e.to) for e in plan.transitions.edges]
    targets += [(s.id, c["goto"]) for s in plan.steps if s.type == "branch" for c in s.params["conditions"]]
    return any(index[b] <= index[a] for a, b in targets)


def describe(scenario: Scenario, rec: Recording) -> None:
    """Hypothesis statistics (`--hypothesis-show-statistics`): what the drawn runs exercised."""
    event(f"plan: {scenario.plan.transitions.mode} transitions")
    if has_cycle(scenario.plan):
        event("plan has a cycle")
    event(f"final status: {rec.final.status}")
    actions = {e.action for e in rec.entries}
    for action in ("run.paused", "run.resumed", "run.retried", "error.retried", "wait.completed", "step.evaluated"):
        if action in actions:
            event(f"has {action}")
    if any(c.result.rejected for c in rec.calls):
        event("has a rejected input")
    if len(rec.calls) > 100:
        event("long run (cycle)")


# ---- 1. determinism ----------------------------------------------------------------------------


@settings(max_examples=examples(120), **SETTINGS)
@given(scenarios())
def test_same_plan_and_inputs_give_byte_identical_runs(scenario: Scenario) -> None:
    """SPEC 1.1: the same plan version, contact, variables and inputs produce the same trace.

    Protects against hidden state in the kernel, the plan compiler or the plugins (caches,
    counters, dict/set ordering, identity-based keys): the second run gets a freshly compiled
    plan and a fresh template store, and must match the first byte for byte, including the
    inputs the world produced in answer to the kernel's dispatches.
    """
    first = drive(scenario, scenario.env())
    second = drive(scenario, scenario.env())
    describe(scenario, first)
    assert encode(second.inputs) == encode(first.inputs)
    assert encode(trace(second.entries)) == encode(trace(first.entries))
    assert second.fingerprint() == first.fingerprint()


# ---- 2. replay and the audit chain -------------------------------------------------------------


@settings(max_examples=examples(100), **SETTINGS)
@given(scenarios())
def test_replay_of_the_sealed_log_is_identical_and_the_chain_verifies(scenario: Scenario) -> None:
    """SPEC 7 and 8: the audit log alone is enough to re-execute a run, and it is a valid chain.

    Protects against inputs that change a run but are not journaled (or journaled at another
    tick than the one they were applied at), and against entries the chain does not cover.
    Replay must find no diff, reach the same state and ask for the same dispatches (same
    idempotency keys), which is what a non-dry-run replay re-issues.
    """
    rec = drive(scenario)
    ids = itertools.count(1)
    sealed = seal(rec.entries, ZERO_CHECKSUM, "2024-01-01T00:00:00Z", lambda: f"entry-{next(ids):06d}")
    starts: list[Start] = []

    def env_for(start: Start) -> KernelEnv:
        starts.append(start)
        return scenario.env()

    result = replay_entries(sealed, env_for)
    assert starts == [scenario.start], "replay must rebuild the start input from run.started"
    assert result.diffs == []
    assert result.identical
    assert result.state is not None
    assert msgspec.structs.replace(result.state, current_tick=0) == msgspec.structs.replace(rec.final, current_tick=0)
    # a recorded replay would re-issue exactly the actions its log shows answered (never a first send)
    answered = {e.input["idempotencyKey"] for e in sealed if e.input is not None and e.input.get("kind") == "result"}
    assert result.dispatches == [e for e in rec.effects if isinstance(e, DispatchRequest) and e.idempotency_key in answered]

    assert [e.seq for e in sealed] == list(range(1, len(sealed) + 1))
    assert [e.tick for e in sealed] == sorted(e.tick for e in sealed), "entries go forward in logical time"
    verification = verify_chain(sealed, head_seq=rec.final.seq, head_checksum=sealed[-1].checksum)
    assert verification.valid, verification.reason


# ---- 3. the status machine ---------------------------------------------------------------------

LIVE = "live"  # active or waiting: moves between the two are not journaled as run.* entries


def coarse(status: str) -> str:
    return LIVE if status in ("active", "waiting") else status


COARSE_ALLOWED = {(coarse(a), coarse(b)) for a, b in ALLOWED if coarse(a) != coarse(b)}
STATUS_OF_ACTION = {
    "run.started": "pending", "run.paused": "paused", "run.resumed": LIVE, "run.retried": LIVE,
    "run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled",
    "step.entered": LIVE, "step.evaluated": LIVE, "step.dispatched": LIVE, "step.executed": LIVE,
    "wait.started": LIVE, "wait.completed": LIVE, "error.retried": LIVE, "error.occurred": LIVE,
}  # fmt: skip
# What a command may do, by status (SPEC 4); everything else must be refused and change nothing.
COMMANDS: dict[type, set[str]] = {
    Pause: {"active", "waiting"},
    Resume: {"paused"},
    Retry: {"failed"},
    Cancel: {"pending", "active", "waiting", "paused", "failed"},
}


def check_transitions(state: RunState, result: Advance) -> None:
    """Every transition is in the SPEC table, and they chain from the old status to the new."""
    status = state.status
    for pair in result.transitions:
        assert pair in ALLOWED, f"transition {pair} is not in SPEC section 4"
        assert pair[0] == status, f"transition {pair} does not start from the run's status {status}"
        status = pair[1]
    assert status == result.state.status, "the state's status is not where the transitions lead"


def check_journal(rec: Recording) -> None:
    """The status sequence read back from the audit log never leaves the SPEC section 4 table:
    nothing happens after a terminal status, a paused or failed run only records events until
    it is resumed, retried or cancelled, and the log ends in the run's final status."""
    status = "pending"
    for entry in rec.entries:
        assert status not in TERMINAL_STATUSES, f"{entry.action} (seq {entry.seq}) after the run became {status}"
        new = STATUS_OF_ACTION.get(entry.action)
        if entry.action == "run.started":
            assert entry.seq == 1
            continue
        if new is None:
            assert entry.action == "event.received", f"unexpected action {entry.action}"
            continue
        if new != status:
            via_live = (status, LIVE) in COARSE_ALLOWED and (LIVE, new) in COARSE_ALLOWED
            assert (status, new) in COARSE_ALLOWED or (status == "pending" and via_live), (
                f"the log moves the run from {status} to {new} at seq {entry.seq} ({entry.action})"
            )
            status = new
    final = coarse(rec.final.status)
    assert status == final or (status == "pending" and final == LIVE), (
        f"the log ends in {status} but the run is {rec.final.status}"
    )


def probe_commands(state: RunState, now: int, env: KernelEnv) -> None:
    """Every command against this state: refused (changing nothing) exactly when SPEC 4 says."""
    baseline = advance(state, [], now, env)
    for command, allowed_from in COMMANDS.items():
        result = advance(state, [command(now)], now, env)
        check_transitions(state, result)
        if state.status in allowed_from:
            assert not result.rejected, f"{command.__name__} refused for a {state.status} run"
        else:
            assert len(result.rejected) == 1, f"{command.__name__} accepted for a {state.status} run"
            same = (encode(result.state), encode(result.entries), encode(result.effects))
            assert same == (encode(baseline.state), encode(baseline.entries), encode(baseline.effects)), (
                f"a refused {command.__name__} changed the {state.status} run"
            )


@settings(max_examples=examples(80), **SETTINGS)
@given(scenarios())
@example(retry_after_failing_at_start())
def test_status_machine_follows_the_spec_table(scenario: Scenario) -> None:
    """SPEC 4: a run only takes the allowed transitions; anything else is refused and changes
    nothing.

    Protects the status machine from three sides: the transitions each advance reports, the
    status sequence an auditor reconstructs from run.* entries, and every command (pause,
    resume, retry, cancel) tried against every state the run passed through, plus the inputs the
    run itself refused (removing them must not change what the call did).
    """
    env = scenario.env()
    rec = drive(scenario, env)
    describe(scenario, rec)
    check_journal(rec)
    for call in rec.calls:
        check_transitions(call.state, call.result)
        if call.result.rejected:
            refused = {id(r.input) for r in call.result.rejected}
            kept = [i for i in call.inputs if id(i) not in refused]
            again = advance(call.state, kept, call.now, env)
            assert encode(again) == encode(msgspec.structs.replace(call.result, rejected=[])), (
                "the refused inputs changed what the call did"
            )
        probe_commands(call.result.state, call.now, env)


# ---- 4. batch composition ----------------------------------------------------------------------


@st.composite
def splits(draw: st.DrawFn, n: int) -> tuple[list[int], list[float]]:
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=n))
    pushes = draw(st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0]), min_size=1, max_size=4))
    return cuts, pushes


@pytest.mark.parametrize("composition", ["one_per_call", "all_at_once", "random_split"])
@settings(max_examples=examples(60), **SETTINGS)
@given(scenario=scenarios(), data=st.data())
def test_batch_composition_does_not_change_the_run(composition: str, scenario: Scenario, data: st.DataObject) -> None:
    """SPEC 5 / DESIGN 3: how inputs are grouped into advance calls never changes a trace.

    The inputs the driver fed (one tick per call, timers in calls of their own) are fed again
    one per call (inputs of the same tick split across calls), all in one call, or cut at random
    points with each call's `now` anywhere up to the next batch's first tick; each ends with an
    advance to the same final tick. This is what makes load, the per-tick cap and crashes
    invisible in a trace: timers fire at their own tick, before inputs of the same tick.
    """
    env = scenario.env()
    rec = drive(scenario, env)
    inputs = rec.inputs
    if composition == "one_per_call":
        batches = one_per_call(inputs)
    elif composition == "all_at_once":
        batches = all_at_once(inputs, scenario.start.tick)
    else:
        cuts, pushes = data.draw(splits(len(inputs)), label="cuts, pushes")
        batches = split(inputs, cuts, pushes)
    event(f"{len(inputs)} inputs" if len(inputs) < 5 else "5+ inputs")
    again = feed(scenario, scenario.env(), batches, rec.final_now)
    assert encode(trace(again.entries)) == encode(trace(rec.entries))
    assert again.fingerprint() == rec.fingerprint()


# ---- 5. purity ---------------------------------------------------------------------------------


def store_content(env: KernelEnv) -> bytes:
    store = env.templates
    return encode({kind: {i: store.get(kind, i) for i in store.ids(kind)} for kind in ("email", "voice", "voicemail")})


@settings(max_examples=examples(80), **SETTINGS)
@given(scenarios())
def test_advance_never_mutates_its_arguments(scenario: Scenario) -> None:
    """DESIGN 1/3: `advance` is a pure function.

    Protects against a kernel or plugin writing into the state it was given (its dicts and
    lists are mutable even though the Structs are frozen), into the inputs or into the shared
    environment (plan params, templates), which would make a retried tick or a replay see
    different data. Each call is made twice on the same arguments and must answer the same,
    and every state the run passed through must still encode as it did when it was created.
    """
    env = scenario.env()
    plan_bytes, params_bytes, store_bytes = encode(env.plan.plan), encode(dict(env.plan.params)), store_content(env)
    snapshots: list[tuple[RunState, bytes]] = []

    def checked_advance(state: RunState, inputs: Sequence[AnyInput], now: int, env: KernelEnv) -> Advance:
        before = encode(state), encode(list(inputs))
        result = advance(state, inputs, now, env)
        assert (encode(state), encode(list(inputs))) == before, "advance mutated its state or inputs"
        assert encode(advance(state, inputs, now, env)) == encode(result), "advance answered differently twice"
        snapshots.append((result.state, encode(result.state)))
        return result

    rec = drive(scenario, env, advance_fn=checked_advance)
    for state, encoded in snapshots:
        assert encode(state) == encoded, "a state was changed after advance returned it"
    assert encode(env.plan.plan) == plan_bytes and encode(dict(env.plan.params)) == params_bytes
    assert store_content(env) == store_bytes
    assert rec.fingerprint() == drive(scenario).fingerprint()


@settings(max_examples=examples(60), **SETTINGS)
@given(pair=scenario_pairs(), schedule=st.lists(st.booleans(), max_size=60))
def test_interleaving_runs_does_not_change_either(pair: tuple[Scenario, Scenario], schedule: list[bool]) -> None:
    """SPEC 1.1 ("whatever the load"): a run's trace does not depend on other runs advanced in
    between with the same environment (one compiled plan, one template store, as in a
    partition worker).

    Protects against state leaking between runs through the shared environment or module-level
    caches: two runs of one plan advanced alternately (in a drawn order) must each match the
    same run advanced alone, start to finish.
    """
    a, b = pair
    alone = [drive(a, a.env()).fingerprint(), drive(b, a.env()).fingerprint()]

    shared = a.env()
    runs = [drive_steps(a, shared), drive_steps(b, shared)]
    done: list[Recording | None] = [None, None]
    order = itertools.chain((int(x) for x in schedule), itertools.cycle([0, 1]))
    while None in done:
        which = next(order)
        if done[which] is not None:
            which = 1 - which
        try:
            next(runs[which])
        except StopIteration as finished:
            done[which] = finished.value
    assert [r.fingerprint() for r in done if r is not None] == alone
