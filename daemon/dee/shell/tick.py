"""The tick: advance a partition's due runs through the kernel and stage what they wrote.

At tick T the partition takes the runs that have an input queued or a timer due, ordered by run
id, at most `max_runs_per_tick` of them (runs over the cap are taken first on the next tick;
their inputs keep their own ticks, so load never changes a trace). Each run gets its queued
inputs, then those accepted in the same batch; the kernel advances it; the shell seals the
entries it drafted into the run's chain and stores the run. The caller writes the audit rows
and the outbox, and answers after the commit.

When a gate counts a contact's sends (`KernelEnvs.history_ticks`), every message a run sends
reaches the contact's other runs as a `SendsNoted` input: at once for those advanced later in
the same tick (so two runs of one contact due together are counted exactly), queued for the
others; and it is kept in the store for the contact's later enrolments.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dee.bus import messages as wire
from dee.errors import error_fields
from dee.kernel.audit import AuditRow, EntryDraft, seal_rows
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.inputs import AnyInput, ContactChanged, SendsNoted
from dee.kernel.machine import Advance, advance, quarantine
from dee.kernel.policy import SentMark
from dee.kernel.state import RunState
from dee.privacy.vault import Vault
from dee.shell.envs import KernelEnvs
from dee.shell.store import OutboxItem, PartitionStore, Queued
from dee.shell.tally import Tally

log = logging.getLogger("dee.tick")


@dataclass
class Advanced:
    """What one tick produced, for the rest of the transaction and after it."""

    states: list[RunState] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    outbox: list[OutboxItem] = field(default_factory=list)
    replies: list[tuple[str, wire.Reply]] = field(default_factory=list)
    refused: list[wire.Reply] = field(default_factory=list)  # every command a run refused, replyTo or not
    tally: Tally = field(default_factory=Tally)  # what the runs did, for the metrics


async def advance_due(
    store: PartitionStore, envs: KernelEnvs, tick: int, cap: int, fresh: Sequence[Queued], stamp: str,
    new_id: Callable[[], str], vault: Vault | None = None,
) -> Advanced:  # fmt: skip
    """Advance the due runs and store them. `fresh`: inputs accepted in this same batch, applied
    after the queued ones of their run (and queued themselves when their run is over the cap).
    With a `vault`, each run's entries are sealed with its contact's key (one that has a key)."""
    due, queued = await store.due(tick, cap, sorted({q.run_id for q in fresh}))
    pending = await store.queued(sorted(queued)) if queued else []
    by_run: dict[str, list[Queued]] = defaultdict(list)
    for _, item in pending:
        by_run[item.run_id].append(item)
    chosen = {s.run_id for s in due}
    over_cap: list[Queued] = []
    for item in fresh:
        (by_run[item.run_id] if item.run_id in chosen else over_cap).append(item)
    keys = await vault.keys(store, [s.contact.id for s in due], create=False) if vault and due else {}
    done = Advanced()
    flagged: list[ContactFlagged] = []
    sends = _Sends(envs.history_ticks)
    for state in due:
        items = by_run.get(state.run_id, [])
        env = envs.cached(state.plan_id, state.plan_version) or await envs.get(state.plan_id, state.plan_version, store.plan)
        inputs: list[AnyInput] = [q.input for q in items]
        if sends.horizon:
            inputs += sends.for_run(state, tick)
        try:
            result = advance(state, inputs, tick, env)
        except Exception as exc:  # a kernel or plugin bug must stop this run, not the partition
            log.exception("run %s: advance raised; the run is stopped", state.run_id, extra={"run_id": state.run_id})
            result = quarantine(state, f"{type(exc).__name__}: {exc}", tick)
        entries = vault.seal(result.entries, keys.get(state.contact.id)) if vault else result.entries
        _collect(done, state, result, entries, items, stamp, new_id, store.partition, flagged)
        done.tally.add(result, env.plan)
        if sends.horizon:
            sends.sent_by(state, result)
    await store.consume([seq for seq, _ in pending])
    await store.queue(over_cap)
    await store.save_runs(done.states)
    await _fan_out(store, tick, flagged)
    if sends.made:
        await sends.fan_out(store, tick)
    return done


class _Sends:
    """The messages runs sent in this tick, and which runs of their contact know of them."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.made: dict[str, list[tuple[SentMark, str]]] = defaultdict(list)  # contact -> (mark, the run that sent it)
        self.reached: dict[str, set[str]] = defaultdict(set)  # message id -> runs given it in this tick

    def for_run(self, state: RunState, tick: int) -> list[SendsNoted]:
        """The contact's messages sent earlier in this tick by its other runs, as an input."""
        earlier = [mark for mark, sender in self.made.get(state.contact.id, ()) if sender != state.run_id]
        for mark in earlier:
            self.reached[mark.message_id].add(state.run_id)
        return [SendsNoted(tick, tuple(earlier))] if earlier else []

    def sent_by(self, state: RunState, result: Advance) -> None:
        for effect in result.effects:
            if isinstance(effect, DispatchRequest) and effect.dispatch_no == 1:  # a retry is the same message
                mark = SentMark(effect.tick, effect.channel, effect.message_id, state.plan_id)
                self.made[state.contact.id].append((mark, state.run_id))

    async def fan_out(self, store: PartitionStore, tick: int) -> None:
        """Keep the tick's messages for later enrolments, and queue each for the contact's runs
        that have not seen it (those advanced before its sender in this tick, and those not due)."""
        await store.record_sends([(contact_id, mark) for contact_id, made in self.made.items() for mark, _ in made],
                                 tick - self.horizon)  # fmt: skip
        active = await store.active_runs(sorted(self.made))
        notes: list[Queued] = []
        for contact_id, made in sorted(self.made.items()):
            for run_id, _ in active.get(contact_id, ()):
                unseen = [m for m, sender in made if sender != run_id and run_id not in self.reached[m.message_id]]
                if unseen:
                    notes.append(Queued(run_id, SendsNoted(tick, tuple(unseen))))
        await store.queue(notes)


def _collect(
    done: Advanced, state: RunState, result: Advance, entries: Sequence[EntryDraft], items: list[Queued], stamp: str,
    new_id: Callable[[], str], partition: int, flagged: list[ContactFlagged],
) -> None:  # fmt: skip
    """Chain one run's entries (`result`'s, sealed or not), answer the commands it applied,
    stage its effects."""
    sealed = seal_rows(entries, state.audit_head, stamp, new_id)
    done.states.append(msgspec.structs.replace(result.state, audit_head=sealed[-1].checksum) if sealed else result.state)
    done.audit.extend(sealed)
    if result.rejected or any(item.reply_to for item in items):
        rejected = {getattr(r.input, "command_id", None): r for r in result.rejected}
        for item in items:
            if not item.command_id:
                continue
            refusal = rejected.get(item.command_id)
            if refusal is None:
                reply = wire.Reply(item.command_id, True, run_id=state.run_id)
            else:
                error = refusal.error(state.run_id)
                reply = wire.Reply(item.command_id, False, type(error).__name__, str(error), state.run_id,
                                   details=error_fields(error))  # fmt: skip
                done.refused.append(reply)  # a trace even without a replyTo: the worker dead-letters it
            if item.reply_to:
                done.replies.append((item.reply_to, reply))
    for effect in result.effects:
        if isinstance(effect, DispatchRequest):
            done.outbox.append(OutboxItem(partition, state.contact.id, effect))
        elif isinstance(effect, ContactFlagged):
            flagged.append(effect)


async def _fan_out(store: PartitionStore, tick: int, flagged: list[ContactFlagged]) -> None:
    """A contact flag set by one run (a hard bounce) is stored with the contact and reaches the
    contact's other runs as an input at the same tick."""
    for effect in flagged:
        await store.flag_contact(effect.contact_id, effect.flag, tick)
        flag: dict[str, Any] = {effect.flag: True}  # "bounced" or "unsubscribed": ContactChanged's fields
        change = ContactChanged(tick, **flag)
        await store.queue([Queued(run_id, change) for run_id in await store.runs_of_contact(effect.contact_id)])
