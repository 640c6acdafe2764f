"""The offline check of an exported run (`dee.checkpoint.proof.check_export`), with no database:
a chain sealed here, its head a leaf among others in a signed checkpoint, the inclusion path
drawn from the tree; spoiled in every part it commits to, it fails."""

from __future__ import annotations

import base64
import copy
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dee.checkpoint import merkle
from dee.checkpoint.leaves import Leaf, leaf_hashes
from dee.checkpoint.note import Checkpoint, Signer, sign_note
from dee.checkpoint.proof import check_export
from dee.kernel.audit import EntryDraft, seal
from dee.kernel.state import ZERO_CHECKSUM

SIGNER = Signer("dee.audit/test", Ed25519PrivateKey.generate())


def exported() -> dict[str, Any]:
    drafts = [EntryDraft("run-b", 1, "plan", None, 0, "run.started", output={"status": "pending"}),
              EntryDraft("run-b", 2, "plan", "hello", 5, "step.entered"),
              EntryDraft("run-b", 3, "plan", "done", 9, "run.completed", output={"outcome": "no_response"})]  # fmt: skip
    ids = iter(f"01ID{n}" for n in range(10))
    entries = seal(drafts, ZERO_CHECKSUM, "2026-01-05T00:00:00.000+00:00", lambda: next(ids))
    mine = Leaf("run-b", 3, entries[-1].checksum, "completed", "no_response", "done")
    leaves = [Leaf("run-a", 4, "a" * 64, "active", None, "x"), Leaf("run-b", 2, entries[1].checksum, "active", None, "hello"),
              mine, Leaf("run-c", 1, "c" * 64, "pending", None, None), Leaf("run-d", 2, "d" * 64, "waiting", None, "y")]  # fmt: skip
    hashes = leaf_hashes(leaves)
    note = sign_note(Checkpoint("dee.audit/test", len(leaves), merkle.root(hashes)).text(), SIGNER)
    return {"run": {"id": "run-b"}, "entries": msgspec.to_builtins(entries),
            "checkpoint": {"note": note, "treeSize": len(leaves), "leafIndex": 2, "leaf": msgspec.to_builtins(mine),
                           "auditPath": [base64.b64encode(n).decode() for n in merkle.inclusion_proof(hashes, 2)]}}  # fmt: skip


def test_an_untouched_export_checks_out() -> None:
    assert check_export(exported(), SIGNER.verifier) == []


def spoil_entry(d: dict[str, Any]) -> None:
    d["entries"][2]["output"]["outcome"] = "replied"


def spoil_leaf(d: dict[str, Any]) -> None:
    d["checkpoint"]["leaf"]["outcome"] = "replied"


def spoil_index(d: dict[str, Any]) -> None:
    d["checkpoint"]["leafIndex"] = 1


def spoil_path(d: dict[str, Any]) -> None:
    d["checkpoint"]["auditPath"] = d["checkpoint"]["auditPath"][:-1]


def spoil_note(d: dict[str, Any]) -> None:
    d["checkpoint"]["note"] = d["checkpoint"]["note"].replace("\n5\n", "\n6\n")


def truncate(d: dict[str, Any]) -> None:
    d["entries"] = d["entries"][:2]


def other_run(d: dict[str, Any]) -> None:
    d["run"]["id"] = "run-a"


@pytest.mark.parametrize("spoil", [spoil_entry, spoil_leaf, spoil_index, spoil_path, spoil_note, truncate, other_run])
def test_a_spoiled_export_fails(spoil: Any) -> None:
    document = copy.deepcopy(exported())
    spoil(document)
    assert check_export(document, SIGNER.verifier) != []


def test_another_key_fails_and_so_does_an_export_without_a_checkpoint() -> None:
    other = Signer("dee.audit/test", Ed25519PrivateKey.generate()).verifier
    assert check_export(exported(), other) != []
    assert check_export({**exported(), "checkpoint": None}, SIGNER.verifier) != []
