"""The Engine facade (SPEC section 3.1): what applications call.

`Engine(config)` is an async context manager over one of two backends, chosen by the
`database` URL: `postgresql://...` talks to the daemons (writes are stream messages answered
after commit, reads come from Postgres; with `scheduler=True` this process also owns partitions
and advances ticks), `memory://` runs the whole engine in this process with nothing to install.
The facade itself only converts arguments, replays and projects; backends store and schedule.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import groupby
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from dee.backends.base import Backend
from dee.config import EngineConfig
from dee.errors import ClockModeError, ConfigError, ContactErasedError, ErasureReasonError, RunNotFoundError
from dee.kernel.audit import AuditEntry, ChainVerification, verify_chain
from dee.kernel.contact import Contact
from dee.kernel.debug import Debugger
from dee.kernel.inputs import AnyInput
from dee.kernel.recorded import entered_contexts
from dee.kernel.replay import ReplayResult, start_of
from dee.kernel.timeline import TimelineEntry, timeline
from dee.plan.model import Plan
from dee.plugin.manager import CHANNELS, PluginManager
from dee.project.templates import ChainedTemplateStore, load_directory
from dee.records import BulkError, BulkResult, ConsentRecord, Erasure, ExecutionRun, NumberImport, RunPage, Suppression
from dee.redact import redact
from dee.reports.compliance import RUN_ENDINGS, CallingRules, ComplianceReport, Reading, RunFacts, build_report, run_facts, step_channels
from dee.reports.export import ExportFormat
from dee.reports.export import render as render_export
from dee.shell.numbers import Listing
from dee.shell.replayer import Replayer

CHAINS_PER_READ = 500  # runs whose audit logs verify_audit_chains reads in one go
REASON_CODE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # an erasure's reason, journaled in clear

ContactLike = Contact | Mapping[str, Any]


def as_contact(contact: ContactLike) -> Contact:
    return contact if isinstance(contact, Contact) else msgspec.convert(dict(contact), Contact)


OpenRun = Callable[[str, list[AuditEntry]], tuple[list[AuditEntry], bool]]  # `AuditAccess.opener`'s


def open_chains(open_run: OpenRun, entries: list[AuditEntry]) -> list[AuditEntry]:
    """Entries of many runs (each run's together, in chain order) opened run by run."""
    return [e for run_id, group in groupby(entries, key=lambda e: e.run_id) for e in open_run(run_id, list(group))[0]]


class AuditAccess:
    """`engine.audit`: read access to audit chains."""

    def __init__(self, engine: Engine) -> None:
        self._backend = engine._backend

    async def get_by_run(self, run_id: str) -> list[AuditEntry]:
        """The run's entries, sealed contact data opened (`{"erased": true}` in its place once
        the contact was erased)."""
        entries, _ = await self.opened(run_id, await self._backend.audit_entries(run_id))
        return entries

    async def opener(self, run_ids: Iterable[str]) -> OpenRun:
        """Opens entries of these runs as readers see them (and says whether the run's contact
        was erased), their keys read in one query: for readers that walk many runs."""
        keys = await self._backend.run_keys(sorted(set(run_ids)))
        vault = self._backend.vault

        def open_run(run_id: str, entries: list[AuditEntry]) -> tuple[list[AuditEntry], bool]:
            return vault.open(entries, *keys.get(run_id, (None, None)))

        return open_run

    async def opened(self, run_id: str, entries: list[AuditEntry]) -> tuple[list[AuditEntry], bool]:
        """A run's entries as readers see them, and whether its contact was erased."""
        return (await self.opener([run_id]))(run_id, entries)

    async def opened_many(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        """Entries of many runs (in runs' chain order) as readers see them."""
        return open_chains(await self.opener(e.run_id for e in entries), entries)

    async def query(
        self,
        run_id: str | None = None,
        actions: Sequence[str] | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[AuditEntry]:
        return await self.opened_many(await self._backend.audit_query(run_id, list(actions) if actions else None, from_tick, to_tick))

    async def get_context_at(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        """The execution context the step saw when it was (last) entered (folded from the
        records the log keeps of it: `dee.kernel.recorded`); ContactErasedError once the
        run's contact was erased."""
        entries, gone = await self.opened(run_id, await self._backend.audit_entries(run_id))
        if gone:
            raise ContactErasedError(run_id)
        seen = None
        for entry, context in entered_contexts(entries):
            if entry.step_id == step_id:
                seen = context
        return seen

    async def export(self, run_id: str, format: ExportFormat = "json", output: str | os.PathLike[str] | None = None) -> bytes:
        """The run's audit log as JSON (every entry, the chain included) or as a PDF report (the
        run, the chain's status, the timeline); also written to `output` when given. The chain is
        verified over the entries as stored (sealed); the document shows them opened."""
        stored = await self._backend.audit_entries(run_id)
        run = await self._backend.get_run(run_id)
        chain = verify_chain(stored, *await self._backend.chain_head(run_id))
        entries, _ = await self.opened(run_id, stored)
        plan = (await self._backend.compiled(run.plan_id, run.plan_version)).plan
        document = render_export(format, run, chain, stored, plan, entries)
        if output is not None:
            await asyncio.to_thread(Path(output).write_bytes, document)
        return document


class ComplianceAccess:
    """`engine.compliance`: reports over what the engine recorded."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def report(self, period_from: int, period_to: int) -> ComplianceReport:
        """Sends by channel with the consent in force at each, suppressions, every call against
        the calling hours (its local time from its tick), what the policy gates decided
        (verdicts by gate, deferrals, refusals), unsubscribe processing, and the chain of every
        run touched, for the ticks `period_from`..`period_to` (both included)."""
        if period_to < period_from:
            raise ValueError(f"the period ends (tick {period_to}) before it begins (tick {period_from})")
        backend, config = self._engine._backend, self._engine.config
        entries = await backend.audit_query(None, None, period_from, period_to)
        endings = await backend.audit_query(None, list(RUN_ENDINGS), period_from, None)
        run_ids = sorted({e.run_id for e in entries})
        contacts = await backend.contacts_of(run_ids)
        consents = await backend.consents_until(sorted({c.id for c in contacts.values()}), period_to)
        suppressions = await backend.suppressions_between(period_from, period_to)
        chains: dict[str, ChainVerification] = {}
        runs: dict[str, RunFacts] = {}
        open_run = await self._engine.audit.opener([*run_ids, *(e.run_id for e in endings)])
        entries, endings = open_chains(open_run, entries), open_chains(open_run, endings)
        async for run_id, log, verdict in self._engine.read_chains(run_ids):  # the epoch and later sends are there
            chains[run_id] = verdict
            facts = run_facts(open_run(run_id, log)[0])
            if facts is not None:
                runs[run_id] = facts
        plans = sorted({(f.plan_id, f.plan_version) for f in runs.values()})
        channels = {plan: step_channels(await backend.compiled(*plan)) for plan in plans}
        policy = config.policy
        rules = CallingRules(config.channels.voice.calling_hours, policy.calling_days, policy.holidays,
                             policy.default_timezone, config.scheduler.tick_interval_ms)  # fmt: skip
        read = Reading(entries, endings, contacts, consents, suppressions, chains, runs, channels)
        return build_report((period_from, period_to), read, rules)


def template_store(config: EngineConfig, plugins: PluginManager) -> ChainedTemplateStore:
    """The project's templates (if it has a project), then those plugins provide: what steps
    render from."""
    project = config.project_dir()
    local = [load_directory(project)] if project is not None else []
    return ChainedTemplateStore([*local, *plugins.template_stores(config).values()])


class Engine:
    """The DEE API. `Engine(config)` with a PostgreSQL database is a client of running daemons:
    it publishes commands and reads Postgres, and owns no partition. `scheduler=True` also runs
    a daemon in this process (owns partitions, advances ticks, dispatches). A `memory://`
    engine is a whole deployment in this process, so it always schedules."""

    def __init__(
        self, config: EngineConfig | None = None, *, scheduler: bool | None = None, plugins: PluginManager | None = None
    ) -> None:
        self.config = config or EngineConfig()
        memory = self.config.database.startswith("memory:")
        if memory and scheduler is False:
            raise ConfigError("a memory:// engine is its own deployment: there are no daemons it could be a client of")
        self.scheduler = memory if scheduler is None else scheduler
        self.plugins = plugins or PluginManager.load(disabled=self.config.plugins.disabled)
        self.templates = template_store(self.config, self.plugins)
        self.plugins.webhook_receivers(self.config)  # served by the ingress; a broken one stops every start, as other hooks do
        # a client sends nothing itself (only a replay with dry_run=False does, and it asks then)
        adapters = self.plugins.selected_adapters(self.config) if self.scheduler else None
        self._adapters = adapters or {}
        if memory:
            from dee.backends.memory import MemoryBackend

            assert adapters is not None
            self._backend: Backend = MemoryBackend(self.config, self.plugins, self.templates, adapters)
        elif self.config.database.startswith(("postgres://", "postgresql://")):
            from dee.backends.daemon import DaemonBackend

            self._backend = DaemonBackend(self.config, self.plugins, self.templates, adapters, self.scheduler)
        else:
            raise ConfigError(f"database {redact(self.config.database)!r}: expected postgresql://... or memory://")
        self.replayer = Replayer(self.config, self.plugins, self.templates, self._backend.compiled)
        self.audit = AuditAccess(self)
        self.compliance = ComplianceAccess(self)

    async def __aenter__(self) -> Engine:
        try:
            await self._backend.start()
        except BaseException:
            await self._backend.stop()  # close what was opened before the failure
            raise
        self.plugins.startup(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.plugins.shutdown(self)
        await self._backend.stop()
        for adapter in self._adapters.values():  # an adapter holding connections closes them
            close = getattr(adapter, "close", None)
            if close is not None:
                await close()

    @property
    def current_tick(self) -> int:
        return self._backend.current_tick

    async def now_tick(self) -> int:
        """The deployment's current tick, read afresh (a manual clock another process moves)."""
        return await self._backend.now_tick()

    @property
    def link_keys(self) -> tuple[bytes, ...]:
        """The keys link tokens are signed with (current first), once the engine is started."""
        return self._backend.config.ingress.link_keys()

    # ---- runs ----------------------------------------------------------------------------
    async def execute(
        self,
        plan: Plan,
        contact: ContactLike,
        variables: Mapping[str, Any] | None = None,
        start_at: int | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionRun:
        version = await self._backend.register(plan)
        run_id = await self._backend.execute(plan.id, version, as_contact(contact), dict(variables or {}), start_at, idempotency_key)
        return await self.get_run(run_id)

    async def bulk_execute(
        self, plan: Plan, contacts: Iterable[ContactLike], variables: Mapping[str, Any] | None = None, batch_size: int = 100
    ) -> BulkResult:
        """Enrol many contacts; `skipped` counts the already enrolled and the suppressed."""
        version = await self._backend.register(plan)
        valid: list[Contact] = []
        invalid: list[BulkError] = []
        for raw in contacts:
            try:
                valid.append(as_contact(raw))
            except (msgspec.ValidationError, TypeError) as exc:  # one bad contact never stops the batch
                cid = raw.get("id") if isinstance(raw, Mapping) else None
                invalid.append(BulkError(str(cid), f"invalid contact: {exc}"))
        result = await self._backend.bulk_execute(plan.id, version, valid, dict(variables or {}), batch_size)
        return msgspec.structs.replace(result, errors=[*invalid, *result.errors]) if invalid else result

    async def get_run(self, run_id: str) -> ExecutionRun:
        return await self._backend.get_run(run_id)

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
        """Runs matching every given filter, ordered by run id (creation order). Ticks compare
        with the start tick, datetimes with the wall-clock start."""
        statuses = [status] if isinstance(status, str) else list(status) if status else None
        return await self._backend.list_runs(statuses, plan_id, contact_id, started_after, started_before, limit, offset)

    async def pause_run(self, run_id: str) -> None:
        await self._backend.command(run_id, "pause")

    async def resume_run(self, run_id: str) -> None:
        await self._backend.command(run_id, "resume")

    async def cancel_run(self, run_id: str, reason: str) -> None:
        await self._backend.command(run_id, "cancel", reason)

    async def retry_run(self, run_id: str) -> None:
        await self._backend.command(run_id, "retry")

    async def bulk_cancel(self, filters: Mapping[str, Any], reason: str) -> int:
        """Cancel every non-terminal run matching `list_runs`-style filters; returns how many."""
        filters = dict(filters)
        status = filters.get("status") or ["pending", "active", "waiting", "paused", "failed"]
        filters["status"] = [status] if isinstance(status, str) else list(status)
        return await self._backend.bulk_cancel(filters, reason)

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
        """Accept an event durably; returns the runs it was routed to. The same `event_id` again
        is not applied again and gets the answer of its first delivery (safe client retries)."""
        when = occurred_at.isoformat() if isinstance(occurred_at, datetime) else occurred_at
        return await self._backend.ingest_event(type, contact_id, dict(data or {}), when, run_id, step_id, event_id, message_id)

    async def suppress(
        self, contact_id: str, level: str, reason: str, source: str, channel: str | None = None, plan_id: str | None = None
    ) -> int:
        """Add a suppression; the runs it covers are cancelled. Returns how many."""
        entry = msgspec.convert(
            {"contact_id": contact_id, "level": level, "reason": reason, "source": source,
             "channel": channel, "plan_id": plan_id}, Suppression)  # fmt: skip
        return await self._backend.suppress(entry)

    async def suppress_numbers(
        self, numbers: Iterable[str], level: str = "regulatory", channel: str | None = "voice", source: str = "dnc",
        reason: str = "do-not-call list",
    ) -> NumberImport:  # fmt: skip
        """List phone numbers (a do-not-call list: E.164, or any form with its country code;
        `dee.ops.dnc_file` reads files) and suppress every contact with one of them, enrolled
        before or after. With a channel (voice, the default) that channel's sends are refused
        and the runs go on (a do-not-call list forbids calls, not emails); with `channel=None`
        the contacts are suppressed on every channel: their runs cancelled, new ones refused.

        Idempotent: a number listed before (same level and channel) is counted as listed, and a
        contact suppressed before is not suppressed again, so importing a list twice changes
        nothing; an import cut short is finished by running it again. The numbers are read in
        batches (a national list streams through); a number that is not one raises
        InvalidNumberError before anything of its batch is listed."""
        listing = Listing.of(level, channel, source, reason, CHANNELS)
        return await self._backend.suppress_numbers(numbers, listing)

    async def record_consent(self, record: ConsentRecord) -> None:
        """Store a consent record (enforced by the policy gates)."""
        await self._backend.record_consent(record)

    async def erase_contact(self, contact_id: str, reason: str) -> Erasure:
        """Erase the contact's personal data (GDPR art. 17) by destroying its key: its runs are
        scrubbed (those still going cancelled, outcome `erased`), its audit entries stay sealed
        and verifiable but unreadable, and each run journals `contact.erased` with the contact
        id, `reason` (a code, never free text) and the tick. Erasing again changes nothing."""
        if not REASON_CODE.fullmatch(reason):
            raise ErasureReasonError(reason)
        if not contact_id:
            raise ValueError("name the contact to erase")
        return await self._backend.erase_contact(contact_id, reason)

    # ---- audit, replay, debug ----------------------------------------------------------------
    async def get_timeline(self, run_id: str) -> list[TimelineEntry]:
        return timeline(await self.audit.get_by_run(run_id))

    async def verify_audit_chain(self, run_id: str) -> ChainVerification:
        seq, head = await self._backend.chain_head(run_id)
        return verify_chain(await self._backend.audit_entries(run_id), seq, head)

    async def verify_audit_chains(self, run_ids: Sequence[str]) -> dict[str, ChainVerification]:
        """`verify_audit_chain` for many runs, read `CHAINS_PER_READ` runs at a time (two
        queries each time, not two per run)."""
        return {run_id: verdict async for run_id, _, verdict in self.read_chains(run_ids)}

    async def read_chains(self, run_ids: Sequence[str]) -> AsyncIterator[tuple[str, list[AuditEntry], ChainVerification]]:
        """Each run's audit log with its verification, read `CHAINS_PER_READ` runs at a time."""
        for start in range(0, len(run_ids), CHAINS_PER_READ):
            read = await self._backend.chains(list(run_ids[start : start + CHAINS_PER_READ]))
            for run_id, (entries, seq, head) in read.items():
                yield run_id, entries, verify_chain(entries, seq, head)

    async def _entries(self, run_id: str) -> tuple[list[AuditEntry], bool]:
        entries, gone = await self.audit.opened(run_id, await self._backend.audit_entries(run_id))
        if not entries:
            raise RunNotFoundError(run_id)
        return entries, gone

    async def replay(self, run_id: str, dry_run: bool = True, inputs: Sequence[AnyInput] | None = None) -> ReplayResult:
        """Re-execute the run from its audit log with today's code and templates, and compare.

        `inputs` replaces the recorded inputs (a what-if); `dry_run=False` re-issues the channel
        actions with their original keys and journals the verdict (`replay.recorded`).
        """
        entries, gone = await self._entries(run_id)
        if gone:  # the recorded inputs are erased with the contact: nothing to re-execute or compare
            return ReplayResult(False, [], [], erased=True)
        result = await self.replayer.replay_run(entries, inputs)
        if not dry_run:
            await self._backend.record_replay(run_id, result)
        return result

    async def debug(self, run_id: str) -> Debugger:
        entries, gone = await self._entries(run_id)
        if gone:
            raise ContactErasedError(run_id)
        env = await self.replayer.env_for(start_of(entries))
        return Debugger(entries, lambda _start: env)

    # ---- manual clock ------------------------------------------------------------------------
    def _manual(self) -> None:
        if self.config.scheduler.clock != "manual":
            raise ClockModeError("advance_clock and run_until_idle need scheduler.clock = 'manual'")

    async def advance_clock(self, ticks: int) -> None:
        """Move the deployment's logical time forward, processing every tick where something is due."""
        self._manual()
        if ticks < 0:
            raise ValueError("the clock only moves forward")
        await self._backend.advance_clock(ticks)

    async def run_until_idle(self) -> None:
        """Return when every partition processed up to the clock and nothing is due or in flight."""
        self._manual()
        await self._backend.run_until_idle()
