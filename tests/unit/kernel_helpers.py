"""A small driver for the pure kernel (`dee.kernel.machine`), shared by the test_kernel_* modules.

It builds a `CompiledPlan` from the Python builders and an in-memory template store, starts a run,
feeds inputs, "delivers" every `DispatchRequest` effect back as a `ChannelResult` and collects
everything the kernel returned. Every `advance` call goes through `checked_advance`, which asserts
the invariants that must hold for *any* call, so every test checks them for free:

- every transition in `Advance.transitions` is in `ALLOWED`, and they chain from the old status
  to the new one;
- the input state is never mutated (its encoded bytes are the same before and after);
- entry `seq` numbers continue the state's `seq` without gaps;
- the same call made twice gives the same result (the kernel is a pure function).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from dee.kernel.audit import EntryDraft
from dee.kernel.contact import Contact
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.inputs import AnyInput, ChannelResult, Start
from dee.kernel.machine import Advance, KernelEnv, Rejection, advance, start_run
from dee.kernel.retry import RetryPolicy
from dee.kernel.state import RunState
from dee.kernel.status import ALLOWED
from dee.plan import steps, transitions
from dee.plan.compiled import CompiledPlan
from dee.plan.model import (
    Condition,
    Duration,
    Edge,
    ExitCondition,
    Plan,
    Step,
    Tracking,
    Transitions,
    Voicemail,
)
from dee.plan.prepare import prepare_plan
from dee.plugin.manager import PluginManager
from dee.project.templates import MemoryTemplateStore

DAY = 86_400  # ticks per day at 1000 ms per tick
HOUR = 3_600
TERMINAL = ("completed", "cancelled")

INTRO_HTML = (
    '<p>Hi {{ contact.first_name | default("there") }},</p>'
    '<p><a href="https://example.com/product">{{ product }}</a> for {{ contact.company }}</p>'
)

DEFAULT_DOCUMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "email": {
        "tmpl_intro": {
            "text": "Hi {{ contact.first_name | default('there') }}, {{ product }} for {{ contact.company }}.\n"
                    "Unsubscribe: {{ unsubscribe_url }}\n",
            "html": INTRO_HTML,
        },
        "tmpl_warm": {"text": "Following up on {{ product }}, {{ contact.company }}."},
        "tmpl_cold": {"text": "A different angle on {{ product }}."},
        "tmpl_breakup": {"text": "Closing the loop on {{ product }}."},
        "tmpl_broken": {"text": "Hi {{ contact.nickname }}"},
    },
    "voice": {"script_call": {"kind": "script", "greeting": "Hi from {{ product }}", "steps": []}},
    "voicemail": {"vm_intro": {"kind": "voicemail", "tts": "Sorry we missed you"}},
}

_PLUGINS: PluginManager | None = None


def plugins() -> PluginManager:
    """The installed plugins (dee_flow, dee_email, dee_voice), loaded once per test session."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = PluginManager.load()
    return _PLUGINS


def template_store(**email_overrides: dict[str, Any]) -> MemoryTemplateStore:
    """The default documents, with email templates replaced or added by keyword."""
    store = MemoryTemplateStore(DEFAULT_DOCUMENTS)
    for template_id, doc in email_overrides.items():
        store = store.with_document("email", template_id, doc)
    return store


def compile_plan(
    step_list: Sequence[Step],
    trans: Transitions | None = None,
    exits: Iterable[ExitCondition] = (),
    templates: MemoryTemplateStore | None = None,
    plan_id: str = "test-plan",
) -> CompiledPlan:
    plan = Plan(id=plan_id, name=plan_id, steps=tuple(step_list), transitions=trans or transitions.linear(),
                exit_conditions=tuple(exits))
    return prepare_plan(plan, plugins().step_types(), templates or template_store())


def outreach_plan(templates: MemoryTemplateStore | None = None, with_exits: bool = True) -> CompiledPlan:
    """config/plans/sales-outreach-v2.yaml rebuilt with the builders and this module's templates."""
    track = Tracking(opens=True, clicks=True)
    step_list = [
        steps.send_email("initial-email", "tmpl_intro", "{{ product }} for {{ contact.company }}", tracking=track),
        steps.wait("wait-1", Duration(days=3)),
        steps.branch("check-email-1", [
            Condition('events.hasReply("initial-email")', "end-replied"),
            Condition('events.hasOpen("initial-email")', "warm-follow-up"),
            Condition("default", "cold-follow-up"),
        ]),
        steps.send_email("warm-follow-up", "tmpl_warm", "Following up on {{ product }}", tracking=track),
        steps.wait("wait-2", Duration(days=2)),
        steps.branch("check-email-2", [
            Condition('events.hasReply("warm-follow-up")', "end-replied"),
            Condition("default", "call-attempt"),
        ]),
        steps.send_email("cold-follow-up", "tmpl_cold", "A different angle on {{ product }}", tracking=track),
        steps.wait("wait-3", Duration(days=4)),
        steps.send_voice("call-attempt", "script_call", voicemail=Voicemail(detect=True, message_id="vm_intro")),
        steps.wait("wait-4", Duration(days=2)),
        steps.send_email("breakup-email", "tmpl_breakup", "Closing the loop on {{ product }}"),
        steps.end("end-no-reply", "no_response"),
        steps.end("end-replied", "replied"),
    ]
    edges = [
        Edge("initial-email", "wait-1"), Edge("wait-1", "check-email-1"),
        Edge("warm-follow-up", "wait-2"), Edge("wait-2", "check-email-2"),
        Edge("cold-follow-up", "wait-3"), Edge("wait-3", "call-attempt"),
        Edge("call-attempt", "wait-4"), Edge("wait-4", "breakup-email"),
        Edge("breakup-email", "end-no-reply"),
    ]
    exits = [
        ExitCondition("contact.unsubscribed", "unsubscribed"),
        ExitCondition("contact.bounced", "bounced"),
        ExitCondition("events.hasReply(any)", "replied"),
    ] if with_exits else []
    return compile_plan(step_list, transitions.explicit(edges), exits, templates, plan_id="sales-outreach-v2")


def spec_key(run_id: str, step_id: str, tick: int) -> str:
    """SPEC section 6: the idempotency key of the execution of `step_id` that began at `tick`."""
    return hashlib.sha256(f"{run_id}|{step_id}|{tick}".encode()).hexdigest()


def encoded(state: RunState) -> bytes:
    return msgspec.json.encode(state)


def check_advance(before: RunState | None, result: Advance) -> None:
    """The invariants every kernel call must keep (see the module docstring)."""
    for transition in result.transitions:
        assert transition in ALLOWED, f"transition {transition} is not in ALLOWED"
    if result.transitions:
        assert before is not None
        chain = [before.status] + [to for _, to in result.transitions]
        froms = [before.status] + [to for _, to in result.transitions[:-1]]
        assert [f for f, _ in result.transitions] == froms, f"transitions do not chain: {result.transitions}"
        assert chain[-1] == result.state.status
    elif before is not None:
        assert result.state.status == before.status, "status changed without a recorded transition"
    first = (before.seq if before is not None else 0) + 1
    assert [e.seq for e in result.entries] == list(range(first, first + len(result.entries)))
    assert result.state.seq == first + len(result.entries) - 1
    for rejection in result.rejected:
        assert isinstance(rejection, Rejection)


def checked_start(start: Start) -> Advance:
    result = start_run(start)
    check_advance(None, result)
    assert result.state.status == "pending"
    return result


def checked_advance(state: RunState, inputs: Sequence[AnyInput], now: int, env: KernelEnv) -> Advance:
    """`advance`, plus the invariants: no mutation of `state`, determinism, ALLOWED transitions."""
    before = encoded(state)
    result = advance(state, list(inputs), now, env)
    assert encoded(state) == before, "advance mutated its input state"
    again = advance(state, list(inputs), now, env)
    assert msgspec.json.encode(again) == msgspec.json.encode(result), "advance is not deterministic"
    check_advance(state, result)
    return result


def make_contact(**fields: Any) -> Contact:
    values: dict[str, Any] = {"id": "c1", "email": "ada@example.com", "phone": "+15550100",
                              "attributes": {"company": "Acme", "first_name": "Ada"}}
    values.update(fields)
    return Contact(**values)


Responder = Callable[[DispatchRequest], dict[str, Any]]


def delivered(request: DispatchRequest) -> dict[str, Any]:
    """The default answer: delivered; calls are answered."""
    return {"status": "delivered", "outcome": "answered" if request.channel == "voice" else None}


class Driver:
    """One run driven through the kernel; keeps every entry, effect, rejection and transition."""

    def __init__(
        self,
        plan: CompiledPlan,
        templates: MemoryTemplateStore | None = None,
        *,
        run_id: str = "run-1",
        contact: Contact | None = None,
        variables: dict[str, Any] | None = None,
        start_tick: int = 0,
        accepted_tick: int | None = None,
        tick_interval_ms: int = 1000,
        settings: dict[str, dict[str, Any]] | None = None,
        retry: RetryPolicy | None = None,
        message_domain: str = "dee.local",
    ) -> None:
        self.plan = plan
        self.env = KernelEnv(plan, templates or template_store(), tick_interval_ms=tick_interval_ms,
                             settings=settings or {}, retry=retry or RetryPolicy(), message_domain=message_domain)
        self.entries: list[EntryDraft] = []
        self.effects: list[Any] = []
        self.rejected: list[Rejection] = []
        self.transitions: list[tuple[str, str]] = []
        self.answered: set[int] = set()  # indexes into self.effects of requests already answered
        start = Start(start_tick if accepted_tick is None else accepted_tick, run_id, plan.plan.id, 1,
                      plan.plan.checksum, contact or make_contact(),
                      dict(variables if variables is not None else {"product": "DEE"}), start_tick)
        result = checked_start(start)
        self.state = result.state
        self._collect(result)

    # ---- driving -------------------------------------------------------------------------
    def _collect(self, result: Advance) -> Advance:
        self.entries.extend(result.entries)
        self.effects.extend(result.effects)
        self.rejected.extend(result.rejected)
        self.transitions.extend(result.transitions)
        return result

    def advance(self, inputs: Sequence[AnyInput], now: int | None = None) -> Advance:
        if now is None:
            now = max([i.tick for i in inputs], default=self.state.current_tick)
        result = checked_advance(self.state, inputs, now, self.env)
        self.state = result.state
        return self._collect(result)

    def feed(self, *inputs: AnyInput, now: int | None = None) -> Advance:
        return self.advance(list(inputs), now)

    @property
    def outstanding(self) -> list[DispatchRequest]:
        """Dispatch requests not answered yet, in the order the kernel asked for them."""
        return [e for i, e in enumerate(self.effects) if isinstance(e, DispatchRequest) and i not in self.answered]

    def take_outstanding(self) -> list[DispatchRequest]:
        out = []
        for i, e in enumerate(self.effects):
            if isinstance(e, DispatchRequest) and i not in self.answered:
                self.answered.add(i)
                out.append(e)
        return out

    def deliver(self, tick: int | None = None, respond: Responder = delivered) -> list[DispatchRequest]:
        """Answer every outstanding dispatch (and those its answers cause) at `tick`."""
        done: list[DispatchRequest] = []
        while True:
            requests = self.take_outstanding()
            if not requests:
                return done
            at = self.state.current_tick if tick is None else tick
            results = [ChannelResult(at, r.idempotency_key, **respond(r)) for r in requests]
            self.advance(results, at)
            done.extend(requests)

    def fail_next(self, tick: int, error_kind: str, error: str = "boom") -> DispatchRequest:
        """Answer the single outstanding dispatch with a failure of `error_kind`."""
        requests = self.take_outstanding()
        assert len(requests) == 1, requests
        self.advance([ChannelResult(tick, requests[0].idempotency_key, "failed", error_kind=error_kind,
                                    error=error)], tick)  # type: ignore[arg-type]
        return requests[0]

    def run(self, respond: Responder = delivered, until: int | None = None) -> None:
        """Deliver every dispatch at its own tick and fire every timer, until the run stops
        (terminal, failed, paused or nothing due) or the next timer is after `until`."""
        for _ in range(10_000):
            self.deliver(respond=respond)
            s = self.state
            if s.terminal or s.status in ("failed", "paused") or s.wake_tick is None:
                return
            if until is not None and s.wake_tick > until:
                return
            self.advance([], s.wake_tick)
        raise AssertionError("run did not stop")

    # ---- reading -------------------------------------------------------------------------
    def actions(self, since: int = 0) -> list[tuple[int, str, str | None]]:
        """(tick, action, step_id) of every entry, from entry index `since`."""
        return [(e.tick, e.action, e.step_id) for e in self.entries[since:]]

    def entered(self) -> list[tuple[str | None, int]]:
        return [(e.step_id, e.tick) for e in self.entries if e.action == "step.entered"]

    def of(self, action: str) -> list[EntryDraft]:
        return [e for e in self.entries if e.action == action]

    def dispatches(self) -> list[DispatchRequest]:
        return [e for e in self.effects if isinstance(e, DispatchRequest)]

    def flags(self) -> list[ContactFlagged]:
        return [e for e in self.effects if isinstance(e, ContactFlagged)]

    def result_of(self, step_id: str) -> Any:
        matches = [r for r in self.state.results if r.step_id == step_id]
        assert len(matches) == 1, matches
        return matches[0]

    def check_entries(self) -> None:
        """Every entry's seq is 1..n, contiguous, and the state's seq is n."""
        assert [e.seq for e in self.entries] == list(range(1, len(self.entries) + 1))
        assert self.state.seq == len(self.entries)
        assert all(e.run_id == self.state.run_id for e in self.entries)
