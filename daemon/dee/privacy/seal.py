"""Sealing the contact-bearing parts of audit entries, and opening them again.

An entry's `input`, `output` and `context` (where a contact's email, phone and attributes, the
inputs that carry them and whatever a template rendered from them live) are each replaced by
`{"kid": key id, "sealed": base64(nonce || AES-GCM ciphertext)}` before the entry is chained: the checksum
covers the ciphertext, so a chain verifies whether or not its key still exists. The associated
data is `run id | seq | field`: a blob moved to another entry or field does not open. Nonces are
96 random bits drawn by the shell (never by the kernel, which stays pure); replay reads the
opened values, the same the kernel drafted, so it stays deterministic.

Opening gives `erased()` in place of each part sealed under a key that no longer exists: the
contact has no key, or (enrolled again after its erasure) a new one with another id.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dee.errors import AuditChainError
from dee.kernel.audit import AuditEntry, EntryDraft
from dee.kernel.erasure import erased
from dee.privacy.keys import NONCE_BYTES

SEALED = "sealed"
KEY_ID = "kid"


class ContactKey(NamedTuple):
    """A contact's data key, unwrapped, with its id (what a sealed part names its key by)."""

    aead: AESGCM
    kid: str


def key_id(wrapped: bytes) -> str:
    """A key's id: from its wrapped bytes (random for every key made), so it names nothing."""
    return hashlib.sha256(wrapped).hexdigest()[:16]
FIELDS = ("input", "output", "context")

_encode = msgspec.json.Encoder(order="sorted").encode
_decode = msgspec.json.Decoder().decode


def is_sealed(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 2 and isinstance(value.get(SEALED), str) and isinstance(value.get(KEY_ID), str)


def associated(run_id: str, seq: int, field: str) -> bytes:
    return f"{run_id}|{seq}|{field}".encode()


def seal_value(key: ContactKey, run_id: str, seq: int, field: str, value: dict[str, Any]) -> dict[str, Any]:
    nonce = os.urandom(NONCE_BYTES)
    blob = nonce + key.aead.encrypt(nonce, _encode(value), associated(run_id, seq, field))
    return {KEY_ID: key.kid, SEALED: base64.b64encode(blob).decode("ascii")}


def open_value(key: ContactKey, run_id: str, seq: int, field: str, value: dict[str, Any]) -> dict[str, Any]:
    """The value a sealed part holds; AuditChainError when it does not open under this key
    (a blob moved from another entry or field, or altered)."""
    try:
        blob = base64.b64decode(value[SEALED], validate=True)
        opened: dict[str, Any] = _decode(key.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated(run_id, seq, field)))
    except (InvalidTag, ValueError) as exc:
        raise AuditChainError(f"run {run_id} entry {seq}: the sealed {field} does not open ({type(exc).__name__})") from None
    return opened


def seal_drafts(drafts: Sequence[EntryDraft], key: ContactKey) -> list[EntryDraft]:
    """The drafts with every contact-bearing part sealed under the contact's key."""
    out: list[EntryDraft] = []
    for d in drafts:
        given, output, context = d.input, d.output, d.context
        out.append(msgspec.structs.replace(
            d,
            input=None if given is None else seal_value(key, d.run_id, d.seq, "input", given),
            output=None if output is None else seal_value(key, d.run_id, d.seq, "output", output),
            context=None if context is None else seal_value(key, d.run_id, d.seq, "context", context),
        ))  # fmt: skip
    return out


def open_entries(entries: Sequence[AuditEntry], key: ContactKey | None) -> tuple[list[AuditEntry], bool]:
    """The entries as readers see them: sealed parts opened, or `erased()` where their key is
    gone (`key` is the contact's current one, if any); and whether anything was erased. Plain
    parts (written with encryption off) pass unchanged."""
    out: list[AuditEntry] = []
    gone = False
    for e in entries:
        parts: dict[str, Any] = {}
        for field in FIELDS:
            value = getattr(e, field)
            if is_sealed(value):
                if key is None or value[KEY_ID] != key.kid:
                    parts[field], gone = erased(), True
                else:
                    parts[field] = open_value(key, e.run_id, e.seq, field, value)
        out.append(msgspec.structs.replace(e, **parts) if parts else e)
    return out, gone
