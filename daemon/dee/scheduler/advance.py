"""The tick's kernel half: advance a partition's due runs and stage what they wrote.

`advance_due` runs inside the tick transaction. It takes the due runs (ordered by run id, at
most `max_runs_per_tick`), gives each its queued inputs and then the ones accepted in the same
transaction, calls the kernel, seals the entries it drafted and writes the runs; the caller
writes the audit rows and the outbox and answers after the commit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import msgspec

from dee.bus import messages as wire
from dee.config import EngineConfig
from dee.errors import error_fields
from dee.ids import now_iso
from dee.kernel.audit import AuditRow, seal_rows
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.inputs import AnyInput, ContactChanged
from dee.kernel.machine import KernelEnv, advance, quarantine
from dee.kernel.state import RunState
from dee.scheduler.intake import InboxRow
from dee.stores.postgres import rows
from dee.stores.postgres.plans import PlanCache

log = logging.getLogger("dee.worker")

# an input as the tick applies it: encoded body, the stream to answer on, the command id
Queued = tuple[bytes, str | None, str | None]


@dataclass
class Advanced:
    """What one tick's kernel half produced, for the rest of the transaction and after it."""

    states: list[RunState] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    outbox: list[rows.OutboxItem] = field(default_factory=list)
    replies: list[tuple[str, wire.Reply]] = field(default_factory=list)
    transitions: int = 0


class Advancer:
    """One per partition worker: its kernel environments (one per plan version) and ids."""

    def __init__(self, partition: int, config: EngineConfig, plans: PlanCache, new_id: Callable[[], str]) -> None:
        self.partition = partition
        self.config = config
        self.plans = plans
        self.new_id = new_id
        self.settings = config.kernel_settings()
        self._envs: dict[tuple[str, int], KernelEnv] = {}

    async def advance_due(self, conn: asyncpg.Connection, tick: int, fresh: list[InboxRow]) -> Advanced:
        """Advance the due runs through the kernel and write them. `fresh`: inputs accepted in
        this transaction, applied after the queued ones of the same run (and queued themselves
        when their run is over the cap)."""
        cap = self.config.scheduler.max_runs_per_tick
        due, queued = await rows.due_runs(conn, self.partition, tick, cap, sorted({row[0] for row in fresh}))
        pending = await rows.inbox_of(conn, self.partition, queued) if queued else []
        by_run: dict[str, list[Queued]] = defaultdict(list)
        for record in pending:
            by_run[record["run_id"]].append((record["body"], record["reply_to"], record["message_id"]))
        chosen = {s.run_id for s in due}
        over_cap: list[InboxRow] = []
        for row in fresh:
            if row[0] in chosen:
                by_run[row[0]].append((row[2], row[3], row[4]))
            else:
                over_cap.append(row)
        stamp = now_iso()
        done = Advanced()
        flagged: list[ContactFlagged] = []
        for state in due:
            records = by_run.get(state.run_id, [])
            inputs: list[AnyInput] = [rows.decode_input(body) for body, _, _ in records]
            try:
                result = advance(state, inputs, tick, await self._env(conn, state))
            except Exception as exc:  # a kernel or plugin bug must stop this run, not the partition
                log.exception("run %s: advance raised; the run is stopped", state.run_id)
                result = quarantine(state, f"{type(exc).__name__}: {exc}", tick)
            sealed = seal_rows(result.entries, state.audit_head, stamp, self.new_id)
            new_state = msgspec.structs.replace(result.state, audit_head=sealed[-1].checksum) if sealed else result.state
            done.states.append(new_state)
            done.audit.extend(sealed)
            done.transitions += sum(1 for e in result.entries if e.action == "step.entered")
            rejected = {getattr(r.input, "command_id", None): r for r in result.rejected}
            for _, reply_to, command_id in records:
                if reply_to and command_id:
                    refusal = rejected.get(command_id)
                    if refusal is None:
                        reply = wire.Reply(command_id, True, run_id=state.run_id)
                    else:
                        error = refusal.error(state.run_id)
                        reply = wire.Reply(command_id, False, type(error).__name__, str(error),
                                           state.run_id, details=error_fields(error))  # fmt: skip
                    done.replies.append((reply_to, reply))
            for effect in result.effects:
                if isinstance(effect, DispatchRequest):
                    done.outbox.append(rows.OutboxItem(self.partition, state.contact.id, effect))
                elif isinstance(effect, ContactFlagged):
                    flagged.append(effect)
        await rows.delete_inbox(conn, [r["seq"] for r in pending])
        await rows.add_inbox(conn, self.partition, over_cap)
        await rows.update_runs(conn, done.states)
        await self._fan_out(conn, tick, flagged)
        return done

    async def _env(self, conn: asyncpg.Connection, state: RunState) -> KernelEnv:
        key = (state.plan_id, state.plan_version)
        env = self._envs.get(key)
        if env is None:  # one per plan version: everything in it is configuration
            env = self._envs[key] = KernelEnv(
                plan=await self.plans.get(conn, *key), templates=self.plans.templates,
                tick_interval_ms=self.config.scheduler.tick_interval_ms, settings=self.settings,
                message_domain=self.config.message_domain,
            )  # fmt: skip
        return env

    async def _fan_out(self, conn: asyncpg.Connection, tick: int, flagged: list[ContactFlagged]) -> None:
        """A contact flag set by one run (hard bounce) reaches the contact's other runs."""
        for effect in flagged:
            await conn.execute(
                f"UPDATE contacts SET {effect.flag} = true, updated_tick = $2 WHERE contact_id = $1",
                effect.contact_id, tick,
            )  # fmt: skip
            others = await conn.fetch(
                f"SELECT run_id FROM runs WHERE contact_id = $1 AND status NOT IN {rows.TERMINAL_SQL}", effect.contact_id
            )
            body = rows.encode_input(ContactChanged(tick, **{effect.flag: True}))
            await rows.add_inbox(conn, self.partition, [(r["run_id"], tick, body, None, None) for r in others])

