"""Intake: accepted wire messages become queued inputs (and new runs), at the partition's tick.

Every message is stamped with the partition's current tick. `execute` creates its run right
here (pending, with its `run.started` entry), so the reply can carry the run and enrolment
conflicts are found at once; commands are checked for existence and queued, and are answered
after the kernel applied them; events, suppressions and consents are answered once stored.
Duplicates (a commandId seen before) are not applied again and get the first reply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dee.bus import messages as wire
from dee.errors import CommandIdReusedError, DeeError, RunIdInUseError, RunNotFoundError, StartInPastError, UnknownPlanError, error_fields
from dee.kernel.audit import AuditRow
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
    Suppressed,
)  # fmt: skip
from dee.kernel.machine import contact_flag
from dee.kernel.policy import Consent, PolicyFacts
from dee.privacy.vault import Vault
from dee.records import ConsentRecord, Suppression, SuppressionLevel
from dee.routing import partition_for
from dee.shell.enrol import enrol
from dee.shell.erase import erase_contact, erase_enrolled
from dee.shell.numbers import channel_scope
from dee.shell.store import NewRun, PartitionStore, Queued

# a recipient who marked the mail as spam, or unsubscribed, is suppressed at once: every run of
# the contact stops and the suppression is on record (and in the compliance report)
SUPPRESSING_EVENTS = {"email.complained": "complaint", "email.unsubscribed": "unsubscribe"}


@dataclass
class Intake:
    """What accepting one batch produced: replies to send after the commit, inputs for runs,
    and the runs it enrolled."""

    tick: int
    partition: int
    replies: list[tuple[str, wire.Reply]] = field(default_factory=list)
    inputs: list[Queued] = field(default_factory=list)
    runs: list[NewRun] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    duplicates: list[tuple[str, wire.Reply]] = field(default_factory=list)  # retried commands' first replies
    # every message refused, with why (the worker dead-letters each: a refusal always leaves a
    # trace, with or without a replyTo); a refused message never uses up its commandId
    refused: list[tuple[wire.Inbound, str]] = field(default_factory=list)
    enrolled: dict[tuple[str, str], str] = field(default_factory=dict)
    known: dict[str, int] = field(default_factory=dict)  # run id -> partition, looked up once per batch
    contact_of: dict[str, str] = field(default_factory=dict)  # run id -> its contact, alongside `known`
    # contact id -> its active runs here as (run id, plan id) by run id, looked up once per batch
    # (and runs enrolled earlier in the batch): what a later message of the batch reaches
    active: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    looked_up: set[str] = field(default_factory=set)  # the contacts whose active runs `active` holds in full
    # contact id -> its policy facts, looked up once per batch for consents and channel
    # suppressions, and kept current as the batch records more
    facts: dict[str, PolicyFacts] = field(default_factory=dict)
    facts_read: set[str] = field(default_factory=set)  # the contacts whose facts were read (`facts` omits those with none)
    enrolments: list[tuple[wire.Execute | wire.ExecuteBatch, list[str]]] = field(default_factory=list)  # and the runs made
    history_ticks: int = 0  # how far back new runs get the contact's sends (`KernelEnvs.history_ticks`)
    vault: Vault | None = None  # seals new runs' entries with their contacts' keys (`dee.privacy`)

    def settle(self, inserted: set[str]) -> None:
        """Once `store.add_runs` returned the runs it inserted: an enrolment whose run lost a
        race at insert (its run id taken in another partition meanwhile, its contact and plan or
        its idempotency key enrolled by a concurrent writer) is refused, never answered ok."""
        for message, made in self.enrolments:
            lost = [run_id for run_id in made if run_id not in inserted]
            if not lost:
                continue
            answered = [(i, r) for i, (_, r) in enumerate(self.replies) if r.command_id == message.command_id and r.ok]
            for i, _ in reversed(answered):
                del self.replies[i]
            if isinstance(message, wire.Execute):
                self.refuse(message, RunIdInUseError(lost[0]), lost[0])
                continue
            # a batch was applied for its other contacts: its reply lists the lost ones as skipped
            skipped = [*(answered[0][1].skipped if answered else []), *(i.contact.id for i in message.items if i.run_id in lost)]
            self.reply(message, wire.Reply(message.command_id, True, runs=[r for r in made if r not in lost], skipped=skipped))

    def owns(self, run_id: str) -> bool:
        """Whether the run exists in this partition (enrolled before or earlier in this batch)."""
        return self.known.get(run_id) == self.partition

    def reply(self, message: wire.Message, reply: wire.Reply) -> None:
        if message.reply_to:
            self.replies.append((message.reply_to, reply))

    def refuse(self, message: wire.Inbound, error: DeeError, run_id: str | None = None) -> None:
        reply = wire.Reply(message.command_id, False, type(error).__name__, str(error), run_id, details=error_fields(error))
        self.reply(message, reply)
        self.refused.append((message, f"{type(error).__name__}: {error}"))

    def give(self, run_id: str, value: AnyInput, message: wire.Message | None = None) -> None:
        """Queue an input for a run; with `message`, the run's kernel pass answers it."""
        if message is None:
            self.inputs.append(Queued(run_id, value))
        else:
            self.inputs.append(Queued(run_id, value, message.reply_to, message.command_id))


async def accept(
    store: PartitionStore, tick: int, messages: Sequence[wire.Inbound], stamp: str, new_id: Callable[[], str],
    partitions: int, result_key: bytes, history_ticks: int = 0, vault: Vault | None = None,
) -> Intake:  # fmt: skip
    """Dedupe a batch by commandId and apply the intake rules to the new messages, in stream
    order. The caller writes `intake.runs` and `intake.audit` (`store.add_runs`) and either
    queues `intake.inputs` or hands them to the tick of the same transaction.

    Before anything is claimed, a message for a contact of another partition and a channel
    result not signed by a dispatcher are refused: neither may use up a commandId or reach a
    run. A commandId seen before with other content is refused (the first accepted wins, like
    an HTTP idempotency key); seen before with the same content, it gets the first reply."""
    intake = Intake(tick, store.partition, history_ticks=history_ticks, vault=vault)
    keyed: list[wire.Inbound] = []
    for m in messages:
        if isinstance(m, wire.Wake):
            continue
        why = _misrouted(m, store.partition, partitions) or (
            _unsigned(m, result_key) if isinstance(m, wire.Result) else None)
        if why is None:
            keyed.append(m)
        else:
            intake.refused.append((m, why))
            intake.reply(m, wire.Reply(m.command_id, False, "MessageRefused", why))
    if not keyed:
        return intake
    digests: dict[str, bytes] = {}
    for m in keyed:  # the first of several messages with one commandId is the one claimed
        digests.setdefault(m.command_id, wire.digest(m))
    fresh, known = await store.claim(list(digests.items()), tick)
    new: list[wire.Inbound] = []
    seen: set[str] = set()
    retried: list[wire.Inbound] = []
    for m in keyed:
        if m.command_id in seen or m.command_id not in fresh:
            # the content the id was first accepted with: in this batch, or before it
            first = digests[m.command_id] if m.command_id in fresh else known.get(m.command_id, wire.digest(m))
            if first != wire.digest(m):
                intake.refuse(m, CommandIdReusedError(m.command_id))
            else:
                retried.append(m)
        else:
            new.append(m)
        seen.add(m.command_id)
    await _look_up(store, intake, new)
    for message in new:
        await _accept_one(store, intake, message, stamp, new_id)
    intake.duplicates = await _first_replies(store, retried)
    return intake


def _misrouted(m: wire.Inbound, partition: int, partitions: int) -> str | None:
    """Why a message is on the wrong partition's stream, or None (a command naming only a run
    is checked against the run's partition when the run is looked up)."""
    if isinstance(m, wire.Execute):
        contacts = [m.contact.id]
    elif isinstance(m, wire.ExecuteBatch):
        contacts = [item.contact.id for item in m.items]
    elif isinstance(m, wire.Event | wire.Suppress | wire.Consent | wire.EraseContact):
        contacts = [m.contact_id]
    else:
        return None
    for contact_id in contacts:
        owner = partition_for(contact_id, partitions)
        if owner != partition:
            return f"wrong partition: contact {contact_id!r} belongs to partition {owner}, not {partition}"
    return None


def _unsigned(m: wire.Result, key: bytes) -> str | None:
    return None if wire.result_signed(m, key) else "a channel result not signed by a dispatcher of this deployment"


async def _look_up(store: PartitionStore, intake: Intake, messages: Sequence[wire.Inbound]) -> None:
    """The runs the batch names and the active runs of the contacts it addresses, read once:
    intake writes no run before the batch ends, so one read up front sees what a read per
    message would."""
    named: list[str] = [run_id for m in messages if (run_id := getattr(m, "run_id", None))]
    named += [item.run_id for m in messages if isinstance(m, wire.ExecuteBatch) for item in m.items]
    if named:
        for run_id, (partition, contact_id) in (await store.owners_of(named)).items():
            intake.known[run_id], intake.contact_of[run_id] = partition, contact_id
    contacts = sorted({m.contact_id for m in messages if isinstance(m, wire.Suppress | wire.Consent) or (isinstance(m, wire.Event) and (
        m.run_id is None or contact_flag(m.event_type, m.data) or m.event_type in SUPPRESSING_EVENTS))})  # fmt: skip
    policy = sorted({m.contact_id for m in messages
                     if isinstance(m, wire.Consent) or (isinstance(m, wire.Suppress) and channel_scope(m.level, m.channel))})  # fmt: skip
    await _read_contacts(store, intake, contacts, policy)


async def _read_contacts(store: PartitionStore, intake: Intake, active: Sequence[str], facts: Sequence[str]) -> None:
    """Read the active runs and the policy facts of contacts not read yet in this batch; runs
    enrolled earlier in the batch stay in `active`."""
    runs = sorted(set(active) - intake.looked_up)
    if runs:
        found = await store.active_runs(runs)
        for contact_id in runs:
            intake.active[contact_id] = sorted([*found.get(contact_id, []), *intake.active.get(contact_id, [])])
        intake.looked_up.update(runs)
    policy = sorted(set(facts) - intake.facts_read)
    if policy:
        intake.facts.update(await store.policy_facts(policy))
        intake.facts_read.update(policy)


async def _accept_one(store: PartitionStore, intake: Intake, message: wire.Inbound, stamp: str, new_id: Callable[[], str]) -> None:
    if isinstance(message, wire.Execute | wire.ExecuteBatch):
        await _execute(store, intake, message, stamp, new_id)
    elif isinstance(message, wire.Pause | wire.Resume | wire.Cancel | wire.Retry | wire.ReplayVerdict):
        _command(intake, message)
    elif isinstance(message, wire.Event):
        await _event(store, intake, message)
    elif isinstance(message, wire.Suppress):
        await _suppress(store, intake, message)
    elif isinstance(message, wire.Consent):
        await store.add_consent(ConsentRecord(
            contact_id=message.contact_id, channel=message.channel, status=message.status, source=message.source,
            tick=intake.tick, expires_tick=message.expires_tick, evidence=dict(message.evidence),
        ))  # fmt: skip
        consent = Consent(message.status, intake.tick, message.expires_tick, message.source)
        _policy_changed(intake, message.contact_id, lambda f: msgspec.structs.replace(
            f, consents=dict(sorted({**f.consents, message.channel: consent}.items()))))  # fmt: skip
        intake.reply(message, wire.Reply(message.command_id, True))
    elif isinstance(message, wire.EraseContact):
        intake.reply(message, await erase_contact(store, intake.tick, message, stamp, new_id, intake.vault))
        erase_enrolled(intake.runs, intake.audit, message, intake.tick, stamp, new_id)
        intake.active[message.contact_id] = []  # a later message of the batch reaches none of its runs
        intake.looked_up.add(message.contact_id)
    elif isinstance(message, wire.Result) and intake.owns(message.run_id):
        intake.give(message.run_id, ChannelResult(
            intake.tick, message.idempotency_key, message.status, message.error_kind, message.error, message.outcome,
            dict(message.data),
        ))  # fmt: skip


async def _execute(
    store: PartitionStore, intake: Intake, m: wire.Execute | wire.ExecuteBatch, stamp: str, new_id: Callable[[], str]
) -> None:
    """Enrol one contact (`execute`) or many (`executeBatch`) with batched reads."""
    if isinstance(m, wire.Execute):
        items = [wire.BatchItem(m.run_id, m.contact)]
        start_at, key = m.start_at, m.idempotency_key
    else:
        items, start_at, key = m.items, None, None
    if key is not None:
        existing = await store.run_by_key(key)
        if existing is not None:
            intake.reply(m, wire.Reply(m.command_id, True, run_id=existing))
            return
    ids = [item.run_id for item in items]
    taken = next((r for r in ids if r in intake.known), None) or next((r for r in ids if ids.count(r) > 1), None)
    if taken is not None:  # never an ok for an enrolment that did not happen
        intake.refuse(m, RunIdInUseError(taken))
        return
    try:
        compiled = await store.plan(m.plan_id, m.plan_version)
    except KeyError:
        intake.refuse(m, UnknownPlanError(m.plan_id, m.plan_version))
        return
    start_tick = intake.tick if start_at is None else start_at
    if start_tick < intake.tick:
        intake.refuse(m, StartInPastError(start_tick, intake.tick))
        return
    pairs = [(item.run_id, item.contact) for item in items]
    done = await enrol(store, intake.tick, compiled, pairs, dict(m.variables), start_tick, key, stamp, new_id, intake.enrolled,
                      intake.history_ticks, vault=intake.vault)  # fmt: skip
    if done.listed:
        await _listed_at_enrolment(store, intake, done.listed)
    if isinstance(m, wire.Execute) and done.refused:
        _, error = done.refused[0]
        intake.refuse(m, error, getattr(error, "run_id", None))
        return
    intake.runs.extend(done.runs)
    intake.audit.extend(done.audit)
    intake.known.update((run_id, intake.partition) for run_id in done.created)
    intake.contact_of.update((new.state.run_id, new.state.contact.id) for new in done.runs)
    for new in done.runs:  # a later message of the batch (a suppression, a consent) reaches these too
        intake.active.setdefault(new.state.contact.id, []).append((new.state.run_id, new.state.plan_id))
    created, skipped = done.created, [contact_id for contact_id, _ in done.refused]
    run_id = created[0] if isinstance(m, wire.Execute) else None
    intake.enrolments.append((m, list(created)))
    intake.reply(m, wire.Reply(m.command_id, True, run_id=run_id, runs=created, skipped=skipped))


def _command(intake: Intake, m: wire.Pause | wire.Resume | wire.Cancel | wire.Retry | wire.ReplayVerdict) -> None:
    if not intake.owns(m.run_id):
        intake.refuse(m, RunNotFoundError(m.run_id))
        return
    tick = intake.tick
    made: AnyInput
    if isinstance(m, wire.Pause):
        made = Pause(tick, command_id=m.command_id)
    elif isinstance(m, wire.Resume):
        made = Resume(tick, command_id=m.command_id)
    elif isinstance(m, wire.Retry):
        made = Retry(tick, command_id=m.command_id)
    elif isinstance(m, wire.Cancel):
        made = Cancel(tick, reason=m.reason, command_id=m.command_id)
    else:
        made = ReplayRecorded(tick, m.identical, list(m.fields), m.reissued)
    intake.give(m.run_id, made, m)


def _policy_changed(intake: Intake, contact_id: str, change: Callable[[PolicyFacts], PolicyFacts]) -> None:
    """Apply a change to the contact's facts and hand the result to each of its active runs."""
    facts = intake.facts[contact_id] = change(intake.facts.get(contact_id, PolicyFacts()))
    changed = PolicyChanged(intake.tick, facts)
    for run_id in _targets(intake, contact_id):
        intake.give(run_id, changed)


def _targets(intake: Intake, contact_id: str, plan_id: str | None = None) -> list[str]:
    """The contact's active runs in this partition (of one plan, if given), by run id."""
    return [run_id for run_id, plan in intake.active.get(contact_id, []) if plan_id is None or plan == plan_id]


async def _event(store: PartitionStore, intake: Intake, m: wire.Event) -> None:
    if m.run_id is not None:
        # the run must be this contact's: an event naming one contact cannot land on another's run
        if not intake.owns(m.run_id) or intake.contact_of.get(m.run_id) != m.contact_id:
            intake.refuse(m, RunNotFoundError(m.run_id))
            return
        targets = [m.run_id]
    else:
        targets = _targets(intake, m.contact_id)
    event = Event(intake.tick, m.command_id, m.event_type, m.step_id, m.message_id, dict(m.data), m.occurred_at)
    for run_id in targets:
        intake.give(run_id, event)
    flag = contact_flag(m.event_type, m.data)
    if flag is not None:  # contact-level: every run of the contact sees it, runs enrolled later too
        await store.flag_contact(m.contact_id, flag, intake.tick)
        flags: dict[str, Any] = {flag: True}
        change = ContactChanged(intake.tick, **flags)
        for run_id in _targets(intake, m.contact_id):
            if run_id not in targets:
                intake.give(run_id, change)
    reason = SUPPRESSING_EVENTS.get(m.event_type)
    if reason is not None:
        await _suppress_contact(store, intake, m.contact_id, "global", reason, m.event_type, None)
    intake.reply(m, wire.Reply(m.command_id, True, runs=targets))


async def _suppress(store: PartitionStore, intake: Intake, m: wire.Suppress) -> None:
    """Record a suppression and cancel the runs it covers: every run of the contact for the
    global level and a regulatory one without a channel, the plan's runs for a plan-level one
    (which must name its plan), none for one that names its channel (channel level, or
    regulatory: a do-not-call list): that channel's sends are refused instead. The reply lists
    the runs cancelled, or the runs told of the channel (`restricted`)."""
    if m.level == "plan" and not m.plan_id:
        intake.refuse(m, DeeError("a plan-level suppression needs a planId"))
        return
    if m.level == "channel" and not m.channel:
        intake.refuse(m, DeeError("a channel-level suppression needs a channel"))
        return
    targets = await _suppress_contact(store, intake, m.contact_id, m.level, m.reason, m.source, m.channel, m.plan_id)
    if channel_scope(m.level, m.channel):
        intake.reply(m, wire.Reply(m.command_id, True, restricted=_targets(intake, m.contact_id)))
    else:
        intake.reply(m, wire.Reply(m.command_id, True, runs=targets))


async def _listed_at_enrolment(store: PartitionStore, intake: Intake, suppressions: Sequence[Suppression]) -> None:
    """A contact enrolled with a listed number is suppressed as the listing says, like any
    suppression (recorded; its runs enrolled before, with another number, cancelled or told);
    the enrolment already applied it to the new run (started with the channel suppressed, or
    refused). Before the batch's new runs join `active`, so they are not told twice."""
    scoped = {s.contact_id for s in suppressions if channel_scope(s.level, s.channel)}
    await _read_contacts(store, intake, sorted({s.contact_id for s in suppressions}), sorted(scoped))
    for s in suppressions:
        await _suppress_contact(store, intake, s.contact_id, s.level, s.reason, s.source, s.channel)


async def _suppress_contact(
    store: PartitionStore, intake: Intake, contact_id: str, level: SuppressionLevel, reason: str, source: str,
    channel: str | None, plan_id: str | None = None,
) -> list[str]:  # fmt: skip
    """Record a suppression and queue the cancellation of the runs it covers; returns them."""
    await store.add_suppression(Suppression(
        contact_id=contact_id, level=level, reason=reason, source=source, channel=channel, plan_id=plan_id, tick=intake.tick,
    ))  # fmt: skip
    targets: list[str] = []
    scope = channel_scope(level, channel)
    if scope:  # its sends are refused by the gates, the runs go on
        _policy_changed(intake, contact_id, lambda f: msgspec.structs.replace(
            f, suppressed_channels=tuple(sorted({*f.suppressed_channels, scope}))))  # fmt: skip
    elif level != "channel":
        targets = _targets(intake, contact_id, plan_id if level == "plan" else None)
    cancel = Suppressed(intake.tick, level, reason, source)
    for run_id in targets:
        intake.give(run_id, cancel)
    return targets


async def _first_replies(store: PartitionStore, duplicates: Sequence[wire.Inbound]) -> list[tuple[str, wire.Reply]]:
    """A retried message gets the reply of its first delivery (if it is known yet)."""
    wanted = [m for m in duplicates if m.reply_to]
    if not wanted:
        return []
    stored = await store.replies_of([m.command_id for m in wanted])
    return [(m.reply_to, stored[m.command_id]) for m in wanted if m.command_id in stored and m.reply_to]
