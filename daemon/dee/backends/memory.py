"""The memory backend: a whole deployment in this process, running the daemon's own rules.

Writes are the same wire messages a daemon receives; each is taken in by the shell's intake
and applied by the shell's tick over a `MemoryStore`, exactly as a partition worker does over
PostgreSQL, only without I/O: what `dee simulate --memory`, the examples and the unit tests of
the API use. Channel actions go to the adapters when the engine runs (`run_until_idle`,
`advance_clock`, or each tick of a wall clock), and their answers come back as `result`
messages, as from a dispatcher; deliverability limits and budgets admit each action first, with
the daemon's rules, on counters in this process and the engine's simulated time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from dee.backends.client import Publisher
from dee.bus import messages as wire
from dee.config import EngineConfig
from dee.errors import EngineUnavailableError
from dee.ids import MonotonicUlid, now_iso
from dee.kernel.audit import AuditEntry
from dee.kernel.contact import Contact
from dee.limits.counters import MemoryLimiter, SendClock
from dee.limits.rules import Rules
from dee.plan.compiled import CompiledPlan
from dee.plan.model import Plan
from dee.plan.prepare import prepare_plan
from dee.plan.registry import PlanRegistry
from dee.plugin.contracts import ChannelAdapter, TemplateStore
from dee.plugin.manager import PluginManager
from dee.privacy.keys import master_key
from dee.privacy.vault import Vault
from dee.records import ConsentRecord, ExecutionRun, RunPage, Suppression, run_view
from dee.shell import dispatch
from dee.shell.envs import KernelEnvs
from dee.shell.intake import accept
from dee.shell.numbers import Listed, Listing
from dee.shell.tick import Advanced, advance_due
from dee.stores.memory import MemoryStore

REPLY_TO = "memory"  # replies are handed back in-process; any non-empty stream name asks for one


class MemoryBackend(Publisher):
    def __init__(
        self, config: EngineConfig, plugins: PluginManager, templates: TemplateStore,
        adapters: Mapping[str, ChannelAdapter],
    ) -> None:  # fmt: skip
        super().__init__()
        gates = plugins.policy_gates(config).values()
        self.config = config = config.with_link_key(os.urandom(32).hex())  # links of this process only
        self.plugins = plugins
        self.templates = templates
        self._adapters = dict(adapters)
        self.partitions = config.scheduler.partitions
        self.reply_stream = REPLY_TO
        self.cap = config.scheduler.max_runs_per_tick
        self.store = MemoryStore(self.partitions, config.scheduler.epoch_ms(int(time.time() * 1000)))
        self.registry = PlanRegistry()
        self.envs = KernelEnvs(config, templates, gates)
        self.current_tick = 0
        self._new_id = MonotonicUlid()  # audit entry ids
        self._clock_task: asyncio.Task[None] | None = None
        self._result_key = os.urandom(32)  # what the in-process dispatch signs its results with
        rules = Rules.of(config.policy.deliverability, config.policy.budgets)
        clock = SendClock(self.store.epoch_ms, config.scheduler.tick_interval_ms)  # simulated time, whatever the clock
        self.limits = None if rules is None else MemoryLimiter(rules, clock)
        # this process owns every partition: one vault seals and opens (a master key of its own, or the file's)
        self.vault = Vault.of(config.privacy, master_key(config.privacy, None))

    @property
    def adapters(self) -> Mapping[str, ChannelAdapter]:
        return self._adapters

    async def now_tick(self) -> int:
        return self.current_tick

    async def list_numbers(self, listing: Listing, numbers: Sequence[str], tick: int) -> Listed:
        return self.store.list_numbers(listing, numbers)

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.config.scheduler.clock == "wall":
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
        step_types = self.plugins.step_types()
        compiled = prepare_plan(plan, step_types, self.templates)
        registered = self.registry.register(compiled.plan)
        key = (registered.id, registered.version or 0)
        if key not in self.store.plans:
            self.store.plans[key] = prepare_plan(registered, step_types, None)
        return key[1]

    async def compiled(self, plan_id: str, version: int) -> CompiledPlan:
        return self.store.plans[(plan_id, version)]

    # ---- the partitions ------------------------------------------------------------------
    async def send(self, partition: int, message: wire.Inbound, timeout: float | None = None) -> wire.Reply:
        """Take the message in at the current tick; a command is answered once the kernel has
        applied it, so its partition ticks until then (runs over the cap wait their turn)."""
        answers = await self._take_in(partition, [message])
        while message.command_id not in answers:
            done = await self._tick(partition)
            answers.update({reply.command_id: reply for _, reply in done.replies})
            if not done.states and message.command_id not in answers:
                raise EngineUnavailableError(partition, f"{type(message).__name__} {message.command_id} was not answered")
        return answers[message.command_id]

    async def _take_in(self, partition: int, messages: Sequence[wire.Inbound]) -> dict[str, wire.Reply]:
        store = self.store.partition(partition)
        intake = await accept(store, self.current_tick, messages, now_iso(), self._new_id, self.partitions, self._result_key,
                              self.envs.history_ticks, self.vault)  # fmt: skip
        intake.settle(await store.add_runs(intake.runs, intake.audit))
        await store.store_replies([reply for _, reply in intake.replies])
        await store.queue(intake.inputs)
        return {reply.command_id: reply for _, reply in [*intake.replies, *intake.duplicates]}

    async def _tick(self, partition: int) -> Advanced:
        store = self.store.partition(partition)
        done = await advance_due(store, self.envs, self.current_tick, self.cap, [], now_iso(), self._new_id, self.vault)
        await store.append_audit(done.audit)
        await store.add_outbox(done.outbox)
        await store.store_replies([reply for _, reply in done.replies])
        return done

    async def run_until_idle(self) -> None:
        """Process the current tick until nothing is due and nothing is in flight: every
        partition with work ticks, then every channel action is sent and its answer taken in."""
        while True:
            busy = [p for p in range(self.partitions) if self.store.has_work(p, self.current_tick)]
            if not busy and not self.store.outbox:
                return
            for partition in busy:
                await self._tick(partition)
            await self._dispatch_all()

    async def _dispatch_all(self) -> None:
        while self.store.outbox:
            _, item = self.store.outbox.popleft()
            refusal = None if self.limits is None else await self.limits.admit(item.request)
            if refusal is not None:
                response = dispatch.refused(refusal)
            else:
                response = await dispatch.send(self._adapters[item.request.channel], item)
            await self._take_in(item.partition, [dispatch.result_message(item, response, self._result_key)])

    async def advance_clock(self, ticks: int) -> None:
        """Move logical time forward, stopping at every tick where a timer is due."""
        target = self.current_tick + ticks
        await self.run_until_idle()
        while True:
            wakes = [w for p in range(self.partitions) if (w := self.store.next_wake(p)) is not None]
            if not wakes or min(wakes) > target:
                break
            self.current_tick = max(self.current_tick, min(wakes))
            await self.run_until_idle()
        self.current_tick = target
        await self.run_until_idle()

    # ---- reads -------------------------------------------------------------------------
    async def partition_of_run(self, run_id: str) -> int:
        self.store.state(run_id)
        return self.store.partition_of[run_id]

    async def get_run(self, run_id: str) -> ExecutionRun:
        state = self.store.state(run_id)
        chain = self.store.audit[run_id]
        completed = chain[-1].timestamp if state.terminal and chain else None
        plan = self.store.plans[(state.plan_id, state.plan_version)]
        return run_view(state, plan, self.store.started_at.get(run_id), completed)

    async def list_runs(
        self, statuses: list[str] | None, plan_id: str | None, contact_id: str | None,
        started_after: int | datetime | None, started_before: int | datetime | None, limit: int, offset: int,
    ) -> RunPage:  # fmt: skip
        matched = []
        for run_id in sorted(self.store.runs):
            s = self.store.runs[run_id]
            if (statuses and s.status not in statuses) or (plan_id and s.plan_id != plan_id):
                continue
            if contact_id and s.contact.id != contact_id:
                continue
            started = self.store.started_at.get(run_id, "")
            if not (_after(s.start_tick, started, started_after) and _after(s.start_tick, started, started_before, before=True)):
                continue
            matched.append(run_id)
        return RunPage([await self.get_run(r) for r in matched[offset : offset + limit]], len(matched))

    async def audit_entries(self, run_id: str) -> list[AuditEntry]:
        self.store.state(run_id)
        return list(self.store.audit[run_id])

    async def audit_query(
        self, run_id: str | None, actions: list[str] | None, from_tick: int | None, to_tick: int | None
    ) -> list[AuditEntry]:
        chains = [self.store.audit[run_id]] if run_id else [self.store.audit[r] for r in sorted(self.store.audit)]
        return [
            e for chain in chains for e in chain
            if (actions is None or e.action in actions)
            and (from_tick is None or e.tick >= from_tick) and (to_tick is None or e.tick <= to_tick)
        ]  # fmt: skip

    async def chain_head(self, run_id: str) -> tuple[int, str]:
        state = self.store.state(run_id)
        return state.seq, state.audit_head

    async def chains(self, run_ids: list[str]) -> dict[str, tuple[list[AuditEntry], int, str]]:
        return {run_id: (list(self.store.audit[run_id]), *await self.chain_head(run_id)) for run_id in run_ids}

    async def run_keys(self, run_ids: list[str]) -> dict[str, tuple[str, bytes | None]]:
        runs = self.store.runs
        return {r: (c, self.store.contact_keys.get(c)) for r in run_ids if r in runs for c in [runs[r].contact.id]}

    async def contacts_of(self, run_ids: list[str]) -> dict[str, Contact]:
        return {run_id: self.store.runs[run_id].contact for run_id in run_ids if run_id in self.store.runs}

    async def consents_until(self, contact_ids: list[str], tick: int) -> list[ConsentRecord]:
        wanted = set(contact_ids)
        return [c for c in self.store.consents if c.contact_id in wanted and (c.tick or 0) <= tick]

    async def suppressions_between(self, from_tick: int, to_tick: int) -> list[Suppression]:
        return [s for s in self.store.suppressions if from_tick <= s.tick <= to_tick]


def _after(start_tick: int, started_at: str, bound: int | datetime | None, before: bool = False) -> bool:
    """Whether a run's start is after (or, `before`, before) a tick or a datetime bound."""
    if bound is None:
        return True
    if isinstance(bound, int):
        return start_tick < bound if before else start_tick > bound
    limit = bound.isoformat()
    return started_at < limit if before else started_at > limit
