"""The audit log's pure half: entry structure, canonical encoding, the SHA-256 chain.

The kernel drafts entries (`EntryDraft`) without ids or wall-clock time, which it cannot know;
the shell seals them: it adds a ULID and a timestamp, then chains them. `checksum` covers every
other field of the entry, `previous_checksum` included, in a canonical encoding (sorted keys,
UTF-8 JSON, integers only for time): that is exactly what readers are shown, and verification
recomputes it from the stored values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from dee.kernel.state import ZERO_CHECKSUM

ACTIONS = (
    "run.started", "run.completed", "run.failed", "run.paused", "run.resumed", "run.cancelled",
    "run.retried", "step.entered", "step.evaluated", "step.dispatched", "step.executed",
    "step.skipped", "wait.started", "wait.completed", "event.received", "policy.evaluated",
    "error.occurred", "error.retried", "replay.recorded",
)  # fmt: skip


class EntryDraft(msgspec.Struct, frozen=True):
    """An audit entry as the kernel decides it: everything but id, timestamp and the chain."""

    run_id: str
    seq: int
    plan_id: str
    step_id: str | None
    tick: int
    action: str
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class _Unsealed(msgspec.Struct, frozen=True, rename="camel"):
    """An entry without its checksum: exactly what the checksum covers."""

    id: str
    run_id: str
    seq: int
    plan_id: str
    step_id: str | None
    tick: int
    timestamp: str
    action: str
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    context: dict[str, Any] | None
    previous_checksum: str


class AuditEntry(_Unsealed, frozen=True, rename="camel"):
    """A sealed entry: the unsealed fields plus the checksum over them."""

    checksum: str


class ChainVerification(msgspec.Struct, frozen=True):
    valid: bool
    entries: int
    first_tick: int | None
    last_tick: int | None
    broken_at: int | None = None
    reason: str | None = None


def canonical(entry: AuditEntry) -> bytes:
    """The bytes the checksum covers: every field but `checksum`, sorted keys, UTF-8 JSON."""
    return _encode_sorted(_Unsealed(*msgspec.structs.astuple(entry)[:-1]))


def chain_checksum(entry: AuditEntry) -> str:
    return hashlib.sha256(entry.previous_checksum.encode() + canonical(entry)).hexdigest()


def seal(
    drafts: Iterable[EntryDraft], head: str, timestamp: str, new_id: Callable[[], str]
) -> list[AuditEntry]:
    """Turn drafts into chained entries, continuing from the run's chain `head`."""
    sealed: list[AuditEntry] = []
    previous = head
    for d in drafts:
        body = _Unsealed(new_id(), d.run_id, d.seq, d.plan_id, d.step_id, d.tick, timestamp, d.action,
                         d.input, d.output, d.context, previous)  # fmt: skip
        checksum = hashlib.sha256(previous.encode() + _encode_sorted(body)).hexdigest()
        sealed.append(AuditEntry(*msgspec.structs.astuple(body), checksum))
        previous = checksum
    return sealed


_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def verify_chain(
    entries: Sequence[AuditEntry], head_seq: int | None = None, head_checksum: str | None = None
) -> ChainVerification:
    """Recompute the chain; `broken_at` is the seq of the first entry that does not verify.

    `head_seq`/`head_checksum` are what the run row says the chain ends with: comparing them
    catches the deletion of the newest entries, which a chain alone cannot show.
    """
    previous = ZERO_CHECKSUM
    first = entries[0].tick if entries else None
    last = entries[-1].tick if entries else None

    def broken(seq: int, why: str) -> ChainVerification:
        return ChainVerification(False, len(entries), first, last, seq, why)

    for expected_seq, entry in enumerate(entries, start=1):
        if entry.seq != expected_seq:
            return broken(expected_seq, f"entry seq {entry.seq} where {expected_seq} was expected (missing entry)")
        if entry.previous_checksum != previous:
            return broken(entry.seq, "previous_checksum does not match the entry before it")
        if chain_checksum(entry) != entry.checksum:
            return broken(entry.seq, "checksum does not match the entry's content")
        previous = entry.checksum
    if head_seq is not None and head_seq != len(entries):
        return broken(len(entries) + 1, f"the run's chain head is at seq {head_seq} but {len(entries)} entries exist")
    if head_checksum is not None and head_checksum != previous:
        return broken(max(len(entries), 1), "the last entry is not the run's recorded chain head")
    return ChainVerification(True, len(entries), first, last)
