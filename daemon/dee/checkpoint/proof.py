"""One run's inclusion proof against the latest checkpoint, for its JSON export
(`dee audit export RUN --format json`), and the offline check of such an export.

The export then carries the checkpoint note, the run's leaf (the last version of it in the
checkpoint's tree), its index, the tree size and the audit path: whoever holds the verifier
key checks, with no access to DEE, that the checkpoint is signed, that the leaf is in its tree,
and that the exported chain recomputes and passes through the committed head.
"""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import msgspec

from dee.checkpoint import merkle
from dee.checkpoint.leaves import Leaf, latest_versions, leaf_data, leaf_hashes
from dee.checkpoint.note import Checkpoint, Verifier, open_note
from dee.checkpoint.store import latest, load_leaves
from dee.errors import CheckpointError
from dee.kernel.audit import AuditEntry, verify_chain


async def inclusion(conn: asyncpg.Connection, run_id: str) -> dict[str, Any] | None:
    """The export's `checkpoint` section, or None when no checkpoint includes the run yet."""
    last = await latest(conn)
    if last is None:
        return None
    leaves = await load_leaves(conn, last.size)
    found = latest_versions(leaves).get(run_id)
    if found is None:
        return None
    index, leaf = found
    path = merkle.inclusion_proof(leaf_hashes(leaves), index)
    return {"note": last.note, "treeSize": last.size, "leafIndex": index, "leaf": msgspec.to_builtins(leaf),
            "auditPath": [base64.b64encode(node).decode() for node in path]}  # fmt: skip


def check_export(document: dict[str, Any], verifier: Verifier) -> list[str]:
    """What is wrong with an exported run against its checkpoint (empty: it checks out)."""
    section = document.get("checkpoint")
    if not section:
        return ["the export carries no checkpoint (none had been taken that includes the run)"]
    try:
        cp = Checkpoint.parse(open_note(section["note"], verifier))
        leaf = msgspec.convert(section["leaf"], Leaf)
        path = [base64.b64decode(node, validate=True) for node in section["auditPath"]]
        entries = msgspec.convert(document["entries"], list[AuditEntry])
        index, size = int(section["leafIndex"]), int(section["treeSize"])
    except CheckpointError as exc:
        return [str(exc)]
    except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
        return [f"not a DEE audit export with a checkpoint: {exc}"]
    problems = []
    if size != cp.size:
        problems.append(f"the proof is for a tree of {size} leaves, the checkpoint signs {cp.size}")
    if not merkle.verify_inclusion(merkle.leaf_hash(leaf_data(leaf)), index, cp.size, path, cp.root):
        problems.append("the run's leaf is not in the checkpoint's tree (the inclusion proof fails)")
    run_id = (document.get("run") or {}).get("id")
    if leaf.run_id != run_id:
        problems.append(f"the leaf is of run {leaf.run_id}, the export of run {run_id}")
    chain = verify_chain(entries)
    if not chain.valid:
        problems.append(f"the exported chain is broken at seq {chain.broken_at}: {chain.reason}")
    if len(entries) < leaf.seq:
        problems.append(f"the checkpoint commits to {leaf.seq} entries, the export holds {len(entries)}")
    elif entries[leaf.seq - 1].checksum != leaf.head:
        problems.append(f"entry {leaf.seq} does not have the checksum the checkpoint commits to")
    return problems
