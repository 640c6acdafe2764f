"""The in-memory store: a whole deployment's state in dicts, for `memory://` engines.

`MemoryStore` holds every partition's runs, inputs, outbox, audit chains and contact records;
`MemoryPartitionStore` is the shell's `PartitionStore` over one partition of it, so a memory
engine runs the same intake, enrolment and tick rules as a daemon, only without I/O. Nothing
here decides anything: it stores, indexes and answers in the orders the protocol promises.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from itertools import count

import msgspec

from dee.bus import messages as wire
from dee.errors import RunNotFoundError
from dee.kernel.audit import AuditEntry, AuditRow, entry_of
from dee.kernel.policy import PolicyFacts, SentMark
from dee.kernel.state import RunState
from dee.plan.compiled import CompiledPlan
from dee.records import ConsentRecord, Suppression
from dee.shell.numbers import Listed, Listing, channel_scope
from dee.shell.store import EnrolmentFacts, KeyStatus, NewRun, OutboxItem, Queued, policy_facts

FLAGS = ("unsubscribed", "bounced")


class MemoryStore:
    """Everything one memory deployment has, across its partitions."""

    def __init__(self, partitions: int, epoch_ms: int = 0) -> None:
        self.partitions = partitions
        self.epoch_ms = epoch_ms  # tick 0 as Unix ms
        self.plans: dict[tuple[str, int], CompiledPlan] = {}
        self.runs: dict[str, RunState] = {}
        self.partition_of: dict[str, int] = {}
        self.started_at: dict[str, str] = {}  # run id -> wall-clock stamp of run.started
        self.keys: dict[str, str] = {}  # idempotency key -> run id
        self.by_contact: dict[str, list[str]] = defaultdict(list)  # contact id -> run ids, by run id
        self.audit: dict[str, list[AuditEntry]] = defaultdict(list)
        self.inbox: dict[int, dict[str, list[tuple[int, Queued]]]] = defaultdict(lambda: defaultdict(list))
        self.timers: dict[int, list[tuple[int, str]]] = defaultdict(list)  # partition -> heap of (wake tick, run id)
        self.outbox: deque[tuple[int, OutboxItem]] = deque()
        self.contacts: dict[str, dict[str, bool]] = {}  # contact id -> its contact-level flags
        self.suppressions: list[Suppression] = []
        self.suppressed_as: set[tuple[str, str, str | None]] = set()  # (contact id, level, channel) of every suppression
        self.numbers: dict[str, dict[tuple[str, str | None], Listing]] = {}  # E.164 -> (level, channel) -> its listing
        self.phones: dict[str, dict[str, int]] = defaultdict(dict)  # E.164 -> contact id -> partition, of enrolled contacts
        self.consents: list[ConsentRecord] = []
        self.sends: dict[str, dict[str, tuple[int, SentMark]]] = defaultdict(dict)  # contact -> message id -> (partition, mark)
        self.received: dict[str, wire.Reply | None] = {}
        self.digests: dict[str, bytes] = {}
        self.seq = count(1)
        self.contact_keys: dict[str, bytes | None] = {}  # contact id -> wrapped key (None: erased, a tombstone)

    def state(self, run_id: str) -> RunState:
        try:
            return self.runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id) from None

    def partition(self, partition: int) -> MemoryPartitionStore:
        return MemoryPartitionStore(self, partition)

    def has_work(self, partition: int, tick: int) -> bool:
        """Inputs queued, or a timer due by `tick`, in this partition."""
        return any(self.inbox[partition].values()) or self.next_wake(partition, tick) is not None

    def next_wake(self, partition: int, up_to: int | None = None) -> int | None:
        """The earliest live timer of a partition (at most `up_to`); stale heap entries (a timer
        that moved or a paused run) are dropped on the way."""
        heap = self.timers[partition]
        while heap:
            wake, run_id = heap[0]
            state = self.runs[run_id]
            if state.wake_tick == wake and state.status != "paused":
                return wake if up_to is None or wake <= up_to else None
            heapq.heappop(heap)
        return None

    def list_numbers(self, listing: Listing, numbers: Sequence[str]) -> Listed:
        """List the numbers (each once per level and channel) and find their contacts."""
        new = 0
        for number in numbers:
            listed = self.numbers.setdefault(number, {})
            if (listing.level, listing.channel) not in listed:
                listed[(listing.level, listing.channel)] = listing
                new += 1
        found = {contact_id for number in numbers for contact_id in self.phones.get(number, {})}
        return Listed(new, len(found), sorted(c for c in found if (c, listing.level, listing.channel) not in self.suppressed_as))

    def set_timer(self, state: RunState) -> None:
        if state.wake_tick is not None and state.status != "paused":
            heapq.heappush(self.timers[self.partition_of[state.run_id]], (state.wake_tick, state.run_id))


class MemoryPartitionStore:
    """`PartitionStore` over one partition of a `MemoryStore`."""

    def __init__(self, store: MemoryStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.epoch_ms = store.epoch_ms

    async def plan(self, plan_id: str, version: int) -> CompiledPlan:
        return self.store.plans[(plan_id, version)]

    # ---- dedupe and replies --------------------------------------------------------------
    async def claim(self, commands: Sequence[tuple[str, bytes]], tick: int) -> tuple[set[str], dict[str, bytes]]:
        fresh = {c for c, _ in commands if c not in self.store.received}
        known = {c: self.store.digests[c] for c, _ in commands if c not in fresh and c in self.store.digests}
        for command_id, digest in commands:
            if command_id in fresh:
                self.store.received[command_id] = None
                self.store.digests[command_id] = digest
        return fresh, known

    async def replies_of(self, command_ids: Sequence[str]) -> dict[str, wire.Reply]:
        found = {c: self.store.received.get(c) for c in command_ids}
        return {c: reply for c, reply in found.items() if reply is not None}

    async def store_replies(self, replies: Sequence[wire.Reply]) -> None:
        for reply in replies:
            if reply.command_id in self.store.received:
                self.store.received[reply.command_id] = reply

    # ---- what messages address --------------------------------------------------------------
    async def owners_of(self, run_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        return {r: (self.store.partition_of[r], self.store.runs[r].contact.id) for r in run_ids if r in self.store.partition_of}

    async def active_runs(self, contact_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        active: dict[str, list[tuple[str, str]]] = {}
        for contact_id in contact_ids:
            found = [(r, self.store.runs[r].plan_id) for r in self._live(contact_id)]
            if found:
                active[contact_id] = found
        return active

    async def run_by_key(self, idempotency_key: str) -> str | None:
        return self.store.keys.get(idempotency_key)

    def _live(self, contact_id: str) -> list[str]:
        return [r for r in self.store.by_contact.get(contact_id, ()) if self.store.partition_of[r] == self.partition
                and not self.store.runs[r].terminal]  # fmt: skip

    # ---- contact-level records ------------------------------------------------------------
    async def enrolment_facts(self, plan_id: str, contact_ids: Sequence[str]) -> EnrolmentFacts:
        enrolled: dict[str, str] = {}
        suppressed: dict[str, tuple[str, str]] = {}
        flags: dict[str, tuple[bool, bool]] = {}
        wanted = set(contact_ids)
        for contact_id in wanted:
            for run_id in self._live(contact_id):
                if self.store.runs[run_id].plan_id == plan_id:
                    enrolled[contact_id] = run_id
            known = self.store.contacts.setdefault(contact_id, {})
            flags[contact_id] = (known.get("unsubscribed", False), known.get("bounced", False))
        for s in self.store.suppressions:  # the first one recorded wins, as in PostgreSQL
            if s.contact_id in wanted and s.contact_id not in suppressed and (
                (s.level in ("global", "regulatory") and channel_scope(s.level, s.channel) is None)
                or (s.level == "plan" and s.plan_id == plan_id)
            ):
                suppressed[s.contact_id] = (s.level, s.reason)
        return EnrolmentFacts(enrolled, suppressed, flags, await self.policy_facts(sorted(wanted)))

    async def flag_contact(self, contact_id: str, flag: str, tick: int) -> None:
        if flag not in FLAGS:
            raise ValueError(f"unknown contact flag {flag!r}")
        self.store.contacts.setdefault(contact_id, {})[flag] = True

    async def listed_numbers(self, phones: Sequence[tuple[str, str]]) -> dict[str, list[Listing]]:
        found: dict[str, list[Listing]] = {}
        for contact_id, number in sorted(set(phones)):
            self.store.phones[number][contact_id] = self.partition
            for key, listing in sorted(self.store.numbers.get(number, {}).items(), key=lambda item: (item[0][0], item[0][1] or "")):
                if (contact_id, *key) not in self.store.suppressed_as:
                    found.setdefault(contact_id, []).append(listing)
        return found

    async def add_suppression(self, suppression: Suppression) -> None:
        self.store.suppressions.append(suppression)
        self.store.suppressed_as.add((suppression.contact_id, suppression.level, suppression.channel))

    async def add_consent(self, consent: ConsentRecord) -> None:
        self.store.consents.append(consent)

    async def record_sends(self, sends: Sequence[tuple[str, SentMark]], forget_before: int) -> None:
        for contact_id, mark in sends:
            self.store.sends[contact_id].setdefault(mark.message_id, (self.partition, mark))
        for contact_id, kept in list(self.store.sends.items()):
            for message_id, (partition, mark) in list(kept.items()):
                if partition == self.partition and mark.tick < forget_before:
                    del kept[message_id]
            if not kept:
                del self.store.sends[contact_id]

    async def recent_sends(self, contact_ids: Sequence[str], since_tick: int) -> dict[str, tuple[SentMark, ...]]:
        found: dict[str, tuple[SentMark, ...]] = {}
        for contact_id in sorted(set(contact_ids)):
            marks = sorted((m for _, m in self.store.sends.get(contact_id, {}).values() if m.tick >= since_tick),
                           key=lambda m: (m.tick, m.message_id))  # fmt: skip
            if marks:
                found[contact_id] = tuple(marks)
        return found

    async def policy_facts(self, contact_ids: Sequence[str]) -> dict[str, PolicyFacts]:
        wanted = set(contact_ids)
        consents: dict[str, list[ConsentRecord]] = {}
        channels: dict[str, list[str]] = {}
        for c in self.store.consents:
            if c.contact_id in wanted:
                consents.setdefault(c.contact_id, []).append(c)
        for s in self.store.suppressions:
            scope = channel_scope(s.level, s.channel)
            if s.contact_id in wanted and scope:
                channels.setdefault(s.contact_id, []).append(scope)
        return {cid: policy_facts(consents.get(cid, ()), channels.get(cid, ())) for cid in sorted(consents.keys() | channels.keys())}

    # ---- runs and their inputs ----------------------------------------------------------
    async def add_runs(self, runs: Sequence[NewRun], audit: Sequence[AuditRow]) -> set[str]:
        store = self.store
        inserted: set[str] = set()
        for run in runs:
            state, key = run.state, run.idempotency_key
            if state.run_id in store.runs or (key is not None and key in store.keys):
                continue
            store.runs[state.run_id] = state
            store.partition_of[state.run_id] = self.partition
            store.by_contact[state.contact.id].append(state.run_id)
            store.by_contact[state.contact.id].sort()
            if key is not None:
                store.keys[key] = state.run_id
            store.set_timer(state)
            inserted.add(state.run_id)
        await self.append_audit([row for row in audit if row.run_id in inserted])
        for row in audit:
            if row.run_id in inserted and row.seq == 1:
                store.started_at[row.run_id] = row.timestamp
        return inserted

    async def queue(self, inputs: Sequence[Queued]) -> None:
        inbox = self.store.inbox[self.partition]
        for item in inputs:
            inbox[item.run_id].append((next(self.store.seq), item))

    async def due(self, tick: int, cap: int, fresh: Sequence[str]) -> tuple[list[RunState], set[str]]:
        store = self.store
        inbox = store.inbox[self.partition]
        queued = {run_id for run_id, items in inbox.items() if items}
        due = set(queued) | set(fresh)
        heap = store.timers[self.partition]
        while heap and heap[0][0] <= tick:
            wake, run_id = heapq.heappop(heap)
            state = store.runs[run_id]
            if state.wake_tick == wake and state.status != "paused":
                due.add(run_id)
        chosen = sorted(due)[:cap]
        for run_id in sorted(due)[cap:]:  # over the cap: their timers wait for the next tick
            store.set_timer(store.runs[run_id])
        return [store.runs[r] for r in chosen], queued & set(chosen)

    async def queued(self, run_ids: Sequence[str]) -> list[tuple[int, Queued]]:
        inbox = self.store.inbox[self.partition]
        return sorted((entry for run_id in run_ids for entry in inbox.get(run_id, [])), key=lambda e: e[0])

    async def consume(self, seqs: Sequence[int]) -> None:
        done = set(seqs)
        inbox = self.store.inbox[self.partition]
        for run_id in [r for r, items in inbox.items() if any(seq in done for seq, _ in items)]:
            inbox[run_id] = [e for e in inbox[run_id] if e[0] not in done]
            if not inbox[run_id]:
                del inbox[run_id]

    async def save_runs(self, states: Sequence[RunState]) -> None:
        for state in states:
            self.store.runs[state.run_id] = state
            self.store.set_timer(state)

    async def runs_of_contact(self, contact_id: str) -> list[str]:
        return self._live(contact_id)

    async def contact_runs(self, contact_id: str) -> list[RunState]:
        return [self.store.runs[r] for r in self.store.by_contact.get(contact_id, ()) if self.store.partition_of[r] == self.partition]

    # ---- contact keys and erasure (dee.privacy) ------------------------------------------
    async def contact_keys(self, contact_ids: Sequence[str]) -> dict[str, bytes]:
        return {c: key for c in contact_ids if (key := self.store.contact_keys.get(c)) is not None}

    async def add_contact_keys(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        for contact_id, key in wrapped.items():
            if self.store.contact_keys.get(contact_id) is None:
                self.store.contact_keys[contact_id] = key
        return await self.contact_keys(list(wrapped))

    async def key_status(self, contact_id: str) -> KeyStatus:
        if contact_id not in self.store.contact_keys:
            return "none"
        return "erased" if self.store.contact_keys[contact_id] is None else "live"

    async def forget_contact(self, contact_id: str, run_ids: Sequence[str], tick: int, reason: str) -> None:
        store = self.store
        store.contact_keys[contact_id] = None
        inbox = store.inbox[self.partition]
        for run_id in run_ids:
            inbox.pop(run_id, None)
        for number in [n for n, contacts in store.phones.items() if contact_id in contacts]:
            del store.phones[number][contact_id]
        store.outbox = deque((seq, item) for seq, item in store.outbox if item.contact_id != contact_id)
        store.consents = [msgspec.structs.replace(c, evidence={}) if c.contact_id == contact_id else c for c in store.consents]

    # ---- what a tick wrote --------------------------------------------------------------
    async def append_audit(self, rows: Sequence[AuditRow]) -> None:
        for row in rows:
            self.store.audit[row.run_id].append(entry_of(row))

    async def add_outbox(self, items: Sequence[OutboxItem]) -> list[int]:
        seqs = [next(self.store.seq) for _ in items]
        self.store.outbox.extend(zip(seqs, items, strict=True))
        return seqs
