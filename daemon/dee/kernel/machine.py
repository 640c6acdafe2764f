"""`advance()`: the pure function from a run's state and its inputs to the next state.

Given the same state, inputs (each with its tick) and environment, `advance` returns the same
state, audit entry drafts and effects: it reads no clock, does no I/O and draws no randomness.
Within one call, timers and inputs are taken in logical-time order, a timer before an input of
the same tick (except policy facts, in force from their tick: `FACT_INPUTS`, `in_kernel_order`);
so feeding inputs one call at a time or all at once gives the same trace.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import msgspec

from dee.errors import InvalidTransitionError
from dee.kernel.audit import EntryDraft
from dee.kernel.contact import Contact
from dee.kernel.context import StepContext, condition_snapshot
from dee.kernel.effects import ContactFlagged, DispatchRequest, Effect
from dee.kernel.idempotency import message_id
from dee.kernel.inputs import (
    AnyInput,
    Cancel,
    ChannelResult,
    ContactChanged,
    Event,
    Pause,
    PolicyChanged,
    ReplayRecorded,
    Resume,
    Retry,
    SendsNoted,
    Start,
    Suppressed,
)  # fmt: skip
from dee.kernel.outcomes import Done, Fail, Finish, Send, Sleep, StepOutcome
from dee.kernel.policy import GateRequest, PolicyGate, SentMark, decide
from dee.kernel.retry import RetryPolicy, next_retry
from dee.kernel.state import ContextMark, PendingDispatch, RunState, StepResult
from dee.kernel.status import ALLOWED, check_transition
from dee.plan.compiled import CompiledPlan
from dee.plan.conditions import VisibleEvent

# The status each command asks for (named in the refusal when it is not allowed).
COMMAND_TARGETS: dict[type, str] = {Pause: "paused", Resume: "active", Cancel: "cancelled", Retry: "active"}

# Inputs that change what the gates know rather than what the run does: applied before a timer
# of the same tick, so a consent revoked at tick T refuses a send due at T (unless the fact came
# too late for that: see `in_kernel_order`).
FACT_INPUTS = (PolicyChanged, SendsNoted)


def is_early_fact(inp: AnyInput) -> bool:
    """A policy fact that takes effect ahead of the timers of its tick."""
    return isinstance(inp, FACT_INPUTS) and not inp.after_timers


def settled_tick(state: RunState) -> int:
    """The last tick whose timers and inputs `advance` has applied to the run: its current tick,
    or the one before for a run only just started (its start tick's timers have not fired)."""
    return state.current_tick - 1 if state.unadvanced else state.current_tick


def in_kernel_order(inputs: Sequence[AnyInput], settled: int) -> list[AnyInput]:
    """`inputs` (ordered by tick) in the order `advance` applies them, for a run already advanced
    to tick `settled`.

    A fact stamped at or before `settled` comes too late to precede the timers of its tick (they
    fired in an earlier call): it is marked `after_timers`, which is journaled with it, so replay,
    feeding every input in one call, applies it after those timers too. The other facts go first
    within their tick, ahead of commands and events of the same tick: a refused command writes no
    journal entry, so an order in which it came between a fact and a timer could not be replayed.
    """
    marked = [
        msgspec.structs.replace(i, after_timers=True) if is_early_fact(i) and i.tick <= settled else i
        for i in inputs
    ]
    return sorted(marked, key=lambda i: (i.tick, not is_early_fact(i)))  # stable: arrival order otherwise

# Event types that change contact-level flags, and the flag they set.
CONTACT_FLAG_EVENTS = {"email.unsubscribed": "unsubscribed"}


def contact_flag(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The contact-level flag an event sets: `unsubscribed` by an unsubscribe, `bounced` by a
    hard bounce (`email.bounced` with `data.kind = "hard"`); None for any other event."""
    if event_type == "email.bounced":
        return "bounced" if data.get("kind") == "hard" else None
    return CONTACT_FLAG_EVENTS.get(event_type)


@dataclass(frozen=True, slots=True)
class KernelEnv:
    """Everything besides state and inputs that a run's behaviour depends on.

    All of it is configuration or content (plan version, templates, settings), never live data:
    replay builds the same env from the run's plan version and the current templates.
    """

    plan: CompiledPlan
    templates: Any
    tick_interval_ms: int = 1000
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    message_domain: str = "dee.local"
    gates: tuple[PolicyGate, ...] = ()  # asked before every send, in this order
    history_ticks: int = 0  # how far back the gates read a contact's sends (0: none is kept)


class _Sent(TypedDict):
    """What a step result records of the dispatch a channel result answers."""

    idempotency_key: str
    content_hash: str
    policy_verdict: str | None


class Rejection(msgspec.Struct, frozen=True):
    """A command refused because SPEC section 4 does not allow it; it changed nothing."""

    input: AnyInput
    from_status: str
    to_status: str
    reason: str

    def error(self, run_id: str) -> InvalidTransitionError:
        return InvalidTransitionError(run_id, self.from_status, self.to_status, self.reason)


class Advance(msgspec.Struct, frozen=True):
    state: RunState
    entries: list[EntryDraft]
    effects: list[Effect]
    rejected: list[Rejection]
    transitions: list[tuple[str, str]]


def start_run(start: Start) -> Advance:
    """A new run: `pending` until its start tick, with `run.started` journaling the start input."""
    state = RunState(
        run_id=start.run_id, plan_id=start.plan_id, plan_version=start.plan_version,
        contact=start.contact, variables=dict(start.variables), status="pending",
        start_tick=start.start_tick, current_tick=start.tick, wake_tick=start.start_tick, timer="start", facts=start.facts,
        epoch_ms=start.epoch_ms, recorded=ContextMark(contact=True), unadvanced=True,
    )  # fmt: skip
    run = _Run(state, None)
    run.entry("run.started", None, start.tick, input=msgspec.to_builtins(start),
              output={"status": "pending", "planChecksum": start.plan_checksum})  # fmt: skip
    return run.finish()


def advance(state: RunState, inputs: Sequence[AnyInput], now: int, env: KernelEnv) -> Advance:
    """Apply `inputs` (ordered by tick, then arrival) and every timer due up to tick `now`."""
    run = _Run(state, env)
    for a, b in itertools.pairwise(inputs):
        if b.tick < a.tick:
            raise ValueError("inputs must be ordered by tick")
    if inputs and inputs[-1].tick > now:
        raise ValueError(f"an input at tick {inputs[-1].tick} is after now ({now})")
    pending = in_kernel_order(inputs, settled_tick(state))
    index = 0
    while True:
        wake = run.s.wake_tick
        due = wake if wake is not None and run.s.status != "paused" and wake <= now else None  # the timer's tick, if due
        if due is not None and (index == len(pending) or due < pending[index].tick or (
            due == pending[index].tick and not is_early_fact(pending[index]))):  # fmt: skip
            run.fire_timer(max(due, run.cursor))
        elif index < len(pending):
            run.apply(pending[index])
            index += 1
        else:
            break
    run.s = msgspec.structs.replace(run.s, current_tick=max(run.s.current_tick, now), unadvanced=False)
    return run.finish()


def quarantine(state: RunState, error: str, tick: int) -> Advance:
    """What the shell records when `advance` itself raised (a kernel or plugin bug): the error
    is journaled and the run is stopped (`failed` where SPEC 4 allows it, its timer cleared
    otherwise), so one broken run can never stall its partition. Its inputs are consumed."""
    run = _Run(state, None)
    run.cursor = max(run.cursor, tick)
    run.entry("error.occurred", state.current_step, tick, output={"error": f"kernel: {error}"})
    run.set(wake_tick=None, timer=None, dispatch=None)
    if (state.status, "failed") in ALLOWED:
        run.move("failed", tick)
        run.entry("run.failed", state.current_step, tick, output={"error": f"kernel: {error}"})
    return run.finish()


class _Run:
    """The mutable working copy of one `advance` call; nothing of it outlives the call."""

    plan: CompiledPlan

    def __init__(self, state: RunState, env: KernelEnv | None) -> None:
        self.s = state
        self.env = env
        if env is not None:  # `start_run` and `quarantine` work without one (and need none)
            self.plan = env.plan
        self.first_seq = state.seq  # entries are numbered from here; `finish` writes the last seq back
        self.cursor = state.current_tick
        self.entries: list[EntryDraft] = []
        self.effects: list[Effect] = []
        self.rejected: list[Rejection] = []
        self.transitions: list[tuple[str, str]] = []

    # ---- bookkeeping -------------------------------------------------------------------
    def finish(self) -> Advance:
        if self.entries:
            self.s = msgspec.structs.replace(self.s, seq=self.first_seq + len(self.entries))
        return Advance(self.s, self.entries, self.effects, self.rejected, self.transitions)

    def set(self, **changes: Any) -> None:
        self.s = msgspec.structs.replace(self.s, **changes)

    def entry(self, action: str, step_id: str | None, tick: int, **fields: Any) -> None:
        seq = self.first_seq + len(self.entries) + 1
        self.entries.append(EntryDraft(self.s.run_id, seq, self.s.plan_id, step_id, tick, action, **fields))

    def move(self, to: str, tick: int) -> None:
        check_transition(self.s.run_id, self.s.status, to)
        self.transitions.append((self.s.status, to))
        self.set(status=to, current_tick=max(self.s.current_tick, tick))

    @property
    def kernel_env(self) -> KernelEnv:
        """The environment; only `start_run` and `quarantine` work without one (and need none)."""
        assert self.env is not None
        return self.env

    # ---- timers ------------------------------------------------------------------------
    def fire_timer(self, at: int) -> None:
        self.cursor = at
        kind = self.s.timer
        self.set(wake_tick=None, timer=None)
        if kind == "start":
            self.move("active", at)
            if not self.touch(at):
                self.enter(self.plan.plan.first_step, at)
        elif kind == "wait":
            self.move("active", at)
            if self.touch(at):
                return
            step_id = self.s.current_step
            assert step_id is not None
            self.set(channel_wait=None)
            self.outcome(step_id, self.call(step_id, at, "on_timer"), at, timer=True)
        elif kind in ("retry", "policy"):  # a resend after a failure, or a send a gate held back
            self.move("active", at)
            if not self.touch(at):
                self.redispatch(at)

    # ---- inputs ------------------------------------------------------------------------
    def apply(self, inp: AnyInput) -> None:
        at = max(inp.tick, self.cursor)
        self.cursor = at
        status = self.s.status
        if isinstance(inp, ReplayRecorded):
            self.entry("replay.recorded", None, at, input=_b(inp), output={
                "identical": inp.identical, "diffs": len(inp.fields), "fields": inp.fields, "reissued": inp.reissued})  # fmt: skip
        elif self.s.terminal:
            self.reject(inp, "run has ended", to=COMMAND_TARGETS.get(type(inp), "-"))
        elif isinstance(inp, Pause):
            if status not in ("active", "waiting"):
                return self.reject(inp, "only an active or waiting run can be paused", to="paused")
            self.set(paused_from=status)
            self.move("paused", at)
            self.entry("run.paused", self.s.current_step, at, input=_b(inp))
        elif isinstance(inp, Resume):
            if status != "paused":
                return self.reject(inp, "only a paused run can be resumed", to="active")
            self.resume(inp, at)
        elif isinstance(inp, Cancel | Suppressed):
            reason = inp.reason if isinstance(inp, Cancel) else f"suppressed ({inp.level}): {inp.reason}"
            self.cancel(at, reason, _b(inp))
        elif isinstance(inp, Retry):
            if status != "failed":
                return self.reject(inp, "only a failed run can be retried", to="active")
            self.retry(inp, at)
        elif isinstance(inp, Event | ContactChanged):
            self.observe(inp, at)
        elif isinstance(inp, PolicyChanged):  # the gates see it at the next send
            self.set(facts=msgspec.structs.replace(inp.facts, sends=self.s.facts.sends))
            self.entry("event.received", None, at, input=_b(inp), output={"policyChanged": True})
        elif isinstance(inp, SendsNoted):
            self.note(inp.sends, at)
            self.entry("event.received", None, at, input=_b(inp), output={"sendsNoted": len(inp.sends)})
        elif isinstance(inp, ChannelResult):
            self.result(inp, at)

    def reject(self, inp: AnyInput, reason: str, to: str = "-") -> None:
        self.rejected.append(Rejection(inp, self.s.status, to, reason))

    def observe(self, inp: Event | ContactChanged, at: int) -> None:
        """Record an event; it becomes visible to conditions; contact flags follow it."""
        contact = self.s.contact
        if isinstance(inp, Event):
            step_id = inp.step_id or self.step_of_message(inp.message_id)
            self.set(events=(*self.s.events, VisibleEvent(inp.type, step_id, at)))
            flag = contact_flag(inp.type, inp.data)
            if flag:
                contact = msgspec.structs.replace(contact, **{flag: True})
            self.entry("event.received", step_id, at, input=_b(inp), output={"eventType": inp.type, "stepId": step_id})
        else:
            changes = {k: getattr(inp, k) for k in ("unsubscribed", "bounced", "attributes") if getattr(inp, k) is not None}
            contact = msgspec.structs.replace(contact, **changes)
            self.entry("event.received", None, at, input=_b(inp), output={"contactChanged": sorted(changes)})
        self.change_contact(contact)
        if self.s.status in ("active", "waiting"):
            if not self.touch(at) and isinstance(inp, Event):
                self.step_event(inp, at)
        elif contact.unsubscribed and self.s.status in ("pending", "paused", "failed"):
            # an unsubscribe stops the run whatever it is doing: a paused or failed run would
            # otherwise resume (or be retried) into a send
            self.cancel(at, "contact unsubscribed", None)

    def step_event(self, event: Event, at: int) -> None:
        """An event for the step the run waits in (a call's status): the step decides."""
        step_id = self.s.current_step
        if self.s.timer != "wait" or step_id is None or (event.step_id or self.step_of_message(event.message_id)) != step_id:
            return
        out = self.call(step_id, at, "on_event", event)
        if out is None:
            return
        self.move("active", at)
        fingerprint, verdict = self.s.channel_wait, self.s.wait_verdict
        self.set(wake_tick=None, timer=None, channel_wait=None, wait_verdict=None)
        if isinstance(out, Done) and fingerprint is not None:
            key, digest = fingerprint
            result = StepResult(step_id, self.plan.step(step_id).type, self.s.step_tick, out.outcome,
                                idempotency_key=key, content_hash=digest, policy_verdict=verdict)  # fmt: skip
            self.record(result, "step.executed", at, out.data)
            if not self.touch(at):
                self.go_on(step_id, out.goto, at)
        else:
            self.outcome(step_id, out, at)

    def step_of_message(self, msg_id: str | None) -> str | None:
        if msg_id is None:
            return None
        domain = self.kernel_env.message_domain
        wait = self.s.channel_wait
        if wait is not None and message_id(wait[0], domain, self.s.run_id) == msg_id:
            return self.s.current_step
        for r in reversed(self.s.results):
            if r.idempotency_key and message_id(r.idempotency_key, domain, self.s.run_id) == msg_id:
                return r.step_id
        return None

    def resume(self, inp: Resume, at: int) -> None:
        previous = self.s.paused_from or "waiting"
        self.move("active", at)
        self.entry("run.resumed", self.s.current_step, at, input=_b(inp))
        if self.s.wake_tick is not None and self.s.wake_tick < at:
            self.set(wake_tick=at)
        if previous == "waiting":
            self.move("waiting", at)
        held = self.s.held
        self.set(paused_from=None, held=())
        if self.touch(at):
            return
        for result in held:
            self.result(result, at, journaled=True)

    def cancel(self, at: int, reason: str, inp: dict[str, Any] | None) -> None:
        self.move("cancelled", at)
        self.set(wake_tick=None, timer=None, dispatch=None, completed_tick=at, held=())
        self.entry("run.cancelled", self.s.current_step, at, input=inp, output={"reason": reason})

    def retry(self, inp: Retry, at: int) -> None:
        self.move("active", at)
        self.set(run_attempt=self.s.run_attempt + 1)
        self.entry("run.retried", self.s.current_step, at, input=_b(inp), output={"attempt": self.s.run_attempt})
        if not self.touch(at):
            # a run that failed before its first step (an exit condition that could not be
            # evaluated) is retried from the first step
            failed_step = self.s.current_step or self.plan.plan.first_step
            self.enter(failed_step, at, salted=self.s.current_step is not None and at == self.s.step_tick)

    # ---- exit conditions ---------------------------------------------------------------
    def touch(self, at: int) -> bool:
        """Check exit conditions (and the contact's unsubscribe); True when the run ended."""
        snapshot = condition_snapshot(self.s.contact, self.s.variables, self.s.results, self.s.events, at)
        for condition, outcome in self.plan.exit_conditions:
            try:
                hit = condition.evaluate(snapshot)
            except Exception as exc:
                error = f"exit condition {condition.source!r}: {exc}"
                self.entry("error.occurred", self.s.current_step, at, output={"error": error})
                self.fail(at, error)
                return True
            if hit:
                self.complete(at, outcome, {"exitCondition": condition.source})
                return True
        if self.s.contact.unsubscribed:
            self.cancel(at, "contact unsubscribed", None)
            return True
        return False

    # ---- steps -------------------------------------------------------------------------
    def context(self, step_id: str, at: int) -> StepContext:
        env = self.kernel_env
        s = self.s
        return StepContext(
            s.run_id, s.plan_id, s.plan_version, step_id, self.plan.step(step_id).type, at, s.step_tick, s.contact,
            s.variables, s.results, s.events, s.key_attempt, env.message_domain, env.tick_interval_ms, env.templates,
            env.settings, self.plan.condition,
        )  # fmt: skip

    def call(self, step_id: str, at: int, method: str, *args: Any) -> StepOutcome | None:
        """Call a step type; whatever it raises fails the step (fail-closed), never the tick.
        None only from `on_event` (the event does not concern the step)."""
        step_type = self.plan.type_of(step_id)
        try:
            outcome: StepOutcome | None = getattr(step_type, method)(self.context(step_id, at), self.plan.params[step_id], *args)
            return outcome
        except Exception as exc:
            return Fail(f"{type(exc).__name__}: {exc}")

    def enter(self, step_id: str, at: int, salted: bool = False) -> None:
        """Start an execution of a step. `salted`: a retry_run re-entering the failed step in the
        tick its failed execution began, which needs the run attempt in its idempotency key."""
        self.set(current_step=step_id, step_tick=at, key_attempt=self.s.run_attempt if salted else 1)
        self.entry("step.entered", step_id, at, context=self.record_context(at))
        self.outcome(step_id, self.call(step_id, at, "enter"), at)

    def record_context(self, at: int) -> dict[str, Any]:
        """What the step sees that the log does not hold yet: the results and events since the
        previous record (after the first `resultsFrom` and `eventsFrom` ones) and the contact
        when it changed; `dee.kernel.recorded` folds the records back into whole contexts."""
        mark = self.s.recorded
        record: dict[str, Any] = {
            "tick": at,
            "resultsFrom": mark.results,
            "results": msgspec.to_builtins(self.s.results[mark.results:]),
            "eventsFrom": mark.events,
            "events": msgspec.to_builtins(self.s.events[mark.events:]),
        }
        if not mark.contact:
            record["contact"] = msgspec.to_builtins(self.s.contact)
        self.set(recorded=ContextMark(len(self.s.results), len(self.s.events), contact=True))
        return record

    def change_contact(self, contact: Contact) -> None:
        """The contact as it is from now on; the next context record carries it."""
        if contact != self.s.contact:
            self.set(contact=contact, recorded=msgspec.structs.replace(self.s.recorded, contact=False))

    def outcome(self, step_id: str, out: StepOutcome | None, at: int, timer: bool = False) -> None:
        step_type = self.plan.step(step_id).type
        if out is None:
            out = Fail(f"step type {step_type} returned no outcome")
        if isinstance(out, Done):
            target = self.s.wait_target if timer else None
            result = StepResult(step_id, step_type, at, out.outcome, target_tick=target)
            action = "wait.completed" if timer else out.action
            self.record(result, action, at, out.data)
            self.go_on(step_id, out.goto, at)
        elif isinstance(out, Sleep):
            self.set(wake_tick=out.until_tick, timer="wait", wait_target=out.until_tick)
            self.move("waiting", at)
            self.entry("wait.started", step_id, at, output={"targetTick": out.until_tick})
        elif isinstance(out, Send):
            self.dispatch(step_id, out, at)
        elif isinstance(out, Finish):
            self.record(StepResult(step_id, step_type, at, out.outcome), "step.executed", at)
            self.complete(at, out.outcome, {"endStep": step_id})
        else:
            self.entry("error.occurred", step_id, at, output={"error": out.error, **out.data})
            self.fail(at, out.error)

    def record(self, result: StepResult, action: str, at: int, data: Mapping[str, Any] | None = None, **fields: Any) -> None:
        self.set(results=(*self.s.results, result), steps_completed=self.s.steps_completed + 1)
        output = {"result": msgspec.to_builtins(result), **(data or {})}
        self.entry(action, result.step_id, at, output=output, **fields)

    def go_on(self, step_id: str, goto: str | None, at: int) -> None:
        try:
            nxt = goto or self.plan.next_step(step_id, condition_snapshot(
                self.s.contact, self.s.variables, self.s.results, self.s.events, at))  # fmt: skip
        except Exception as exc:
            self.entry("error.occurred", step_id, at, output={"error": f"transition condition: {exc}"})
            self.fail(at, f"transition condition: {exc}")
            return
        if nxt is None:
            self.complete(at, "completed", {"lastStep": step_id})
        else:
            self.enter(nxt, at)

    # ---- channels ----------------------------------------------------------------------
    def dispatch(self, step_id: str, send: Send, at: int) -> None:
        ctx = self.context(step_id, at)
        self.gated_send(step_id, PendingDispatch(send.channel, ctx.idempotency_key, ctx.message_id, send.content_hash,
                                                 send.message), at)  # fmt: skip

    def gated_send(self, step_id: str, pending: PendingDispatch, at: int) -> None:
        """Send, if the gates allow it now (the first attempt and every resend alike)."""
        allowed = self.permitted(step_id, pending, at)
        if allowed is not None:
            self.set(dispatch=allowed)
            self.move("waiting", at)
            self.send(step_id, allowed, at)

    def permitted(self, step_id: str, pending: PendingDispatch, at: int) -> PendingDispatch | None:
        """Ask every gate about this send (`policy.evaluated`); the dispatch to send, or None
        when a gate held it back: deferred (the run waits for the window and asks again),
        skipped (`step.skipped`, the run goes on), paused, or failed."""
        env = self.kernel_env
        if not env.gates:
            return pending
        step_type = self.plan.step(step_id).type
        request = GateRequest(self.s.run_id, self.s.plan_id, step_id, step_type, pending.channel, at, pending.attempt,
                              self.s.contact, self.s.facts, env.tick_interval_ms, self.s.epoch_ms, pending.message_id)  # fmt: skip
        decision = decide(env.gates, request)
        self.entry("policy.evaluated", step_id, at, output=decision.record())
        verdict = decision.final
        held = msgspec.structs.replace(pending, policy_verdict=verdict.verdict)
        if verdict.verdict == "allow":
            return held
        if verdict.verdict == "defer":
            self.set(dispatch=held, wake_tick=verdict.until_tick, timer="policy")
            self.move("waiting", at)
        elif verdict.verdict == "pause":  # resumed, the send is asked about again
            self.set(dispatch=held, wake_tick=at, timer="policy", paused_from="waiting")
            self.move("paused", at)
            self.entry("run.paused", step_id, at, output={"reason": f"policy: {verdict.reason}"})
        elif verdict.verdict == "skip":
            self.set(dispatch=None)
            self.record(StepResult(step_id, step_type, self.s.step_tick, "skipped", policy_verdict="skip"), "step.skipped",
                        at, {"reason": verdict.reason})  # fmt: skip
            if not self.touch(at):
                self.go_on(step_id, None, at)
        else:
            self.set(dispatch=None)
            self.entry("error.occurred", step_id, at, output={"error": f"policy: {verdict.reason}"})
            self.fail(at, f"policy: {verdict.reason}")
        return None

    def note(self, marks: Sequence[SentMark], at: int) -> None:
        """Keep the contact's sends the gates read back, as far back as they read."""
        horizon = self.kernel_env.history_ticks
        if horizon:
            self.set(facts=self.s.facts.noting(marks, at - horizon))

    def send(self, step_id: str, pending: PendingDispatch, at: int) -> None:
        if self.kernel_env.history_ticks:  # a mark only when some gate reads sends back
            self.note([SentMark(at, pending.channel, pending.message_id, self.s.plan_id)], at)
        self.entry("step.dispatched", step_id, at, output={
            "channel": pending.channel, "idempotencyKey": pending.idempotency_key,
            "messageId": pending.message_id, "contentHash": pending.content_hash, "attempt": pending.attempt,
        })  # fmt: skip
        self.effects.append(DispatchRequest(
            self.s.run_id, step_id, pending.channel, pending.idempotency_key, pending.message_id,
            pending.attempt, pending.message, at, pending.attempt + pending.rate_limited + pending.budget_paused,
            self.s.contact.id, self.s.plan_id,
        ))  # fmt: skip

    def redispatch(self, at: int) -> None:
        pending = self.s.dispatch
        assert pending is not None and self.s.current_step is not None
        self.gated_send(self.s.current_step, pending, at)

    def result(self, res: ChannelResult, at: int, journaled: bool = False) -> None:
        pending = self.s.dispatch
        step_id = self.s.current_step
        inp = None if journaled else _b(res)
        if pending is None or pending.idempotency_key != res.idempotency_key or step_id is None:
            self.entry("event.received", step_id, at, input=inp, output={"ignored": "no pending dispatch with this key"})
            return
        if self.s.status == "paused":
            self.set(held=(*self.s.held, res))
            self.entry("event.received", step_id, at, input=inp, output={"held": "run is paused"})
            return
        if self.s.timer in ("retry", "policy"):
            self.set(wake_tick=None, timer=None)  # an answer arrived during the backoff: no resend
        step_type = self.plan.step(step_id).type
        sent: _Sent = {"idempotency_key": pending.idempotency_key, "content_hash": pending.content_hash,
                       "policy_verdict": pending.policy_verdict}  # fmt: skip
        if res.status == "delivered":
            self.set(dispatch=None)
            self.move("active", at)
            out = self.call(step_id, at, "on_result", res)
            if isinstance(out, Done):
                result = StepResult(step_id, step_type, self.s.step_tick, out.outcome, **sent)
                self.record(result, "step.executed", at, out.data, input=inp)
                if not self.touch(at):
                    self.go_on(step_id, out.goto, at)
            else:
                self.entry("step.executed", step_id, at, input=inp, output={"status": "delivered"})
                if isinstance(out, Sleep):  # handed over; the outcome comes as an event (on_event)
                    self.set(channel_wait=(pending.idempotency_key, pending.content_hash), wait_verdict=pending.policy_verdict)
                self.outcome(step_id, out, at)
            return
        kind = res.error_kind or "permanent"
        env = self.kernel_env
        if kind == "budget_exhausted" and env.retry.on_budget == "pause":
            self.budget_pause(step_id, pending, res, at, inp)
            return
        plan_retry = next_retry(env.retry, kind, pending, at, env.tick_interval_ms, res.retry_after_ms)
        if plan_retry is not None:
            self.set(dispatch=plan_retry.pending, wake_tick=plan_retry.tick, timer="retry")
            self.entry("error.retried", step_id, at, input=inp, output={
                "errorKind": kind, "error": res.error, "attempt": pending.attempt, "nextTick": plan_retry.tick})  # fmt: skip
            return
        self.set(dispatch=None)
        if kind == "hard_bounce":
            self.move("active", at)
            self.change_contact(msgspec.structs.replace(self.s.contact, bounced=True))
            self.effects.append(ContactFlagged(self.s.contact.id, "bounced", at))
            self.record(StepResult(step_id, step_type, self.s.step_tick, "bounced", **sent), "step.executed", at,
                        {"error": res.error}, input=inp)  # fmt: skip
            self.complete(at, "undeliverable", {"hardBounce": step_id})
            return
        self.move("active", at)
        self.record(StepResult(step_id, step_type, self.s.step_tick, "failed", **sent), "step.executed", at,
                    {"errorKind": kind, "error": res.error, "attempts": pending.attempt}, input=inp)  # fmt: skip
        self.fail(at, f"{kind}: {res.error or 'channel failure'}")

    def budget_pause(self, step_id: str, pending: PendingDispatch, res: ChannelResult, at: int, inp: dict[str, Any] | None) -> None:
        """An exhausted budget refused the send: the run pauses holding it, as a gate's pause
        does; resumed, the gates are asked again and the send is handed out anew (its next
        dispatch number, so its answer is a new result)."""
        held = msgspec.structs.replace(pending, budget_paused=pending.budget_paused + 1)
        self.set(dispatch=held, wake_tick=at, timer="policy", paused_from="waiting")
        self.move("paused", at)
        self.entry("run.paused", step_id, at, input=inp, output={"reason": f"budget: {res.error or 'exhausted'}"})

    # ---- endings -----------------------------------------------------------------------
    def complete(self, at: int, outcome: str, why: Mapping[str, Any]) -> None:
        self.move("completed", at)
        self.set(outcome=outcome, completed_tick=at, wake_tick=None, timer=None, dispatch=None)
        self.entry("run.completed", self.s.current_step, at, output={"outcome": outcome, **why})

    def fail(self, at: int, error: str) -> None:
        self.move("failed", at)
        self.set(wake_tick=None, timer=None, dispatch=None)
        self.entry("run.failed", self.s.current_step, at, output={"error": error})


def _b(value: Any) -> dict[str, Any]:
    built: dict[str, Any] = msgspec.to_builtins(value)  # a Struct's builtins: a dict
    return built
