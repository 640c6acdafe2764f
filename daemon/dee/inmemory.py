"""The in-memory shell: runs the kernel with state, inbox, timers, outbox and audit in dicts.

It is the whole engine in one process with nothing to install (`database="memory://"`): what
the examples, the unit tests of the facade and `dee simulate --memory` use. It follows the same
rules as the daemon: inputs are stamped with the current tick, runs are taken ordered by run
id at most `max_runs_per_tick` at a time, entries are sealed into the hash chain at commit, and
effects are dispatched only after the state that caused them is stored.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.errors import AlreadyEnrolledError, ContactSuppressedError, RunNotFoundError, StartInPastError
from dee.ids import ulid
from dee.kernel.audit import AuditEntry, seal
from dee.kernel.contact import Contact
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.inputs import AnyInput, ChannelResult, ContactChanged, Event, Start
from dee.kernel.machine import Advance, KernelEnv, advance, start_run
from dee.kernel.replay import ReplayResult, verdict_entry
from dee.kernel.state import RunState
from dee.plan.compiled import CompiledPlan
from dee.plan.create import prepare_plan
from dee.plan.model import Plan
from dee.plan.registry import PlanRegistry
from dee.plugin.contracts import ChannelAdapter, TemplateStore
from dee.plugin.manager import PluginManager
from dee.runs import BulkError, BulkResult, ConsentRecord, Suppression


class MemoryShell:
    def __init__(
        self,
        config: EngineConfig,
        plugins: PluginManager,
        templates: TemplateStore,
        adapters: Mapping[str, ChannelAdapter],
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.templates = templates
        self.adapters = dict(adapters)
        self.tick = 0
        self.registry = PlanRegistry()
        self.compiled: dict[tuple[str, int], CompiledPlan] = {}
        self.runs: dict[str, RunState] = {}
        self.audit: dict[str, list[AuditEntry]] = defaultdict(list)
        self.inbox: dict[str, list[AnyInput]] = defaultdict(list)
        self.timers: list[tuple[int, str]] = []
        self.outbox: deque[DispatchRequest] = deque()
        self.enrolled: dict[tuple[str, str], str] = {}
        self.by_contact: dict[str, list[str]] = defaultdict(list)
        self.contacts: dict[str, Contact] = {}
        self.idempotency: dict[str, str] = {}
        self.events_seen: set[str] = set()
        self.suppressions: list[Suppression] = []
        self.consents: list[ConsentRecord] = []

    # ---- plans -------------------------------------------------------------------------
    def register(self, plan: Plan) -> CompiledPlan:
        compiled = prepare_plan(plan, self.plugins, self.templates)
        registered = self.registry.register(compiled.plan)
        key = (registered.id, registered.version or 0)
        if key not in self.compiled:
            self.compiled[key] = prepare_plan(registered, self.plugins, self.templates)
        return self.compiled[key]

    def env_for(self, plan_id: str, version: int) -> KernelEnv:
        return KernelEnv(
            plan=self.compiled[(plan_id, version)],
            templates=self.templates,
            tick_interval_ms=self.config.scheduler.tick_interval_ms,
            settings=self.config.kernel_settings(),
            message_domain=self.config.message_domain,
        )

    # ---- enrolment ---------------------------------------------------------------------
    def enrol(
        self,
        compiled: CompiledPlan,
        contact: Contact,
        variables: Mapping[str, Any] | None,
        start_at: int | None,
        idempotency_key: str | None,
    ) -> str:
        """Create one run (pending until its start tick); returns its id."""
        if idempotency_key is not None and idempotency_key in self.idempotency:
            return self.idempotency[idempotency_key]
        plan = compiled.plan
        existing = self.enrolled.get((plan.id, contact.id))
        if existing is not None and not self.runs[existing].terminal:
            raise AlreadyEnrolledError(plan.id, contact.id, existing)
        start_tick = self.tick if start_at is None else start_at
        if start_tick < self.tick:
            raise StartInPastError(start_tick, self.tick)
        blocking = self.suppression_of(contact.id, plan.id)
        if blocking is not None:
            raise ContactSuppressedError(contact.id, blocking.level, blocking.reason)
        known = self.contacts.get(contact.id)
        if known is not None:
            contact = msgspec.structs.replace(
                contact, unsubscribed=contact.unsubscribed or known.unsubscribed, bounced=contact.bounced or known.bounced
            )
        self.contacts[contact.id] = contact
        run_id = ulid()
        start = Start(self.tick, run_id, plan.id, plan.version or 0, plan.checksum, contact, dict(variables or {}), start_tick)
        self.commit(run_id, start_run(start))
        self.enrolled[(plan.id, contact.id)] = run_id
        self.by_contact[contact.id].append(run_id)
        if idempotency_key is not None:
            self.idempotency[idempotency_key] = run_id
        return run_id

    def enrol_many(
        self, compiled: CompiledPlan, contacts: Iterable[Contact], variables: Mapping[str, Any] | None
    ) -> BulkResult:
        created, skipped, errors, ids = 0, 0, [], []
        for contact in contacts:
            try:
                ids.append(self.enrol(compiled, contact, variables, None, None))
                created += 1
            except (AlreadyEnrolledError, ContactSuppressedError):
                skipped += 1
            except Exception as exc:  # one bad contact must not stop the batch; it is reported
                errors.append(BulkError(contact.id, f"{type(exc).__name__}: {exc}"))
        return BulkResult(created, skipped, errors, ids)

    def suppression_of(self, contact_id: str, plan_id: str | None) -> Suppression | None:
        for s in self.suppressions:
            if s.contact_id == contact_id and (s.level in ("global", "regulatory") or (s.level == "plan" and s.plan_id == plan_id)):
                return s
        return None

    # ---- inputs ------------------------------------------------------------------------
    def state(self, run_id: str) -> RunState:
        try:
            return self.runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id) from None

    def deliver(self, run_id: str, make_input: Any) -> Advance:
        """Apply one command to one run now (a write returns after it is committed)."""
        self.state(run_id)
        self.inbox[run_id].append(make_input(self.tick))
        return self.process(run_id)

    def accept_event(self, event: Event, run_id: str | None, contact_id: str) -> list[str]:
        """Queue an event for its run(s); the same event id is applied once."""
        if event.event_id in self.events_seen:
            return []
        self.events_seen.add(event.event_id)
        if event.type == "email.unsubscribed" and contact_id in self.contacts:
            self.contacts[contact_id] = msgspec.structs.replace(self.contacts[contact_id], unsubscribed=True)
        targets = [run_id] if run_id else [r for r in self.by_contact.get(contact_id, []) if not self.runs[r].terminal]
        for target in targets:
            self.state(target)
            self.inbox[target].append(event)
        return targets

    # ---- processing ----------------------------------------------------------------------
    def process(self, run_id: str) -> Advance:
        state = self.runs[run_id]
        inputs = self.inbox.pop(run_id, [])
        result = advance(state, inputs, self.tick, self.env_for(state.plan_id, state.plan_version))
        self.commit(run_id, result)
        return result

    def commit(self, run_id: str, result: Advance) -> None:
        state = result.state
        if result.entries:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            sealed = seal(result.entries, state.audit_head, stamp, ulid)
            self.audit[run_id].extend(sealed)
            state = msgspec.structs.replace(state, audit_head=sealed[-1].checksum)
        self.runs[run_id] = state
        if state.wake_tick is not None:
            heapq.heappush(self.timers, (state.wake_tick, run_id))
        for effect in result.effects:
            if isinstance(effect, DispatchRequest):
                self.outbox.append(effect)
            elif isinstance(effect, ContactFlagged):
                self.flag_contact(effect, run_id)

    def flag_contact(self, effect: ContactFlagged, source_run: str) -> None:
        contact = self.contacts.get(effect.contact_id)
        if contact is not None:
            self.contacts[effect.contact_id] = msgspec.structs.replace(contact, **{effect.flag: True})
        for other in self.by_contact.get(effect.contact_id, []):
            if other != source_run and not self.runs[other].terminal:
                self.inbox[other].append(ContactChanged(self.tick, **{effect.flag: True}))

    def due(self) -> list[str]:
        """Runs with inputs waiting or a timer due at the current tick, ordered by run id."""
        due = {r for r, items in self.inbox.items() if items}
        while self.timers and self.timers[0][0] <= self.tick:
            wake, run_id = heapq.heappop(self.timers)
            if self.runs[run_id].wake_tick == wake and self.runs[run_id].status != "paused":
                due.add(run_id)
        return sorted(due)

    async def run_until_idle(self) -> int:
        """Process the current tick until nothing is due and nothing is in flight."""
        processed = 0
        cap = self.config.scheduler.max_runs_per_tick
        while True:
            due = self.due()
            if not due and not self.outbox:
                return processed
            for start in range(0, len(due), cap):
                for run_id in due[start : start + cap]:
                    self.process(run_id)
                    processed += 1
            await self.dispatch_all()

    async def dispatch_all(self) -> None:
        while self.outbox:
            request = self.outbox.popleft()
            response = await self.adapters[request.channel].send(request)
            self.inbox[request.run_id].append(ChannelResult(
                self.tick, request.idempotency_key, "delivered" if response.status == "delivered" else "failed",
                error_kind=response.error_kind, error=response.error, outcome=response.outcome, data=response.data,
            ))  # fmt: skip

    async def record_replay(self, run_id: str, result: ReplayResult) -> None:
        """Re-issue the replay's channel actions with their original keys (adapters answer
        from memory, nothing is sent twice) and journal the verdict in the run's chain."""
        for request in result.dispatches:
            await self.adapters[request.channel].send(request)
        state, draft = verdict_entry(self.runs[run_id], result, self.tick, len(result.dispatches))
        sealed = seal([draft], state.audit_head, datetime.now(UTC).isoformat(timespec="milliseconds"), ulid)
        self.audit[run_id].extend(sealed)
        self.runs[run_id] = msgspec.structs.replace(state, audit_head=sealed[-1].checksum)

    def next_wake(self) -> int | None:
        while self.timers:
            wake, run_id = self.timers[0]
            state = self.runs[run_id]
            if state.wake_tick == wake and state.status != "paused":
                return wake
            heapq.heappop(self.timers)
        return None

    async def advance_clock(self, ticks: int) -> None:
        """Move logical time forward, stopping at every tick where something is due."""
        target = self.tick + ticks
        await self.run_until_idle()
        while True:
            wake = self.next_wake()
            if wake is None or wake > target:
                break
            self.tick = max(self.tick, wake)
            await self.run_until_idle()
        self.tick = target
        await self.run_until_idle()
