"""Property-based tests of the policy gates: random plans under random `[policy]` sections, for
contacts in random time zones, with random consents, suppressions, caps and facts changing
mid-run (see `policy_strategies`).

The runs must stay deterministic with the gates in them (twice, through replay, in any batch
composition of their inputs), and the gates must be right: every decision journaled in
`policy.evaluated` is recomputed from the documented rules (`policy_oracle`, written without
the gate code) with the facts in force at that point of the run, and what the run did next
must follow it. "Identical" means byte-identical msgspec encodings, as in `test_determinism`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import pytest
import test_determinism as kernel_properties
from driver import Recording, all_at_once, drive, encode, feed, one_per_call, split
from hypothesis import event, given, settings
from hypothesis import strategies as st
from policy_oracle import ALLOW, Ask, Rules, contact_zones, strictest
from policy_strategies import PolicyScenario, policy_scenarios
from test_determinism import SETTINGS, examples, splits

from dee.kernel.audit import EntryDraft, seal
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import AnyInput, PolicyChanged, SendsNoted, input_from_builtins
from dee.kernel.machine import advance, in_kernel_order, settled_tick, start_run
from dee.kernel.policy import Consent, SentMark
from dee.kernel.replay import inputs_of
from dee.kernel.state import ZERO_CHECKSUM

CHANNEL_OF = {"sendEmail": "email", "sendVoice": "voice"}
WINDOW_GATES = {"calling-hours": "calling", "send-window": "sending"}
# what may come between a deferral and the send being asked about again
KEEP_DEFERRAL = {"event.received", "run.paused", "run.resumed"}
FACTS = (PolicyChanged, SendsNoted)


def in_force_from_its_tick(inp: AnyInput) -> bool:
    return isinstance(inp, FACTS) and not inp.after_timers


# ---- the judge -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deferral:
    gates: tuple[str, ...]  # the gates that deferred to `until` (the latest of the deferrals)
    ask: Ask  # the send deferred, as the rules saw it
    until: int


@dataclass
class Judge:
    """Reads a run's journal in order, keeping the facts in force (the start's, each journaled
    `PolicyChanged` and `SendsNoted`, each message the run sent), and checks every gate decision
    and every dispatch against the documented rules."""

    scenario: PolicyScenario
    rules: Rules = field(init=False)
    zones: tuple[str, ...] = field(init=False)
    step_types: dict[str, str] = field(init=False)
    consents: dict[str, Consent] = field(init=False)
    suppressed: frozenset[str] = field(init=False)
    sent: dict[str, SentMark] = field(init=False)  # message id -> its mark (a resend is the same message)
    message: str | None = None  # the message the current step execution sent, if it did
    deferred: tuple[Deferral, int] | None = None  # a deferral waiting for its re-ask, and a resume since
    deferrals: list[Deferral] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        start = self.scenario.start
        self.rules = Rules.of(self.scenario.config, start.plan_id)
        self.step_types = {s.id: s.type for s in self.scenario.plan.steps}
        self.zones = contact_zones(start.contact, self.rules.default_timezone)
        self.consents = dict(start.facts.consents)
        self.suppressed = frozenset(start.facts.suppressed_channels)
        self.sent = {m.message_id: m for m in start.facts.sends}

    def ask(self, step_id: str | None, tick: int) -> Ask:
        assert step_id is not None
        others = tuple(m for m in self.sent.values() if m.message_id != self.message)
        return Ask(CHANNEL_OF[self.step_types[step_id]], tick, self.scenario.tick_interval_ms, self.scenario.start.epoch_ms,
                   self.zones, self.consents, self.suppressed, others)  # fmt: skip

    def walk(self, entries: Sequence[EntryDraft]) -> None:
        for index, entry in enumerate(entries):
            if self.deferred is not None and entry.action != "policy.evaluated":
                if entry.action not in KEEP_DEFERRAL:
                    self.deferred = None
                elif entry.action == "run.resumed":
                    self.deferred = (self.deferred[0], entry.tick)
            kind = (entry.input or {}).get("kind")
            if entry.action == "event.received" and kind in ("policy", "sends"):
                self.fact(input_from_builtins(entry.input or {}))
            elif entry.action == "step.entered":
                self.message = None
            elif entry.action == "policy.evaluated":
                self.decision(entry, entries[index + 1:index + 3])
            elif entry.action == "step.dispatched":
                self.dispatched(entry, entries[index - 1])

    def fact(self, inp: AnyInput) -> None:
        if isinstance(inp, PolicyChanged):  # replaces consents and suppressions; the noted sends stay
            self.consents = dict(inp.facts.consents)
            self.suppressed = frozenset(inp.facts.suppressed_channels)
        elif isinstance(inp, SendsNoted):
            for mark in inp.sends:
                self.sent.setdefault(mark.message_id, mark)

    def decision(self, entry: EntryDraft, after: Sequence[EntryDraft]) -> None:
        ask = self.ask(entry.step_id, entry.tick)
        expected = self.rules.verdicts(ask)
        record = entry.output or {}
        journaled = {g["gate"]: (g["verdict"], g.get("until_tick")) for g in record["gates"]}
        where = f"tick {entry.tick} ({ask.channel}, zones {self.zones}, at {ask.at_ms} ms)"
        assert set(expected) <= set(journaled), f"{where}: gates {sorted(set(expected) - set(journaled))} were not asked"
        for name, said in journaled.items():
            assert said == expected.get(name, ALLOW), f"{where}: gate {name} said {said}, the rules {expected.get(name, ALLOW)}"
        final = strictest(expected.values())
        assert (record["verdict"], record.get("untilTick")) == final, f"{where}: the decision is not the strictest verdict"
        self.seen.update(f"{name}: {v[0]}" for name, v in expected.items() if v[0] != "allow")

        if self.deferred is not None:  # the deferred send asked about again: at its tick, or when resumed
            deferral, resumed = self.deferred
            assert entry.tick == max(deferral.until, resumed), f"{where}: a send deferred to {deferral.until} asked again"
            self.seen["asked again after a deferral"] += 1
        self.deferred = None
        follows = [(e.action, e.step_id, e.tick) for e in after]
        verdict, until = final
        if verdict == "defer":
            assert until is not None
            deferral = Deferral(tuple(n for n, v in expected.items() if v == final), ask, until)
            self.deferrals.append(deferral)
            self.deferred = (deferral, -1)
        elif verdict == "fail":
            assert [a for a, _, _ in follows] == ["error.occurred", "run.failed"], f"{where}: a refusal that fails did not"
        else:
            action = {"allow": "step.dispatched", "skip": "step.skipped", "pause": "run.paused"}[verdict]
            assert follows[:1] == [(action, entry.step_id, entry.tick)], f"{where}: {verdict} was followed by {follows}"

    def dispatched(self, entry: EntryDraft, before: EntryDraft) -> None:
        """A send went out: the gates were asked just before and allowed it, and the rules, with
        the facts in force now, allow it too."""
        out = entry.output or {}
        assert (before.action, before.step_id, before.tick) == ("policy.evaluated", entry.step_id, entry.tick)
        assert (before.output or {})["verdict"] == "allow"
        self.message = out["messageId"]  # not counted against itself (a retry resends it)
        ask = self.ask(entry.step_id, entry.tick)
        assert strictest(self.rules.verdicts(ask).values()) == ALLOW, f"tick {entry.tick}: a {ask.channel} send the rules refuse"
        hours = self.rules.calling if ask.channel == "voice" else self.rules.sending
        if hours is not None:
            assert all(hours.is_open(zone, ask.at_ms) for zone in self.zones), f"tick {entry.tick}: a send outside its window"
        self.sent.setdefault(out["messageId"], SentMark(entry.tick, ask.channel, out["messageId"], entry.plan_id))
        self.seen[f"{ask.channel} sent"] += 1


def judged(scenario: PolicyScenario, rec: Recording) -> Judge:
    judge = Judge(scenario)
    judge.walk(rec.entries)
    for name, count in sorted(judge.seen.items()):
        event(name if count == 1 else f"{name} (several)")
    return judge


# ---- facts and the calls they come in --------------------------------------------------------


def check_facts_in_force_from_their_tick(rec: Recording) -> None:
    """A fact fed in the first call of its tick is in force from that tick: journaled as is,
    ahead of every other entry of its tick in that call (a timer's included); one fed in a later
    call of its tick, after that tick's timers fired, is journaled `afterTimers`. None is lost
    (a run that has ended refuses them)."""
    reached: int | None = None
    asked: set[int] = set()  # ticks at which the gates were asked in earlier calls
    for call in rec.calls:
        facts = [i for i in call.inputs if isinstance(i, FACTS)]
        refused = [r for r in call.result.rejected if isinstance(r.input, FACTS)]
        journaled = [e for e in call.result.entries if (e.input or {}).get("kind") in ("policy", "sends")]
        assert len(journaled) + len(refused) == len(facts), "a fact was neither journaled nor refused"
        assert not refused or call.result.state.terminal, "a fact refused by a run that has not ended"
        for tick in {f.tick for f in facts}:
            late = reached is not None and tick <= reached
            of_tick = [e for e in call.result.entries if e.tick == tick]
            marks = [bool((e.input or {}).get("afterTimers")) for e in journaled if e.tick == tick]
            assert marks == [late] * len(marks), f"facts of tick {tick} (late: {late}) journaled with afterTimers {marks}"
            if not late:
                kinds = [(e.input or {}).get("kind") in ("policy", "sends") for e in of_tick]
                assert kinds == sorted(kinds, reverse=True), f"a fact of tick {tick} came after another entry of its tick"
            elif tick in asked:
                event("a late fact after the gates were asked in its tick")
        reached = call.now if reached is None else max(reached, call.now)
        asked |= {e.tick for e in call.result.entries if e.action == "policy.evaluated"}


# ---- 1. the kernel's own properties, with the gates in ------------------------------------------
# The properties of `test_determinism`, run on scenarios judged by the gates: their bodies (the
# functions hypothesis wraps) are called with a policy scenario, whose `env()` has the gates.


def kernel_property(name: str) -> Callable[[PolicyScenario], None]:
    wrapped: Any = getattr(kernel_properties, name)
    return wrapped.hypothesis.inner_test  # type: ignore[no-any-return]


@settings(max_examples=examples(120), **SETTINGS)
@given(policy_scenarios())
def test_runs_under_policy_are_byte_identical_twice(scenario: PolicyScenario) -> None:
    """The same plan, contact, facts, policy and inputs give the same run: fresh gates, a freshly
    compiled plan and templates, byte for byte, including the world's answers to the dispatches."""
    kernel_property("test_same_plan_and_inputs_give_byte_identical_runs")(scenario)


@settings(max_examples=examples(80), **SETTINGS)
@given(policy_scenarios())
def test_runs_under_policy_follow_the_status_table_and_mutate_nothing(scenario: PolicyScenario) -> None:
    """A refusal that pauses or fails a run, a deferral that makes it wait: still only the
    transitions of the status table; every command is refused exactly where the table says,
    changing nothing, and the inputs a run refused (facts after it ended among them) changed
    nothing either; neither the gates nor the kernel write into the state, the inputs or the
    environment."""
    env = scenario.env()
    for call in drive(scenario, env).calls:
        kernel_properties.check_transitions(call.state, call.result)
        kept = in_kernel_order(call.inputs, settled_tick(call.state))  # what was refused: these, late facts marked
        for refused in call.result.rejected:
            kept.remove(refused.input)
        unrefused = msgspec.structs.replace(call.result, rejected=[])
        assert encode(advance(call.state, kept, call.now, env)) == encode(unrefused), "the refused inputs changed the call"
        kernel_properties.probe_commands(call.result.state, call.now, env)
    kernel_property("test_advance_never_mutates_its_arguments")(scenario)


# ---- 2. replay -------------------------------------------------------------------------------


@settings(max_examples=examples(120), **SETTINGS)
@given(policy_scenarios())
def test_the_sealed_log_replays_every_decision_and_the_chain_verifies(scenario: PolicyScenario) -> None:
    """The audit log alone re-executes the run and its chain verifies (as without gates); more:
    fed through `advance` again, its inputs (the start with its facts and epoch, each fact with
    its afterTimers mark) draft the very same entries, every `policy.evaluated` included, which
    replay's trace does not compare."""
    kernel_property("test_replay_of_the_sealed_log_is_identical_and_the_chain_verifies")(scenario)
    rec = drive(scenario)
    ids = itertools.count(1)
    start, later = inputs_of(seal(rec.entries, ZERO_CHECKSUM, "2024-01-01T00:00:00Z", lambda: f"entry-{next(ids):06d}"))
    first = start_run(start)
    again = advance(first.state, later, max([rec.entries[-1].tick, *(i.tick for i in later)]), scenario.env())
    assert encode([*first.entries, *again.entries]) == encode(rec.entries)


# ---- 3. batch composition --------------------------------------------------------------------


def kernel_inputs(rec: Recording) -> list[AnyInput]:
    """Every input in the order `advance` applied it, a late fact marked as the kernel marked it."""
    return [i for call in rec.calls for i in in_kernel_order(call.inputs, settled_tick(call.state))]


def as_the_kernel_reads(batches: Sequence[tuple[Sequence[AnyInput], int]], start_tick: int) -> list[AnyInput]:
    """The inputs of `batches`, each fact in force from its tick that a batch feeds after an
    earlier call already advanced the run to that tick marked `after_timers`: the timers of its
    tick fired before it came. The run's own start tick is not settled until a call advances it:
    a fact of that tick fed in the start's first call still comes ahead of the start's timer."""
    settled, out = start_tick - 1, []
    for inputs, now in batches:
        out += [msgspec.structs.replace(i, after_timers=True) if in_force_from_its_tick(i) and i.tick <= settled else i
                for i in inputs]  # fmt: skip
        settled = max(settled, now)
    return out


@pytest.mark.parametrize("composition", ["one_per_call", "all_at_once", "random_split"])
@settings(max_examples=examples(80), **SETTINGS)
@given(scenario=policy_scenarios(), data=st.data())
def test_batch_composition_changes_a_run_only_by_the_facts_it_makes_late(
    composition: str, scenario: PolicyScenario, data: st.DataObject
) -> None:
    """How inputs are grouped into `advance` calls changes nothing, but for this: a fact in
    force from its tick that comes in a call after the run was advanced to its tick is applied
    after that tick's timers (and journaled so). Fed in any composition, the run is exactly the
    run of the inputs with those facts marked `after_timers`, all in one call; with none of them
    made late, it is the driver's run byte for byte.

    The inputs are taken as the kernel applied them (facts in force from their tick first within
    it, late ones marked), so that feeding them all in one call is the recorded run.
    """
    rec = drive(scenario)
    inputs = kernel_inputs(rec)
    start = scenario.start.tick
    assert feed(scenario, scenario.env(), all_at_once(inputs, start), rec.final_now).fingerprint() == rec.fingerprint()
    if composition == "one_per_call":
        batches = one_per_call(inputs)
    elif composition == "all_at_once":
        batches = all_at_once(inputs, start)
    else:
        cuts, pushes = data.draw(splits(len(inputs)), label="cuts, pushes")
        batches = split(inputs, cuts, pushes)
    read = as_the_kernel_reads(batches, start)
    again = feed(scenario, scenario.env(), batches, rec.final_now)
    reference = feed(scenario, scenario.env(), all_at_once(read, start), rec.final_now)
    assert again.fingerprint() == reference.fingerprint()
    if encode(read) == encode(inputs):
        assert again.fingerprint() == rec.fingerprint()
    else:
        event("the composition made a fact late")


# ---- 4. the gates against the rules ------------------------------------------------------------


@settings(max_examples=examples(300), **SETTINGS)
@given(policy_scenarios())
def test_no_send_goes_out_that_a_gate_would_refuse(scenario: PolicyScenario) -> None:
    """Every gate decision is what the documented rules say with the facts in force (consents as
    of the tick, channel suppressions, the contact's sends so far, its own and those noted from
    its other runs, local time in its zones from tick and epoch, holidays), and the run does what
    the decision says: a send allowed goes out at once, a refusal is journaled with its gate and
    skips the step, pauses or fails the run, a deferral asks again at its tick. Every dispatch
    was allowed just before it went out and matches a `DispatchRequest` effect."""
    rec = drive(scenario)
    check_facts_in_force_from_their_tick(rec)
    judged(scenario, rec)
    sends = [(e.output or {}) for e in rec.entries if e.action == "step.dispatched"]
    requests = [e for e in rec.effects if isinstance(e, DispatchRequest)]
    assert [(s["idempotencyKey"], s["attempt"]) for s in sends] == [(r.idempotency_key, r.attempt) for r in requests]


@settings(max_examples=examples(250), **SETTINGS)
@given(policy_scenarios())
def test_deferrals_land_inside_the_next_opening(scenario: PolicyScenario) -> None:
    """A send a window held back waits for the window's next opening, in every zone of the
    contact: at the tick it was deferred to, the window is open in local time (and, one tick
    earlier, if that is after the deferral, it was not yet); a send over a cap waits until the
    cap allows one again, counting the same messages (and, one tick earlier, it did not)."""
    rec = drive(scenario)
    judge = judged(scenario, rec)
    for deferral in judge.deferrals:
        ask, until = deferral.ask, deferral.until
        at, earlier = replace(ask, tick=until), replace(ask, tick=until - 1) if until - 1 > ask.tick else None
        for gate in deferral.gates:
            if gate in WINDOW_GATES:
                hours = getattr(judge.rules, WINDOW_GATES[gate])
                assert all(hours.is_open(z, at.at_ms) for z in ask.zones), f"{gate}: deferred from {ask.tick} to {until}, closed then"
                assert earlier is None or not all(hours.is_open(z, earlier.at_ms) for z in ask.zones), f"{gate}: open a tick earlier"
            else:
                assert judge.rules.capped(at) == ALLOW, f"capped from {ask.tick} to {until}, still capped then"
                assert earlier is None or judge.rules.capped(earlier) != ALLOW, f"capped from {ask.tick}: allowed a tick earlier"
            event(f"{gate} deferral checked")
