"""Partition routing, fixed and documented so publishers in any language compute the same.

    partition = uint64_big_endian(sha256(utf8(contact_id))[0:8]) mod partitions

and the inbound stream of partition p is `dee:{p}:in` (the braces are a Redis Cluster hash tag,
keeping each partition's keys on one slot).
"""

from __future__ import annotations

import hashlib


def partition_for(contact_id: str, partitions: int) -> int:
    digest = hashlib.sha256(contact_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions

