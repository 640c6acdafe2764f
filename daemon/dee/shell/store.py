"""`PartitionStore`: what the shell's rules read and write for one partition.

The rules (intake, enrolment, the tick) are written once, in this package, against this
interface; `dee.stores.postgres.PostgresPartitionStore` implements it inside a daemon's tick
transaction, `dee.stores.memory.MemoryPartitionStore` over plain dicts. Every method is
batched (one call per batch or per tick, never per entry), which is what keeps the PostgreSQL
side at a few statements per tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

import msgspec

from dee.bus import messages as wire
from dee.kernel.audit import AuditRow
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import AnyInput
from dee.kernel.policy import Consent, PolicyFacts, SentMark
from dee.kernel.state import RunState
from dee.plan.compiled import CompiledPlan
from dee.records import ConsentRecord, Suppression
from dee.shell.numbers import Listing

KeyStatus = Literal["live", "erased", "none"]  # a contact's key: kept, destroyed by an erasure, never made


class Queued(NamedTuple):
    """An input accepted for a run and not yet applied (its tick is the input's own), with the
    stream to answer on and the command it answers (commands are answered after the kernel
    applied them)."""

    run_id: str
    input: AnyInput
    reply_to: str | None = None
    command_id: str | None = None


class NewRun(NamedTuple):
    """A run created by enrolment, with the idempotency key it was enrolled under."""

    state: RunState
    idempotency_key: str | None


class OutboxItem(msgspec.Struct, frozen=True, rename="camel"):
    """A channel action decided by a committed tick: what the dispatch stream carries, with the
    partition its result returns to."""

    partition: int
    contact_id: str
    request: DispatchRequest


class EnrolmentFacts(NamedTuple):
    """What enrolling contacts in a plan depends on, read once per batch."""

    enrolled: dict[str, str]  # contact id -> its non-terminal run of the plan
    suppressed: dict[str, tuple[str, str]]  # contact id -> (level, reason) of a suppression covering the plan (every channel)
    flags: dict[str, tuple[bool, bool]]  # contact id -> (unsubscribed, bounced), contact-level
    policy: dict[str, PolicyFacts]  # contact id -> its consents and the channels it is suppressed on (none: absent)


def policy_facts(consents: Iterable[ConsentRecord], suppressed_channels: Iterable[str]) -> PolicyFacts:
    """A contact's facts from its consent records in the order they were recorded (the last
    of a channel stands) and the channels it is suppressed on; both stores build them here."""
    latest = {c.channel: Consent(c.status, c.tick or 0, c.expires_tick, c.source) for c in consents}
    return PolicyFacts(dict(sorted(latest.items())), tuple(sorted(set(suppressed_channels))))


class PartitionStore(Protocol):
    partition: int
    epoch_ms: int  # the deployment's tick 0 (Unix ms), journaled with every run's start

    # ---- plans -------------------------------------------------------------------------
    async def plan(self, plan_id: str, version: int) -> CompiledPlan:
        """A registered plan version; KeyError when it is not registered."""

    # ---- intake: dedupe and replies ----------------------------------------------------
    async def claim(self, commands: Sequence[tuple[str, bytes]], tick: int) -> tuple[set[str], dict[str, bytes]]:
        """Record these (command id, content digest) pairs as accepted at `tick`; returns the
        ids seen for the first time, and the stored digest of each id seen before."""

    async def replies_of(self, command_ids: Sequence[str]) -> dict[str, wire.Reply]:
        """The stored replies of commands accepted before (those that have one yet)."""

    async def store_replies(self, replies: Sequence[wire.Reply]) -> None:
        """Keep each reply with its command, to answer a retried command the same way."""

    # ---- intake: what messages address ----------------------------------------------------
    async def owners_of(self, run_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """The partition and the contact of each run that exists (in any partition)."""

    async def active_runs(self, contact_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """Each contact's non-terminal runs in this partition as (run id, plan id), by run id."""

    async def run_by_key(self, idempotency_key: str) -> str | None:
        """The run enrolled under this idempotency key, if any."""

    # ---- intake: contact-level records ------------------------------------------------------
    async def enrolment_facts(self, plan_id: str, contact_ids: Sequence[str]) -> EnrolmentFacts:
        """Enrolments, suppressions and contact flags of these contacts (contacts not seen
        before are recorded as contacts of this partition)."""

    async def listed_numbers(self, phones: Sequence[tuple[str, str]]) -> dict[str, list[Listing]]:
        """Record these (contact id, E.164 number) pairs as numbers of this partition's contacts
        and return, by contact, the listings of their numbers that the contact has no
        suppression of yet (same level and channel), by number, level and channel. PostgreSQL
        holds the number lists' lock shared until the transaction ends, so an import of a list
        either sees this record or is seen by this read (`stores.postgres.numbers`)."""

    async def flag_contact(self, contact_id: str, flag: str, tick: int) -> None:
        """Set a contact-level flag (`unsubscribed`, `bounced`), seen by every later run."""

    async def add_suppression(self, suppression: Suppression) -> None: ...

    async def add_consent(self, consent: ConsentRecord) -> None: ...

    async def policy_facts(self, contact_ids: Sequence[str]) -> dict[str, PolicyFacts]:
        """The policy facts of these contacts (a contact with no consent and no suppression
        naming its channel, `numbers.channel_scope`, is left out)."""

    async def record_sends(self, sends: Sequence[tuple[str, SentMark]], forget_before: int) -> None:
        """Keep the messages a tick sent, as (contact id, mark), for the contacts' later
        enrolments; forget this partition's sends before tick `forget_before`."""

    async def recent_sends(self, contact_ids: Sequence[str], since_tick: int) -> dict[str, tuple[SentMark, ...]]:
        """The messages these contacts were sent from `since_tick` on, by tick then message id
        (a contact sent nothing is left out)."""

    # ---- runs and their inputs ----------------------------------------------------------
    async def add_runs(self, runs: Sequence[NewRun], audit: Sequence[AuditRow]) -> set[str]:
        """Insert new runs with their first entries; a run that lost a race with another
        enrolment of its contact and plan (or idempotency key) is dropped with its entries.
        Returns the ids inserted."""

    async def queue(self, inputs: Sequence[Queued]) -> None:
        """Keep inputs for their runs' next processing, in this order."""

    async def due(self, tick: int, cap: int, fresh: Sequence[str]) -> tuple[list[RunState], set[str]]:
        """Runs with inputs queued (or `fresh`: run ids given inputs in this same batch) or a
        timer due by `tick`, ordered by run id, at most `cap`; and which of them have queued
        inputs."""

    async def queued(self, run_ids: Sequence[str]) -> list[tuple[int, Queued]]:
        """The queued inputs of these runs as (seq, input), in the order they were queued."""

    async def consume(self, seqs: Sequence[int]) -> None:
        """Drop queued inputs once applied."""

    async def save_runs(self, states: Sequence[RunState]) -> None: ...

    async def runs_of_contact(self, contact_id: str) -> list[str]:
        """The contact's non-terminal run ids (all in this partition: runs are partitioned by contact)."""

    async def contact_runs(self, contact_id: str) -> list[RunState]:
        """Every run of the contact (ended ones too), by run id."""

    # ---- contact keys and erasure (dee.privacy) ------------------------------------------
    async def contact_keys(self, contact_ids: Sequence[str]) -> dict[str, bytes]:
        """The wrapped keys of these contacts (an erased contact has none)."""

    async def add_contact_keys(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        """Store new wrapped keys where a contact has none; returns the keys stored afterwards."""

    async def key_status(self, contact_id: str) -> KeyStatus: ...

    async def forget_contact(self, contact_id: str, run_ids: Sequence[str], tick: int, reason: str) -> None:
        """Destroy the contact's key (keeping a tombstone: id, tick, reason code) and drop its
        personal data outside run states and the audit log: its runs' queued inputs, its channel
        actions in the outbox, its phone numbers, its consents' evidence."""

    # ---- what a tick wrote --------------------------------------------------------------
    async def append_audit(self, rows: Sequence[AuditRow]) -> None: ...

    async def add_outbox(self, items: Sequence[OutboxItem]) -> list[int]:
        """Channel actions to publish after the commit; returns their outbox seqs."""
