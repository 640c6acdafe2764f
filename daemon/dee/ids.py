"""ULIDs for runs and audit entries: sortable by creation time, unique without coordination.

Used only by the shell (the kernel never makes ids: it would need the clock and randomness).
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(ms: int | None = None, randomness: bytes | None = None) -> str:
    """A 26-character Crockford base32 ULID from a millisecond time and 80 random bits."""
    ms = time.time_ns() // 1_000_000 if ms is None else ms
    rand = os.urandom(10) if randomness is None else randomness
    value = (ms << 80) | int.from_bytes(rand, "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class MonotonicUlid:
    """ULIDs strictly increasing within one generator, even many in one millisecond (the
    monotonic ULID form): runs created by one process list in creation order."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
        if value <= self._last:
            value = self._last + 1
        self._last = value
        return ulid(value >> 80, (value & ((1 << 80) - 1)).to_bytes(10, "big"))
