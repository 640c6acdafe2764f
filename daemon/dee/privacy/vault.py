"""`Vault`: the shell's side of contact encryption, for one holder of one cache.

The shell asks it for the keys of the contacts whose runs it is about to advance or enrol
(one store read per batch for the keys not cached, one insert for the keys it makes), seals
the kernel's drafts with them, and forgets a key when its contact is erased. Readers open
entries with the wrapped key they read alongside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dee.config import PrivacyConfig
from dee.kernel.audit import AuditEntry, EntryDraft
from dee.privacy.cache import KeyCache
from dee.privacy.keys import MasterKey, new_data_key
from dee.privacy.seal import ContactKey, key_id, open_entries, seal_drafts


class KeyStore(Protocol):
    async def contact_keys(self, contact_ids: Sequence[str]) -> dict[str, bytes]:
        """The wrapped keys of these contacts (an erased contact, or one enrolled with
        encryption off, has none)."""

    async def add_contact_keys(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        """Store these new wrapped keys where the contact has none (an erased contact gets a
        new one); returns the keys stored afterwards (a concurrent writer's, if it won)."""


class Vault:
    def __init__(self, master: MasterKey, cache_size: int, enabled: bool = True, owner: bool = True) -> None:
        """`owner`: the holder owns the contacts' partitions (a worker, a memory engine), so
        every erasure of them passes through it and a cached key is still the stored one; any
        other holder (a client) reads the stored keys each time and caches only the unwrap."""
        self.master = master
        self.enabled = enabled
        self.owner = owner
        self.cache = KeyCache(cache_size)

    @classmethod
    def of(cls, config: PrivacyConfig, master: MasterKey, owner: bool = True) -> Vault:
        return cls(master, config.key_cache, config.encrypt_contact_data, owner)

    def __repr__(self) -> str:
        return f"Vault(enabled={self.enabled}, cached={len(self.cache)})"

    async def keys(self, store: KeyStore, contact_ids: Sequence[str], create: bool) -> dict[str, ContactKey]:
        """The keys of these contacts; `create` makes one for each contact that has none
        (enrolment). Nothing is read when encryption is off."""
        if not self.enabled:
            return {}
        found: dict[str, ContactKey] = {}
        missing: list[str] = []
        for contact_id in sorted(set(contact_ids)):
            key = self.cache.get(contact_id) if self.owner else None
            if key is None:
                missing.append(contact_id)
            else:
                found[contact_id] = key
        if not missing:
            return found
        wrapped = await store.contact_keys(missing)
        absent = [c for c in missing if c not in wrapped]
        if create and absent:
            wrapped.update(await store.add_contact_keys({c: self.master.wrap(c, new_data_key()) for c in absent}))
        for contact_id, blob in wrapped.items():
            found[contact_id] = self.unwrapped(contact_id, blob)
        return found

    def unwrapped(self, contact_id: str, wrapped: bytes) -> ContactKey:
        """The key these bytes wrap (from the cache when it unwrapped the same bytes before)."""
        key = self.cache.get(contact_id, wrapped)
        if key is None:
            key = ContactKey(AESGCM(self.master.unwrap(contact_id, wrapped)), key_id(wrapped))
            self.cache.put(contact_id, wrapped, key)
        return key

    def seal(self, drafts: Sequence[EntryDraft], key: ContactKey | None) -> Sequence[EntryDraft]:
        """The drafts to chain: sealed under the contact's key, as they are without one."""
        return drafts if key is None or not drafts else seal_drafts(drafts, key)

    def open(self, entries: Sequence[AuditEntry], contact_id: str | None, wrapped: bytes | None) -> tuple[list[AuditEntry], bool]:
        """A run's entries as readers see them, and whether its contact's data was erased."""
        key = None if contact_id is None or wrapped is None else self.unwrapped(contact_id, wrapped)
        return open_entries(entries, key)

    def forget(self, contact_id: str) -> None:
        self.cache.evict(contact_id)
