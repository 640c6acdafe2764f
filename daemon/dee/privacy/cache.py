"""A bounded cache of unwrapped contact keys (least recently used out first).

It saves the key read and the unwrap on the hot path: a partition's due runs mostly belong to
contacts whose keys it used a moment ago. It belongs to one holder (a partition worker for as
long as it owns its partition, an engine's reader), never to the process, and an erasure
evicts the contact's key from the cache of the partition that carries it out.
"""

from __future__ import annotations

from collections import OrderedDict

from dee.privacy.seal import ContactKey


class KeyCache:
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("privacy.key_cache: zero or more keys")
        self.capacity = capacity
        self._keys: OrderedDict[str, tuple[bytes, ContactKey]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, contact_id: str, wrapped: bytes | None = None) -> ContactKey | None:
        """The cached key of a contact (with `wrapped`: only if it was unwrapped from these bytes,
        so a reader that re-read the row never uses a key that was since replaced)."""
        found = self._keys.get(contact_id)
        if found is None or (wrapped is not None and found[0] != wrapped):
            return None
        self._keys.move_to_end(contact_id)
        return found[1]

    def put(self, contact_id: str, wrapped: bytes, key: ContactKey) -> None:
        if self.capacity == 0:
            return
        self._keys[contact_id] = (wrapped, key)
        self._keys.move_to_end(contact_id)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def evict(self, contact_id: str) -> None:
        self._keys.pop(contact_id, None)
