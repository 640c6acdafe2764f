"""Sealing contact data (`dee.privacy`): the AES-GCM round trip, the associated data that binds
a blob to its run, seq and field, wrong keys, the master key's wrapping and file, the bounded
key cache, and stored rows that hold no plaintext."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dee.config import PrivacyConfig
from dee.errors import AuditChainError, ConfigError
from dee.kernel.audit import EntryDraft, entry_of, seal_rows, verify_chain
from dee.privacy.cache import KeyCache
from dee.privacy.keys import KeyUnwrapError, MasterKey, master_key, master_key_from_file, new_data_key
from dee.privacy.seal import ContactKey, is_sealed, open_entries, open_value, seal_drafts, seal_value
from dee.privacy.vault import Vault

EMAIL = "Alice.Example+tag@example.com"
CONTACT = {"id": "c1", "email": EMAIL, "phone": "+14155550123", "attributes": {"first_name": "Alice"}}


def fresh() -> ContactKey:
    return ContactKey(AESGCM(new_data_key()), os.urandom(8).hex())


def drafts() -> list[EntryDraft]:
    return [
        EntryDraft("r1", 1, "p", None, 0, "run.started", input={"type": "start", "contact": CONTACT}),
        EntryDraft("r1", 2, "p", "s1", 0, "step.dispatched", output={"message": {"to": EMAIL, "body": f"Hi {EMAIL}"}},
                   context={"contact": CONTACT}),
    ]  # fmt: skip


def ids() -> object:
    n = iter(range(1, 100))
    return lambda: f"id-{next(n)}"


def test_a_sealed_value_opens_with_its_key_to_the_same_value() -> None:
    key = fresh()
    value = {"contact": CONTACT, "n": 1}
    sealed = seal_value(key, "r1", 3, "input", value)
    assert is_sealed(sealed) and EMAIL not in str(sealed)
    assert open_value(key, "r1", 3, "input", sealed) == value
    assert seal_value(key, "r1", 3, "input", value) != sealed  # a fresh nonce each time


@pytest.mark.parametrize(("run_id", "seq", "field"), [("r1", 4, "input"), ("r2", 3, "input"), ("r1", 3, "output")])
def test_a_blob_moved_to_another_run_seq_or_field_does_not_open(run_id: str, seq: int, field: str) -> None:
    key = fresh()
    sealed = seal_value(key, "r1", 3, "input", {"email": EMAIL})
    with pytest.raises(AuditChainError, match="does not open"):
        open_value(key, run_id, seq, field, sealed)


def test_a_blob_does_not_open_under_another_key_nor_altered() -> None:
    key = fresh()
    sealed = seal_value(key, "r1", 1, "context", {"email": EMAIL})
    with pytest.raises(AuditChainError):
        open_value(fresh(), "r1", 1, "context", sealed)
    blob = sealed["sealed"]
    altered = {"sealed": blob[:-6] + ("AAAAAA" if not blob.endswith("AAAAAA") else "BBBBBB")}
    with pytest.raises(AuditChainError):
        open_value(key, "r1", 1, "context", altered)


def test_stored_rows_hold_no_plaintext_and_their_chain_verifies_without_the_key() -> None:
    key = fresh()
    rows = seal_rows(seal_drafts(drafts(), key), "0" * 64, "2026-01-01T00:00:00Z", ids())  # type: ignore[arg-type]
    text = msgspec.json.encode(rows).decode()
    for needle in (EMAIL, EMAIL.lower(), "4155550123", "Alice"):
        assert needle not in text
    assert verify_chain(rows).valid  # the checksums cover the ciphertext
    entries = [entry_of(r) for r in rows]
    opened, gone = open_entries(entries, key)
    assert not gone and [e.input for e in opened] == [d.input for d in drafts()]
    assert [e.output for e in opened] == [d.output for d in drafts()]
    erased, gone = open_entries(entries, None)
    assert gone and erased[1].output == {"erased": True} and erased[1].context == {"erased": True}
    # the contact enrolled again after its erasure: a new key, which the old parts do not name
    renewed, gone = open_entries(entries, fresh())
    assert gone and renewed[0].input == {"erased": True}


def test_a_wrapped_key_opens_under_its_master_key_for_its_contact_only() -> None:
    master = MasterKey(os.urandom(32))
    data = new_data_key()
    wrapped = master.wrap("c1", data)
    assert master.unwrap("c1", wrapped) == data and data not in wrapped
    with pytest.raises(KeyUnwrapError):
        master.unwrap("c2", wrapped)  # moved to another contact's row
    with pytest.raises(KeyUnwrapError):
        MasterKey(os.urandom(32)).unwrap("c1", wrapped)
    assert "***" in repr(master) and data.hex() not in repr(master)


def test_the_master_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = master_key_from_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wrapped = first.wrap("c1", b"k" * 32)
    assert master_key(PrivacyConfig(master_key_file=str(path)), None).unwrap("c1", wrapped) == b"k" * 32
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match="master_key_file"):
        master_key_from_file(path)


def test_the_key_cache_keeps_at_most_its_capacity_least_recently_used_out() -> None:
    cache = KeyCache(2)
    keys = {c: fresh() for c in ("a", "b", "c")}
    cache.put("a", b"wa", keys["a"])
    cache.put("b", b"wb", keys["b"])
    assert cache.get("a") is keys["a"]  # a is now the most recent
    cache.put("c", b"wc", keys["c"])
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is keys["a"]
    assert cache.get("c", b"other bytes") is None  # a reader that re-read a replaced key
    cache.evict("a")
    assert cache.get("a") is None
    zero = KeyCache(0)
    zero.put("a", b"wa", keys["a"])
    assert len(zero) == 0


class _Keys:
    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.reads = 0

    async def contact_keys(self, contact_ids: list[str]) -> dict[str, bytes]:
        self.reads += 1
        return {c: self.rows[c] for c in contact_ids if c in self.rows}

    async def add_contact_keys(self, wrapped: dict[str, bytes]) -> dict[str, bytes]:
        self.rows.update({c: w for c, w in wrapped.items() if c not in self.rows})
        return {c: self.rows[c] for c in wrapped}


async def test_a_vault_makes_keys_on_enrolment_only_and_reads_them_once_while_cached() -> None:
    store = _Keys()
    vault = Vault(MasterKey(os.urandom(32)), cache_size=10)
    assert await vault.keys(store, ["c1"], create=False) == {}
    made = await vault.keys(store, ["c1", "c2"], create=True)
    assert set(made) == {"c1", "c2"} and set(store.rows) == {"c1", "c2"}
    reads = store.reads
    assert (await vault.keys(store, ["c1"], create=False))["c1"] is made["c1"] and store.reads == reads
    vault.forget("c1")
    await vault.keys(store, ["c1"], create=False)
    assert store.reads == reads + 1
    reader = Vault(vault.master, cache_size=10, owner=False)  # not the partition's owner: reads every time
    await reader.keys(store, ["c2"], create=False)
    await reader.keys(store, ["c2"], create=False)
    assert store.reads == reads + 3
    off = Vault(vault.master, cache_size=10, enabled=False)
    assert await off.keys(store, ["c9"], create=True) == {} and "c9" not in store.rows
