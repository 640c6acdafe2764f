"""ULIDs: the Crockford encoding, and monotonic generators that never repeat or go back."""

from __future__ import annotations

import itertools

from dee.ids import _ALPHABET, MonotonicUlid, ulid


def decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + _ALPHABET.index(char)
    return value


def test_a_ulid_encodes_its_millisecond_and_randomness() -> None:
    text = ulid(1_700_000_000_123, bytes(range(10)))
    assert len(text) == 26 and decode(text) == (1_700_000_000_123 << 80) | int.from_bytes(bytes(range(10)), "big")


def test_a_monotonic_generator_gives_strictly_increasing_ids_that_decode_to_consecutive_values() -> None:
    make = MonotonicUlid()
    ids = [make() for _ in range(20_000)]  # many share a millisecond, some cross into the next
    assert ids == sorted(set(ids))
    values = [decode(i) for i in ids]
    same_ms = [(a, b) for a, b in itertools.pairwise(values) if a >> 80 == b >> 80]
    assert same_ms and all(b == a + 1 for a, b in same_ms)


def test_a_monotonic_generator_does_not_go_back_with_the_clock(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    make = MonotonicUlid()
    now = [5_000_000_000_000_000]
    monkeypatch.setattr("dee.ids.time.time_ns", lambda: now[0])
    first = make()
    now[0] -= 10_000_000_000  # ten seconds back
    second = make()
    assert second > first and decode(second) == decode(first) + 1


def test_ids_crossing_a_1024_boundary_within_a_millisecond_are_encoded_in_full(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    make = MonotonicUlid()
    monkeypatch.setattr("dee.ids.time.time_ns", lambda: 5_000_000_000_000_000)
    monkeypatch.setattr("dee.ids.os.urandom", lambda n: (0x3FE).to_bytes(n, "big"))  # two below a boundary
    ids = [make() for _ in range(4)]
    assert [decode(i) & ((1 << 80) - 1) for i in ids] == [0x3FE, 0x3FF, 0x400, 0x401]
    assert ids == sorted(ids) and ids[1][:24] != ids[2][:24]
