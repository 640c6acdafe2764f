"""The in-memory shell: runs the kernel with state, inbox, timers, outbox and audit in dicts.

It is the whole engine in one process with nothing to install (`database="memory://"`): what
the examples, the unit tests of the facade and `dee simulate --memory` use. It follows the same
rules as the daemon: inputs are stamped with the current tick, runs are taken ordered by run
id at most `max_runs_per_tick` at a time, entries are sealed into the hash chain at commit, and
effects are dispatched only after the state that caused them is stored.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.errors import (
    AlreadyEnrolledError, ContactSuppressedError, InvalidTransitionError, RunNotFoundError, StartInPastError,
)  # fmt: skip
from dee.ids import MonotonicUlid, now_iso, ulid
from dee.kernel.audit import AuditEntry, seal
from dee.kernel.contact import Contact
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.inputs import (
    AnyInput, Cancel, ChannelResult, ContactChanged, Event, Pause, ReplayRecorded, Resume, Retry, Start, Suppressed,
)  # fmt: skip
from dee.kernel.machine import Advance, KernelEnv, advance, start_run
from dee.kernel.replay import ReplayResult
from dee.kernel.state import RunState
from dee.plan.compiled import CompiledPlan
from dee.plan.prepare import prepare_plan
from dee.plan.model import Plan
from dee.plan.registry import PlanRegistry
from dee.plugin.contracts import ChannelAdapter, TemplateStore
from dee.plugin.manager import PluginManager
from dee.records import BulkError, BulkResult, ConsentRecord, ExecutionRun, RunPage, Suppression, run_view


class MemoryBackend:
    def __init__(
        self,
        config: EngineConfig,
        plugins: PluginManager,
        templates: TemplateStore,
        adapters: Mapping[str, ChannelAdapter],
        scheduler: bool = True,
    ) -> None:
        self.config = config
        self.scheduler = scheduler
        self._clock_task: asyncio.Task[None] | None = None
        self.plugins = plugins
        self.templates = templates
        self.adapters = dict(adapters)
        self.current_tick = 0
        self.registry = PlanRegistry()
        self.plans_compiled: dict[tuple[str, int], CompiledPlan] = {}
        self.runs: dict[str, RunState] = {}
        self.audit: dict[str, list[AuditEntry]] = defaultdict(list)
        self.inbox: dict[str, list[AnyInput]] = defaultdict(list)
        self.timers: list[tuple[int, str]] = []
        self.outbox: deque[DispatchRequest] = deque()
        self.enrolled: dict[tuple[str, str], str] = {}
        self.by_contact: dict[str, list[str]] = defaultdict(list)
        self.contacts: dict[str, Contact] = {}
        self.idempotency: dict[str, str] = {}
        self.events_seen: dict[str, list[str]] = {}
        self.suppressions: list[Suppression] = []
        self.consents: list[ConsentRecord] = []
        self.new_run_id = MonotonicUlid()

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.scheduler and self.config.scheduler.clock == "wall":
            self._clock_task = asyncio.create_task(self._wall_clock())

    async def stop(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()

    async def _wall_clock(self) -> None:
        interval = self.config.scheduler.tick_interval_ms / 1000
        epoch = time.monotonic()
        while True:
            self.current_tick = int((time.monotonic() - epoch) / interval)
            await self.run_until_idle()
            await asyncio.sleep(interval)

    # ---- plans -------------------------------------------------------------------------
    async def register(self, plan: Plan) -> int:
        compiled = prepare_plan(plan, self.plugins.step_types(), self.templates)
        registered = self.registry.register(compiled.plan)
        key = (registered.id, registered.version or 0)
        if key not in self.plans_compiled:
            self.plans_compiled[key] = prepare_plan(registered, self.plugins.step_types(), self.templates)
        return key[1]

    async def compiled(self, plan_id: str, version: int) -> CompiledPlan:
        return self.plans_compiled[(plan_id, version)]

    def env_for(self, plan_id: str, version: int) -> KernelEnv:
        return KernelEnv(
            plan=self.plans_compiled[(plan_id, version)],
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
        start_tick = self.current_tick if start_at is None else start_at
        if start_tick < self.current_tick:
            raise StartInPastError(start_tick, self.current_tick)
        blocking = self.suppression_of(contact.id, plan.id)
        if blocking is not None:
            raise ContactSuppressedError(contact.id, blocking.level, blocking.reason)
        known = self.contacts.get(contact.id)
        if known is not None:
            contact = msgspec.structs.replace(
                contact, unsubscribed=contact.unsubscribed or known.unsubscribed, bounced=contact.bounced or known.bounced
            )
        self.contacts[contact.id] = contact
        run_id = self.new_run_id()
        start = Start(self.current_tick, run_id, plan.id, plan.version or 0, plan.checksum, contact, dict(variables or {}), start_tick)
        self.commit(run_id, start_run(start))
        self.enrolled[(plan.id, contact.id)] = run_id
        self.by_contact[contact.id].append(run_id)
        if idempotency_key is not None:
            self.idempotency[idempotency_key] = run_id
        return run_id

    async def execute(
        self, plan_id: str, version: int, contact: Contact, variables: dict[str, Any],
        start_at: int | None, idempotency_key: str | None,
    ) -> str:  # fmt: skip
        return self.enrol(self.plans_compiled[(plan_id, version)], contact, variables, start_at, idempotency_key)

    async def bulk_execute(
        self, plan_id: str, version: int, contacts: list[Contact], variables: dict[str, Any], batch_size: int
    ) -> BulkResult:
        return self.enrol_many(self.plans_compiled[(plan_id, version)], contacts, variables)

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

    # ---- reads -------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> ExecutionRun:
        state = self.state(run_id)
        chain = self.audit[run_id]
        completed = chain[-1].timestamp if state.terminal and chain else None
        plan = self.plans_compiled[(state.plan_id, state.plan_version)]
        return run_view(state, plan, chain[0].timestamp if chain else None, completed)

    async def list_runs(
        self, statuses: list[str] | None, plan_id: str | None, contact_id: str | None,
        started_after: int | datetime | None, started_before: int | datetime | None, limit: int, offset: int,
    ) -> RunPage:  # fmt: skip
        matched = []
        for run_id in sorted(self.runs):
            s = self.runs[run_id]
            if statuses and s.status not in statuses or plan_id and s.plan_id != plan_id:
                continue
            if contact_id and s.contact.id != contact_id:
                continue
            started = self.audit[run_id][0].timestamp
            if not (_after(s.start_tick, started, started_after) and _after(s.start_tick, started, started_before, before=True)):
                continue
            matched.append(run_id)
        return RunPage([await self.get_run(r) for r in matched[offset : offset + limit]], len(matched))

    async def audit_entries(self, run_id: str) -> list[AuditEntry]:
        self.state(run_id)
        return list(self.audit[run_id])

    async def audit_query(
        self, run_id: str | None, actions: list[str] | None, from_tick: int | None, to_tick: int | None
    ) -> list[AuditEntry]:
        chains = [self.audit[run_id]] if run_id else [self.audit[r] for r in sorted(self.audit)]
        return [
            e for chain in chains for e in chain
            if (actions is None or e.action in actions)
            and (from_tick is None or e.tick >= from_tick) and (to_tick is None or e.tick <= to_tick)
        ]  # fmt: skip

    async def chain_head(self, run_id: str) -> tuple[int, str]:
        state = self.state(run_id)
        return state.seq, state.audit_head

    async def chains(self, run_ids: list[str]) -> dict[str, tuple[list[AuditEntry], int, str]]:
        return {run_id: (list(self.audit[run_id]), *await self.chain_head(run_id)) for run_id in run_ids}

    # ---- commands ----------------------------------------------------------------------
    async def command(self, run_id: str, kind: str, reason: str = "") -> None:
        make = {
            "pause": lambda t: Pause(t, command_id=ulid()),
            "resume": lambda t: Resume(t, command_id=ulid()),
            "retry": lambda t: Retry(t, command_id=ulid()),
            "cancel": lambda t: Cancel(t, reason=reason, command_id=ulid()),
        }[kind]
        result = self.deliver(run_id, make)
        if result.rejected:
            raise result.rejected[0].error(run_id)
        await self.run_until_idle()

    async def bulk_cancel(self, filters: dict[str, Any], reason: str) -> int:
        page = await self.list_runs(
            filters.get("status"), filters.get("plan_id"), filters.get("contact_id"),
            filters.get("started_after"), filters.get("started_before"), 10**12, 0,
        )  # fmt: skip
        cancelled = 0
        for run in page.runs:
            try:
                await self.command(run.id, "cancel", reason)
                cancelled += 1
            except InvalidTransitionError:
                continue
        return cancelled

    async def ingest_event(
        self, type: str, contact_id: str, data: dict[str, Any], occurred_at: str | None,
        run_id: str | None, step_id: str | None, event_id: str | None, message_id: str | None,
    ) -> list[str]:  # fmt: skip
        event = Event(self.current_tick, event_id or ulid(), type, step_id, message_id, data, occurred_at)
        return self.accept_event(event, run_id, contact_id)

    async def suppress(self, entry: Suppression) -> int:
        entry = msgspec.structs.replace(entry, tick=self.current_tick)
        self.suppressions.append(entry)
        if entry.level == "channel":
            return 0
        cancelled = 0
        for run_id in list(self.by_contact.get(entry.contact_id, [])):
            state = self.runs[run_id]
            if state.terminal or (entry.level == "plan" and state.plan_id != entry.plan_id):
                continue
            self.deliver(run_id, lambda t: Suppressed(t, entry.level, entry.reason, entry.source))
            cancelled += 1
        return cancelled

    async def record_consent(self, record: ConsentRecord) -> None:
        if record.tick is None:
            record = msgspec.structs.replace(record, tick=self.current_tick)
        self.consents.append(record)

    async def contacts_of(self, run_ids: list[str]) -> dict[str, Contact]:
        return {run_id: self.runs[run_id].contact for run_id in run_ids if run_id in self.runs}

    async def consents_until(self, contact_ids: list[str], tick: int) -> list[ConsentRecord]:
        wanted = set(contact_ids)
        return [c for c in self.consents if c.contact_id in wanted and (c.tick or 0) <= tick]

    async def suppressions_between(self, from_tick: int, to_tick: int) -> list[Suppression]:
        return [s for s in self.suppressions if from_tick <= s.tick <= to_tick]

    # ---- inputs ------------------------------------------------------------------------
    def state(self, run_id: str) -> RunState:
        try:
            return self.runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id) from None

    def deliver(self, run_id: str, make_input: Any) -> Advance:
        """Apply one command to one run now (a write returns after it is committed)."""
        self.state(run_id)
        self.inbox[run_id].append(make_input(self.current_tick))
        return self.process(run_id)

    def accept_event(self, event: Event, run_id: str | None, contact_id: str) -> list[str]:
        """Queue an event for its run(s); the same event id is applied once."""
        if event.event_id in self.events_seen:
            return self.events_seen[event.event_id]
        if event.type == "email.unsubscribed" and contact_id in self.contacts:
            self.contacts[contact_id] = msgspec.structs.replace(self.contacts[contact_id], unsubscribed=True)
        targets = [run_id] if run_id else [r for r in self.by_contact.get(contact_id, []) if not self.runs[r].terminal]
        for target in targets:
            self.state(target)
            self.inbox[target].append(event)
        self.events_seen[event.event_id] = targets
        return targets

    # ---- processing ----------------------------------------------------------------------
    def process(self, run_id: str) -> Advance:
        state = self.runs[run_id]
        inputs = self.inbox.pop(run_id, [])
        result = advance(state, inputs, self.current_tick, self.env_for(state.plan_id, state.plan_version))
        self.commit(run_id, result)
        return result

    def commit(self, run_id: str, result: Advance) -> None:
        state = result.state
        if result.entries:
            stamp = now_iso()
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
                self.inbox[other].append(ContactChanged(self.current_tick, **{effect.flag: True}))

    def due(self) -> list[str]:
        """Runs with inputs waiting or a timer due at the current tick, ordered by run id."""
        due = {r for r, items in self.inbox.items() if items}
        while self.timers and self.timers[0][0] <= self.current_tick:
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
                self.current_tick, request.idempotency_key, "delivered" if response.status == "delivered" else "failed",
                error_kind=response.error_kind, error=response.error, outcome=response.outcome, data=response.data,
            ))  # fmt: skip

    async def record_replay(self, run_id: str, result: ReplayResult) -> None:
        """Re-issue the replay's channel actions with their original keys (adapters answer
        from memory, nothing is sent twice) and journal the verdict in the run's chain."""
        for request in result.dispatches:
            await self.adapters[request.channel].send(request)
        fields = [f"{d.step}.{d.field}" for d in result.diffs]
        self.deliver(run_id, lambda t: ReplayRecorded(t, result.identical, fields, len(result.dispatches)))

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
        target = self.current_tick + ticks
        await self.run_until_idle()
        while True:
            wake = self.next_wake()
            if wake is None or wake > target:
                break
            self.current_tick = max(self.current_tick, wake)
            await self.run_until_idle()
        self.current_tick = target
        await self.run_until_idle()


def _after(start_tick: int, started_at: str, bound: int | datetime | None, before: bool = False) -> bool:
    """Whether a run's start is after (or, `before`, before) a tick or a datetime bound."""
    if bound is None:
        return True
    value: Any = start_tick if isinstance(bound, int) else started_at
    limit: Any = bound if isinstance(bound, int) else bound.isoformat()
    return value < limit if before else value > limit
