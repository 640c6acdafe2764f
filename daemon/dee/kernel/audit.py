"""The audit log's pure half: entry structure, canonical encoding, the SHA-256 chain.

The kernel drafts entries (`EntryDraft`) without ids or wall-clock time, which it cannot know;
the shell seals them: it adds a ULID and a timestamp, then chains them. `checksum` covers every
other field of the entry, `previous_checksum` included, in a canonical encoding (sorted keys,
UTF-8 JSON, integers only for time): that is exactly what readers are shown, and verification
recomputes it from the stored values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from dee.kernel.state import ZERO_CHECKSUM

ACTIONS = (
    "run.started", "run.completed", "run.failed", "run.paused", "run.resumed", "run.cancelled",
    "run.retried", "step.entered", "step.evaluated", "step.dispatched", "step.executed",
    "step.skipped", "wait.started", "wait.completed", "event.received", "policy.evaluated",
    "error.occurred", "error.retried", "replay.recorded", "contact.erased",
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


class AuditRow(NamedTuple):
    """A sealed entry as `audit_log` stores it (its columns, in order): input, output and context
    are the canonical JSON text the checksum covered. Writing needs no second encoding, and
    verifying needs no decoding: the stored text goes into the canonical bytes as it is."""

    run_id: str
    seq: int
    id: str
    plan_id: str
    step_id: str | None
    tick: int
    timestamp: str
    action: str
    input: str | None
    output: str | None
    context: str | None
    previous_checksum: str
    checksum: str


def _checksum(
    entry_id: str, run_id: str, seq: int, plan_id: str, step_id: str | None, tick: int, timestamp: str, action: str,
    given: bytes | None, output: bytes | None, context: bytes | None, previous: str,
) -> str:  # fmt: skip
    """sha256(previous || canonical bytes), input/output/context given as canonical JSON already
    (embedded as they are: the same bytes as encoding their values).

    The bytes are joined here in `_Unsealed`'s sorted key order rather than by encoding an
    `_Unsealed` of them: the same bytes (a property test holds the two together) in about two
    thirds of the time, and every row sealed or verified goes through here."""
    enc = _encode
    canonical = b"".join((
        b'{"action":', enc(action), b',"context":', b"null" if context is None else context, b',"id":', enc(entry_id),
        b',"input":', b"null" if given is None else given, b',"output":', b"null" if output is None else output,
        b',"planId":', enc(plan_id), b',"previousChecksum":', enc(previous), b',"runId":', enc(run_id),
        b',"seq":', enc(seq), b',"stepId":', enc(step_id), b',"tick":', enc(tick), b',"timestamp":', enc(timestamp), b"}",
    ))  # fmt: skip
    return hashlib.sha256(previous.encode() + canonical).hexdigest()


def seal_rows(drafts: Iterable[EntryDraft], head: str, timestamp: str, new_id: Callable[[], str]) -> list[AuditRow]:
    """Turn drafts into chained rows, continuing from the run's chain `head`."""
    rows: list[AuditRow] = []
    previous = head
    for d in drafts:
        entry_id = new_id()
        texts = [None if value is None else _encode_sorted(value) for value in (d.input, d.output, d.context)]
        given, output, context = texts
        checksum = _checksum(entry_id, d.run_id, d.seq, d.plan_id, d.step_id, d.tick, timestamp, d.action, given, output, context, previous)
        given_text, output_text, context_text = [None if t is None else t.decode() for t in texts]
        rows.append(AuditRow(d.run_id, d.seq, entry_id, d.plan_id, d.step_id, d.tick, timestamp, d.action,
                             given_text, output_text, context_text, previous, checksum))  # fmt: skip
        previous = checksum
    return rows


def seal(drafts: Iterable[EntryDraft], head: str, timestamp: str, new_id: Callable[[], str]) -> list[AuditEntry]:
    """`seal_rows` with the drafts' values kept as they are (for holders of entries, not rows)."""
    listed = list(drafts)
    return [
        AuditEntry(r.id, r.run_id, r.seq, r.plan_id, r.step_id, r.tick, r.timestamp, r.action, d.input, d.output,
                   d.context, r.previous_checksum, r.checksum)
        for d, r in zip(listed, seal_rows(listed, head, timestamp, new_id), strict=True)
    ]  # fmt: skip


def entry_of(row: AuditRow, with_context: bool = True) -> AuditEntry:
    """The entry a stored row holds, its JSON decoded (what readers are shown). Replay reads
    only inputs and outputs: `with_context=False` leaves the largest part, the context record
    (which the chain covers), undecoded."""
    context = _loads(row.context) if with_context else None
    return AuditEntry(row.id, row.run_id, row.seq, row.plan_id, row.step_id, row.tick, row.timestamp, row.action,
                      _loads(row.input), _loads(row.output), context, row.previous_checksum, row.checksum)  # fmt: skip


def row_checksum(row: AuditRow) -> str:
    """The checksum of a stored row: from its text as stored (rows written by `seal_rows`); text
    that is not in canonical form (or not JSON) is decoded and judged by its values."""
    run_id, seq, entry_id, plan_id, step_id, tick, timestamp, action, given, output, context, previous, stored = row
    checksum = _checksum(
        entry_id, run_id, seq, plan_id, step_id, tick, timestamp, action, None if given is None else given.encode(),
        None if output is None else output.encode(), None if context is None else context.encode(), previous,
    )  # fmt: skip
    if checksum == stored:
        return checksum
    try:
        return chain_checksum(entry_of(row))
    except ValueError:  # not JSON at all: no value could have produced this checksum
        return checksum


_decode_json = msgspec.json.Decoder().decode


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return _decode_json(text)
    except msgspec.DecodeError:  # what msgspec cannot hold (1e400): the stdlib reads it, verification judges it
        return json.loads(text)


_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_encode = msgspec.json.Encoder().encode


def verify_chain(
    entries: Sequence[AuditEntry] | Sequence[AuditRow], head_seq: int | None = None, head_checksum: str | None = None
) -> ChainVerification:
    """Recompute the chain (of entries, or of stored rows); `broken_at` is the seq of the first
    entry that does not verify.

    `head_seq`/`head_checksum` are what the run row says the chain ends with: comparing them
    catches the deletion of the newest entries, which a chain alone cannot show.
    """
    previous = ZERO_CHECKSUM
    first = entries[0].tick if entries else None
    last = entries[-1].tick if entries else None

    def broken(seq: int, why: str) -> ChainVerification:
        return ChainVerification(False, len(entries), first, last, seq, why)

    chain: Sequence[AuditEntry | AuditRow] = entries  # all of one kind; the loop tells them apart
    for expected_seq, entry in enumerate(chain, start=1):
        if entry.seq != expected_seq:
            return broken(expected_seq, f"entry seq {entry.seq} where {expected_seq} was expected (missing entry)")
        if entry.previous_checksum != previous:
            return broken(entry.seq, "previous_checksum does not match the entry before it")
        if (row_checksum(entry) if isinstance(entry, AuditRow) else chain_checksum(entry)) != entry.checksum:
            return broken(entry.seq, "checksum does not match the entry's content")
        previous = entry.checksum
    if head_seq is not None and head_seq != len(entries):
        return broken(len(entries) + 1, f"the run's chain head is at seq {head_seq} but {len(entries)} entries exist")
    if head_checksum is not None and head_checksum != previous:
        return broken(max(len(entries), 1), "the last entry is not the run's recorded chain head")
    return ChainVerification(True, len(entries), first, last)
