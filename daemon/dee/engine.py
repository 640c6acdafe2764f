"""The Engine facade (SPEC section 3.1): what applications call.

`Engine(config)` is an async context manager. With `database="memory://"` the whole engine runs
in this process on the in-memory shell (nothing to install; examples, unit tests, `dee simulate
--memory`). Writes return once committed; reads come from the committed state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.errors import ClockModeError, ConfigError, InvalidTransitionError
from dee.ids import ulid
from dee.inmemory import MemoryShell
from dee.kernel.audit import AuditEntry, ChainVerification, verify_chain
from dee.kernel.contact import Contact
from dee.kernel.debug import Debugger
from dee.kernel.inputs import AnyInput, Cancel, Event, Pause, Resume, Retry, Start, Suppressed
from dee.kernel.machine import KernelEnv
from dee.kernel.replay import ReplayResult, replay_entries
from dee.kernel.timeline import TimelineEntry, timeline
from dee.plan.model import Plan
from dee.plugin.manager import PluginManager
from dee.runs import BulkResult, ConsentRecord, ExecutionRun, RunPage, Suppression, run_view
from dee.templates import ChainedTemplateStore, load_directory

ContactLike = Contact | Mapping[str, Any]


def as_contact(contact: ContactLike) -> Contact:
    return contact if isinstance(contact, Contact) else msgspec.convert(dict(contact), Contact)


class AuditAccess:
    """`engine.audit`: read access to audit chains."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def get_by_run(self, run_id: str) -> list[AuditEntry]:
        self._engine._shell.state(run_id)
        return list(self._engine._shell.audit[run_id])

    async def query(
        self,
        run_id: str | None = None,
        actions: Sequence[str] | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[AuditEntry]:
        shell = self._engine._shell
        chains = [shell.audit[run_id]] if run_id else [shell.audit[r] for r in sorted(shell.audit)]
        return [
            e
            for chain in chains
            for e in chain
            if (actions is None or e.action in actions)
            and (from_tick is None or e.tick >= from_tick)
            and (to_tick is None or e.tick <= to_tick)
        ]

    async def get_context_at(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        """The execution context the step saw when it was (last) entered."""
        for entry in reversed(await self.get_by_run(run_id)):
            if entry.action == "step.entered" and entry.step_id == step_id:
                return entry.context
        return None


class Engine:
    def __init__(self, config: EngineConfig | None = None, *, scheduler: bool = True, plugins: PluginManager | None = None) -> None:
        self.config = config or EngineConfig()
        self.scheduler = scheduler
        if not self.config.database.startswith("memory:"):
            raise ConfigError(
                f"database {self.config.database!r}: this build runs the in-memory engine only "
                "(database='memory://'); the Postgres/Redis daemon is not part of it yet"
            )
        self.plugins = plugins or PluginManager.load(disabled=self.config.plugins.disabled)
        stores = [load_directory(self.config.config_dir), *self.plugins.template_stores(self.config).values()]
        self.templates = ChainedTemplateStore(stores)
        adapters = self.plugins.channel_adapters(self.config)
        chosen = {
            "email": adapters.get(("email", self.config.channels.email.adapter)),
            "voice": adapters.get(("voice", self.config.channels.voice.adapter)),
        }
        missing = [f"{ch} adapter {getattr(self.config.channels, ch).adapter!r}" for ch, a in chosen.items() if a is None]
        if missing:
            raise ConfigError(f"no plugin provides the {', '.join(missing)}")
        self._shell = MemoryShell(self.config, self.plugins, self.templates, {k: v for k, v in chosen.items() if v})
        self.audit = AuditAccess(self)
        self._clock_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Engine:
        self.plugins.startup(self)
        if self.scheduler and self.config.scheduler.clock == "wall":
            self._clock_task = asyncio.create_task(self._wall_clock())
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
        self.plugins.shutdown(self)

    async def _wall_clock(self) -> None:
        interval = self.config.scheduler.tick_interval_ms / 1000
        epoch = time.monotonic()
        while True:
            self._shell.tick = int((time.monotonic() - epoch) / interval)
            await self._shell.run_until_idle()
            await asyncio.sleep(interval)

    @property
    def current_tick(self) -> int:
        return self._shell.tick

    # ---- runs ----------------------------------------------------------------------------
    async def execute(
        self,
        plan: Plan,
        contact: ContactLike,
        variables: Mapping[str, Any] | None = None,
        start_at: int | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionRun:
        compiled = self._shell.register(plan)
        run_id = self._shell.enrol(compiled, as_contact(contact), variables, start_at, idempotency_key)
        return await self.get_run(run_id)

    async def bulk_execute(
        self, plan: Plan, contacts: Iterable[ContactLike], variables: Mapping[str, Any] | None = None, batch_size: int = 100
    ) -> BulkResult:
        compiled = self._shell.register(plan)
        return self._shell.enrol_many(compiled, (as_contact(c) for c in contacts), variables)

    async def get_run(self, run_id: str) -> ExecutionRun:
        state = self._shell.state(run_id)
        chain = self._shell.audit[run_id]
        completed = chain[-1].timestamp if state.terminal and chain else None
        return run_view(state, self._shell.compiled[(state.plan_id, state.plan_version)], chain[0].timestamp if chain else None, completed)

    async def list_runs(
        self,
        status: str | Sequence[str] | None = None,
        plan_id: str | None = None,
        contact_id: str | None = None,
        started_after: int | datetime | None = None,
        started_before: int | datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> RunPage:
        """Runs matching every given filter, ordered by run id (creation order)."""
        statuses = {status} if isinstance(status, str) else set(status) if status else None
        matched = []
        for run_id in sorted(self._shell.runs):
            s = self._shell.runs[run_id]
            if statuses and s.status not in statuses or plan_id and s.plan_id != plan_id:
                continue
            if contact_id and s.contact.id != contact_id:
                continue
            if not _in_range(s, self._shell.audit[run_id], started_after, started_before):
                continue
            matched.append(run_id)
        page = [await self.get_run(r) for r in matched[offset : offset + limit]]
        return RunPage(page, len(matched))

    async def _command(self, run_id: str, make: Any) -> None:
        result = self._shell.deliver(run_id, make)
        if result.rejected:
            raise result.rejected[0].error(run_id)
        await self._shell.run_until_idle()

    async def pause_run(self, run_id: str) -> None:
        await self._command(run_id, lambda t: Pause(t, command_id=ulid()))

    async def resume_run(self, run_id: str) -> None:
        await self._command(run_id, lambda t: Resume(t, command_id=ulid()))

    async def cancel_run(self, run_id: str, reason: str) -> None:
        await self._command(run_id, lambda t: Cancel(t, reason=reason, command_id=ulid()))

    async def retry_run(self, run_id: str) -> None:
        await self._command(run_id, lambda t: Retry(t, command_id=ulid()))

    async def bulk_cancel(self, filters: Mapping[str, Any], reason: str) -> int:
        page = await self.list_runs(**{**filters, "limit": 10**12, "offset": 0})
        cancelled = 0
        for run in page.runs:
            try:
                await self.cancel_run(run.id, reason)
                cancelled += 1
            except InvalidTransitionError:
                continue
        return cancelled

    async def ingest_event(
        self,
        type: str,
        contact_id: str,
        data: Mapping[str, Any] | None = None,
        occurred_at: datetime | str | None = None,
        run_id: str | None = None,
        step_id: str | None = None,
        event_id: str | None = None,
        message_id: str | None = None,
    ) -> list[str]:
        """Accept an event; returns the ids of the runs it was routed to (empty if a duplicate)."""
        when = occurred_at.isoformat() if isinstance(occurred_at, datetime) else occurred_at
        event = Event(self._shell.tick, event_id or ulid(), type, step_id, message_id, dict(data or {}), when)
        return self._shell.accept_event(event, run_id, contact_id)

    async def suppress(
        self, contact_id: str, level: str, reason: str, source: str, channel: str | None = None, plan_id: str | None = None
    ) -> int:
        """Add a suppression; runs it covers are cancelled. Returns how many were cancelled."""
        entry = msgspec.convert(
            {"contact_id": contact_id, "level": level, "reason": reason, "source": source,
             "channel": channel, "plan_id": plan_id, "tick": self._shell.tick}, Suppression)  # fmt: skip
        self._shell.suppressions.append(entry)
        if level == "channel":
            return 0
        cancelled = 0
        for run_id in list(self._shell.by_contact.get(contact_id, [])):
            state = self._shell.runs[run_id]
            if state.terminal or (level == "plan" and state.plan_id != plan_id):
                continue
            self._shell.deliver(run_id, lambda t: Suppressed(t, level, reason, source))  # type: ignore[arg-type]
            cancelled += 1
        return cancelled

    async def record_consent(self, record: ConsentRecord) -> None:
        """Store a consent record (enforced by the policy gates)."""
        if record.tick is None:
            record = msgspec.structs.replace(record, tick=self._shell.tick)
        self._shell.consents.append(record)

    # ---- audit, replay, debug ----------------------------------------------------------------
    async def get_timeline(self, run_id: str) -> list[TimelineEntry]:
        return timeline(await self.audit.get_by_run(run_id))

    async def verify_audit_chain(self, run_id: str) -> ChainVerification:
        state = self._shell.state(run_id)
        return verify_chain(self._shell.audit[run_id], state.seq, state.audit_head)

    def _env_for(self, start: Start) -> KernelEnv:
        return self._shell.env_for(start.plan_id, start.plan_version)

    async def replay(self, run_id: str, dry_run: bool = True, inputs: Sequence[AnyInput] | None = None) -> ReplayResult:
        """Re-execute the run from its audit log with today's code and templates, and compare.

        `dry_run=False` also journals the verdict (`replay.recorded`) in the run's chain.
        """
        entries = await self.audit.get_by_run(run_id)
        result = replay_entries(entries, self._env_for, inputs)
        if not dry_run:
            await self._shell.record_replay(run_id, result)
        return result

    async def debug(self, run_id: str) -> Debugger:
        return Debugger(await self.audit.get_by_run(run_id), self._env_for)

    # ---- manual clock ------------------------------------------------------------------------
    def _manual(self) -> None:
        if self.config.scheduler.clock != "manual":
            raise ClockModeError("advance_clock and run_until_idle need scheduler.clock = 'manual'")

    async def advance_clock(self, ticks: int) -> None:
        self._manual()
        if ticks < 0:
            raise ValueError("the clock only moves forward")
        await self._shell.advance_clock(ticks)

    async def run_until_idle(self) -> None:
        self._manual()
        await self._shell.run_until_idle()


def _in_range(state: Any, chain: list[AuditEntry], after: int | datetime | None, before: int | datetime | None) -> bool:
    for bound, later in ((after, True), (before, False)):
        if bound is None:
            continue
        if isinstance(bound, int):
            value: Any = state.start_tick
        else:
            value, bound = chain[0].timestamp if chain else "", bound.isoformat()
        if (value <= bound) if later else (value >= bound):
            return False
    return True
