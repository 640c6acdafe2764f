"""`dee audit verify --checkpoint FILE`: what the database holds now, against a signed
checkpoint taken before.

1. the note must carry a valid signature by the verifier key (`checkpoint.signature`) for this
   deployment (`checkpoint.origin`);
2. the leaf log must hash to every stored checkpoint's root (`checkpoint.leaves`), a stored
   checkpoint's row must say what its note says (`checkpoint.stored`), each consistent with the
   next and the given one with the latest (RFC 9162 consistency proofs, `checkpoint.consistency`);
3. every run the checkpoint commits to must still exist (`checkpoint.missing_run`), hold at
   least the entries committed (`checkpoint.truncated`), and its entry at the committed seq
   must have the committed checksum (`checkpoint.rewritten`: a rewrite, a moved timestamp, a
   reordering that was re-chained); a run with no entry since must still show the committed
   status, outcome and step (`checkpoint.run_row`). An archived run is checked by the head its
   row keeps. Runs started after the checkpoint are counted as newer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise

import asyncpg
import msgspec

from dee.checkpoint import merkle
from dee.checkpoint.leaves import Leaf, latest_versions, leaf_hashes
from dee.checkpoint.note import Checkpoint, Verifier, open_note
from dee.checkpoint.store import Stored, load_leaves, origin, stored_checkpoints
from dee.errors import CheckpointError

RUNS_PER_READ = 500


class Finding(msgspec.Struct, frozen=True):
    check: str
    detail: str
    run_id: str | None = None


class CheckpointReport(msgspec.Struct):
    size: int = 0
    committed: int = 0  # runs the checkpoint commits to
    checked: int = 0
    archived: int = 0  # of them, checked by the head their row keeps
    newer: int = 0  # runs not in the checkpoint: started after it
    findings: list[Finding] = []


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    return Checkpoint.parse(open_note(note, verifier))


def _stored(s: Stored) -> tuple[Checkpoint | None, str]:
    """A stored checkpoint's body, or None with why not. Its signature is not required to be by
    the verifier key (older checkpoints may be signed by a key since rotated): what is checked
    is that the stored tree is the leaf log's, and that the row says what its note says."""
    try:
        body = Checkpoint.parse(s.note[: s.note.rfind("\n\n") + 1])
    except CheckpointError as exc:
        return None, f"the stored checkpoint of size {s.size}: {exc}"
    if (body.size, body.root.hex()) != (s.size, s.root):
        return None, f"the stored checkpoint of size {s.size}: its note says size {body.size}, root {body.root.hex()[:16]}..."
    return body, ""


def check_tree(given: Checkpoint, hashes: Sequence[bytes], stored: Sequence[tuple[Checkpoint | None, str]]) -> list[Finding]:
    """Step 2: the leaf log (`hashes`) against the stored checkpoints (opened, or None with
    why not) and the given checkpoint."""
    out: list[Finding] = []
    good = []
    for cp, why in stored:
        if cp is None:
            out.append(Finding("checkpoint.stored", why))
        elif cp.size > len(hashes) or merkle.root(hashes[: cp.size]) != cp.root:
            out.append(Finding("checkpoint.leaves", f"the leaf log does not hash to the stored checkpoint of size {cp.size}"))
        else:
            good.append(cp)
    for old, new in pairwise(good):
        proof = merkle.consistency_proof(hashes[: new.size], old.size)
        if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
            out.append(Finding("checkpoint.consistency", f"stored checkpoints {old.size} and {new.size} are not consistent"))
    last = good[-1] if good else None
    if last is None or given.size > last.size:
        out.append(Finding("checkpoint.consistency", f"no stored checkpoint extends this one (size {given.size}): "
                                                     "checkpoints or leaves were removed"))  # fmt: skip
    else:
        proof = merkle.consistency_proof(hashes[: last.size], given.size)
        if not merkle.verify_consistency(given.size, last.size, given.root, last.root, proof):
            out.append(Finding("checkpoint.consistency", f"this checkpoint (size {given.size}) is not a prefix of the latest "
                                                         f"stored one (size {last.size}): forged, or the log was rewritten"))  # fmt: skip
    return out


def check_run(leaf: Leaf, row: asyncpg.Record | None, checksums: dict[int, str] | None) -> list[Finding]:
    """Step 3 for one committed run: its row now and its live entries' checksums by seq
    (None: archived, checked by its row's head)."""

    def found(check: str, detail: str) -> list[Finding]:
        return [Finding(check, detail, leaf.run_id)]

    if row is None:
        return found("checkpoint.missing_run", f"committed with {leaf.seq} entries, the run is gone")
    if row["seq"] < leaf.seq or (checksums is not None and leaf.seq not in checksums):
        have = row["seq"] if checksums is None else len(checksums)
        return found("checkpoint.truncated", f"committed with {leaf.seq} entries, {have} now")
    if checksums is None and row["seq"] > leaf.seq:
        return []  # archived, and grown since: its committed entry is in the archive
    at = row["head"] if checksums is None else checksums[leaf.seq]
    if at != leaf.head:
        return found("checkpoint.rewritten", f"entry {leaf.seq} was committed with checksum {leaf.head[:16]}..., "
                                             f"it is {at[:16]}... now")  # fmt: skip
    if row["seq"] == leaf.seq and (row["head"], row["status"], row["outcome"], row["current_step"]) != (
        leaf.head, leaf.status, leaf.outcome, leaf.current_step):  # fmt: skip
        return found("checkpoint.run_row", f"no entry since the checkpoint, but the row says status {row['status']!r}, "
                                           f"outcome {row['outcome']!r}, step {row['current_step']!r}; committed "
                                           f"{leaf.status!r}, {leaf.outcome!r}, {leaf.current_step!r}")  # fmt: skip
    return []


async def verify_checkpoint(conn: asyncpg.Connection, note: str, verifier: Verifier) -> CheckpointReport:
    report = CheckpointReport()
    try:
        given = open_checkpoint(note, verifier)
    except CheckpointError as exc:
        report.findings.append(Finding("checkpoint.signature", f"refused: {exc}"))
        return report
    report.size = given.size
    if given.origin != await origin(conn):
        report.findings.append(Finding("checkpoint.origin", f"the checkpoint is of {given.origin}, not this deployment"))
    leaves = await load_leaves(conn)
    hashes = leaf_hashes(leaves)
    stored: list[tuple[Checkpoint | None, str]] = []
    for s in await stored_checkpoints(conn):
        stored.append(_stored(s))
    report.findings += check_tree(given, hashes, stored)
    committed = latest_versions(leaves[: given.size])
    report.committed = len(committed)
    ids = sorted(committed)
    for start in range(0, len(ids), RUNS_PER_READ):
        batch = ids[start : start + RUNS_PER_READ]
        rows = {r["run_id"]: r for r in await conn.fetch(
            "SELECT run_id, seq, head, status, outcome, current_step FROM runs WHERE run_id = ANY($1::text[])", batch)}  # fmt: skip
        checksums: dict[str, dict[int, str]] = defaultdict(dict)
        for r in await conn.fetch("SELECT run_id, seq, checksum FROM audit_log WHERE run_id = ANY($1::text[])", batch):
            checksums[r["run_id"]][r["seq"]] = r["checksum"]
        archived = {r["run_id"] for r in await conn.fetch(
            "SELECT r.run_id FROM runs r JOIN audit_archives a ON a.start_from <= r.start_tick AND r.start_tick < a.start_to "
            "WHERE r.run_id = ANY($1::text[])", batch)}  # fmt: skip
        for run_id in batch:
            leaf = committed[run_id][1]
            live: dict[int, str] | None = checksums.get(run_id, {})
            if run_id in archived and (not live or min(live) > leaf.seq):  # its committed entry left with the archive
                report.archived += 1
                live = None
            report.findings += check_run(leaf, rows.get(run_id), live)
            report.checked += 1
    report.newer = int(await conn.fetchval("SELECT count(*) FROM runs WHERE NOT run_id = ANY($1::text[])", ids))
    return report
