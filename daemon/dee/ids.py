"""ULIDs for runs and audit entries: sortable by creation time, unique without coordination.

Used only by the shell (the kernel never makes ids: it would need the clock and randomness).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# every 10-bit value as its two Crockford base32 characters: 13 lookups encode a ULID
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _encode(value: int) -> str:
    """26 Crockford base32 characters of a 128-bit value (2 leading zero bits, as ULID has)."""
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in range(120, -10, -10)])


def ulid(ms: int | None = None, randomness: bytes | None = None) -> str:
    """A 26-character Crockford base32 ULID from a millisecond time and 80 random bits."""
    ms = time.time_ns() // 1_000_000 if ms is None else ms
    rand = os.urandom(10) if randomness is None else randomness
    return _encode((ms << 80) | int.from_bytes(rand, "big"))


class MonotonicUlid:
    """ULIDs strictly increasing within one generator, even many in one millisecond (the
    monotonic ULID form): runs created by one process list in creation order. Within a
    millisecond the next id is the previous plus one, so only the first draws randomness; and
    as consecutive ids share all but their last characters, those are encoded once per 1,024
    ids (the hot path when a tick seals thousands of audit entries)."""

    def __init__(self) -> None:
        self._last = 0
        self._stem_of = -1  # the value >> 10 whose encoding `_stem` holds
        self._stem = ""

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self._last >> 80:
            value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
        else:  # same millisecond (or the clock went back): one more than the last
            value = self._last + 1
        self._last = value
        if value >> 10 != self._stem_of:
            self._stem_of = value >> 10
            self._stem = _encode(value)[:24]
        return self._stem + _PAIRS[value & 0x3FF]


def now_iso() -> str:
    """The wall-clock stamp of audit entries and runs (informational: replay never compares it)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
