"""The published wire schema (config/schema/wire.schema.json) is the one the code enforces."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from dee.bus import messages as wire
from dee.routing import partition_for

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema" / "wire.schema.json"


def test_the_published_schema_is_current() -> None:
    assert json.loads(SCHEMA.read_text()) == json.loads(json.dumps(wire.json_schema(), sort_keys=True))


def test_messages_round_trip_in_camel_case() -> None:
    message = wire.Event(command_id="e1", reply_to="r", event_type="email.opened", contact_id="c1", run_id="r1")
    raw = wire.encode(message)
    assert b'"commandId":"e1"' in raw and b'"eventType":"email.opened"' in raw and b'"type":"event"' in raw
    assert wire.decode(raw) == message


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"type":"nope","commandId":"x"}', b'{"type":"pause"}',
     b'{"type":"pause","commandId":"x","runId":"r","extra":1}', b'{"type":"pause","commandId":1,"runId":"r"}'],
)  # fmt: skip
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        wire.decode(raw)


def test_the_partition_hash_is_the_documented_one() -> None:
    # uint64_big_endian(sha256(utf8(contact_id))[0:8]) mod partitions, pinned with known values
    import hashlib

    for cid in ("c1", "contact-0000042", "ünïcode"):
        expected = int.from_bytes(hashlib.sha256(cid.encode()).digest()[:8], "big") % 16
        assert partition_for(cid, 16) == expected
    # fixed values other languages can test their implementation against
    assert [partition_for(f"contact-{i:07d}", 16) for i in range(6)] == [8, 6, 4, 13, 5, 10]
