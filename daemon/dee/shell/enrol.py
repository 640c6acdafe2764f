"""Enrolment: new runs for a batch of contacts, every rule of `execute` checked in bulk.

Shared by intake (`execute`, `executeBatch` messages) and by the daemon client's
`bulk_execute` fast path, which writes large batches directly: new runs are rows no one else
writes yet, and a store settles races with concurrent enrolments of the same contact and plan
(PostgreSQL by a unique index); the owning partition starts the new runs at their start tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from dee.errors import AlreadyEnrolledError, ContactSuppressedError, DeeError
from dee.kernel.audit import AuditRow, seal_rows
from dee.kernel.contact import Contact
from dee.kernel.inputs import Start
from dee.kernel.machine import Advance, start_run
from dee.kernel.policy import PolicyFacts
from dee.plan.compiled import CompiledPlan
from dee.privacy.vault import Vault
from dee.records import Suppression
from dee.shell.numbers import Listing, channel_scope, e164
from dee.shell.store import NewRun, PartitionStore

NO_FACTS = PolicyFacts()


@dataclass
class Enrolment:
    runs: list[NewRun] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    refused: list[tuple[str, DeeError]] = field(default_factory=list)
    # suppressions the contacts' listed numbers give them, applied to their new runs (a run
    # started with the channel suppressed, or the enrolment refused); the caller records them
    listed: list[Suppression] = field(default_factory=list)
    deferred: list[tuple[str, Contact]] = field(default_factory=list)  # with `defer_listed`: not enrolled here


async def enrol(
    store: PartitionStore, tick: int, compiled: CompiledPlan, items: Sequence[tuple[str, Contact]],
    variables: dict[str, Any], start_tick: int, idempotency_key: str | None, stamp: str, new_id: Callable[[], str],
    already: dict[tuple[str, str], str] | None = None, history_ticks: int = 0, defer_listed: bool = False,
    vault: Vault | None = None,
) -> Enrolment:  # fmt: skip
    """Runs for `(run_id, contact)` items; already enrolled or suppressed contacts are refused.
    A contact's recorded flags (unsubscribed, bounced) come with it into the new run, and so
    do its policy facts: consents, channel suppressions and, when a gate counts them
    (`history_ticks` back), the messages its other runs sent.

    Each contact's number is recorded, and a listed one (`suppress_numbers`) not yet applied to
    the contact applies now: the run starts with the listing's channel suppressed, or, for a
    listing of every channel, the contact is refused as suppressed; `listed` has the
    suppressions for the caller to record. With `defer_listed` such a contact is left in
    `deferred` instead, for the partition to enrol (the COPY path, which cannot tell the
    contact's other runs). With a `vault`, each new contact gets its key and the entries are
    sealed with it.

    `already` holds enrolments made earlier in the same batch (and is updated)."""
    plan = compiled.plan
    version = plan.version or 0
    already = {} if already is None else already
    facts = await store.enrolment_facts(plan.id, [contact.id for _, contact in items])
    phones = sorted({(contact.id, number) for _, contact in items if (number := e164(contact.phone))})
    listings = await store.listed_numbers(phones) if phones else {}
    since = tick - history_ticks
    sent = await store.recent_sends([contact.id for _, contact in items], since) if history_ticks else {}
    out = Enrolment()
    started: list[Advance] = []
    for run_id, contact in items:
        current = already.get((plan.id, contact.id)) or facts.enrolled.get(contact.id)
        if current is not None:
            out.refused.append((contact.id, AlreadyEnrolledError(plan.id, contact.id, current)))
            continue
        if contact.id in facts.suppressed:
            out.refused.append((contact.id, ContactSuppressedError(contact.id, *facts.suppressed[contact.id])))
            continue
        listed = listings.get(contact.id, [])
        if listed and defer_listed:
            out.deferred.append((run_id, contact))
            continue
        out.listed.extend(listing.suppression(contact.id, tick) for listing in listed)
        every = next((listing for listing in listed if channel_scope(listing.level, listing.channel) is None), None)
        if every is not None:
            out.refused.append((contact.id, ContactSuppressedError(contact.id, every.level, every.reason)))
            continue
        unsubscribed, bounced = facts.flags.get(contact.id, (False, False))
        if unsubscribed or bounced:
            contact = replace(contact, unsubscribed=contact.unsubscribed or unsubscribed, bounced=contact.bounced or bounced)
        policy = _with_channels(facts.policy.get(contact.id, NO_FACTS), listed)
        if contact.id in sent:
            policy = policy.noting(sent[contact.id], since)
        start = Start(tick, run_id, plan.id, version, plan.checksum, contact, dict(variables), start_tick, policy, store.epoch_ms)
        started.append(start_run(start))
        already[(plan.id, contact.id)] = run_id
        out.created.append(run_id)
    keys = await vault.keys(store, [first.state.contact.id for first in started], create=True) if vault else {}
    for first in started:
        drafts = vault.seal(first.entries, keys.get(first.state.contact.id)) if vault else first.entries
        entries = seal_rows(drafts, first.state.audit_head, stamp, new_id)
        out.runs.append(NewRun(replace(first.state, audit_head=entries[-1].checksum), idempotency_key))
        out.audit.extend(entries)
    return out


def _with_channels(facts: PolicyFacts, listed: Sequence[Listing]) -> PolicyFacts:
    """The facts with the channels of these listings suppressed."""
    channels = {scope for listing in listed if (scope := channel_scope(listing.level, listing.channel))}
    if channels <= set(facts.suppressed_channels):
        return facts
    return replace(facts, suppressed_channels=tuple(sorted({*facts.suppressed_channels, *channels})))
