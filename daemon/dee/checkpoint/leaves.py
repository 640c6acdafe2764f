"""The checkpoint's leaves: one version of one run's chain head each, in the leaf log's order.

A leaf's data is the canonical JSON (sorted keys, compact, UTF-8) of the run id, its last seq
(its entry count), its head checksum, and the status, outcome and current step of its row:
binding those means a row changed behind the engine's back without a new entry disagrees
with the checkpoint too. A checkpoint appends a new version of each run whose row changed
since the last checkpoint, runs in run id order, so a later tree extends an earlier one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from dee.checkpoint import merkle


class Leaf(msgspec.Struct, frozen=True, rename="camel"):
    run_id: str
    seq: int
    head: str
    status: str
    outcome: str | None
    current_step: str | None


_encode = msgspec.json.Encoder(order="sorted").encode


def leaf_data(leaf: Leaf) -> bytes:
    return _encode(leaf)


def leaf_hashes(leaves: Iterable[Leaf]) -> list[bytes]:
    return [merkle.leaf_hash(leaf_data(leaf)) for leaf in leaves]


def latest_versions(leaves: Sequence[Leaf]) -> dict[str, tuple[int, Leaf]]:
    """Run id -> (index, leaf) of the run's last version among `leaves`: what a tree of them
    commits to for each run."""
    return {leaf.run_id: (i, leaf) for i, leaf in enumerate(leaves)}
