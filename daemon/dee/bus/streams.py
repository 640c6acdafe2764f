"""Redis Streams with consumer groups: reading (own pending first), acking, dead letters, trim.

Each partition has one inbound stream `dee:{p}:in` read by the group `dee`; dispatch streams
`dee:dispatch:CHANNEL` (`dee` being the deployment's namespace) are read by the group
`dispatchers` from any number of processes. An entry is acknowledged only after what it caused
is committed in Postgres, so a crash re-reads it (the commandId makes that harmless). A
malformed entry is copied with its reason to the stream's dead-letter twin and acknowledged: it
never blocks the entries behind it.

On a Redis Cluster the braces are hash tags: keys one command (a script) uses together carry
the same tag, so they share a slot (tests/unit/test_key_slots.py checks every such call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

GROUP = "dee"
DISPATCH_GROUP = "dispatchers"
FIELD = b"m"

Entry = tuple[bytes, dict[bytes, bytes]]
# what XREAD answers on our clients (bytes, redis-py's legacy RESP2-shaped replies): [stream, entries] per stream
StreamReply = list[tuple[bytes, list[Entry]]]
# XREADGROUP alike, but an entry deleted while pending comes back without fields
_GroupReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]


class Keys:
    """Every Redis key of one deployment, under its namespace (default `dee`), so deployments
    (a simulation, a test) can share one Redis server without seeing each other."""

    def __init__(self, namespace: str = "dee") -> None:
        self.ns = namespace

    def inbound(self, partition: int) -> str:
        return f"{self.ns}:{{{partition}}}:in"

    def dead(self, partition: int) -> str:
        return f"{self.ns}:{{{partition}}}:dead"

    def dispatch(self, channel: str) -> str:
        return f"{self.ns}:dispatch:{channel}"

    def dispatch_dead(self, channel: str) -> str:
        return f"{self.ns}:dispatch:{channel}:dead"

    def reply(self, client_id: str) -> str:
        return f"{self.ns}:reply:{client_id}"

    def simulated(self, channel: str, name: str) -> str:
        """A simulated channel's ledger hash (one hash tag per channel: its script writes three)."""
        return f"{self.ns}:sim:{{{channel}}}:{name}"

    def limit(self, name: str) -> str:
        """A counter of `dee.limits` (one hash tag for all: one admission's keys share a slot)."""
        return f"{self.ns}:{{limits}}:{name}"


async def ensure_group(redis: aioredis.Redis, stream: str, group: str) -> None:
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class GroupReader:
    """Reads one stream as one named consumer: its own pending entries first, then new ones.

    After a restart the consumer's pending entries (delivered, never acknowledged) come back
    first; `claim_idle` moves entries idle longer than `min_idle_ms` from other (dead)
    consumers to this one.
    """

    def __init__(self, redis: aioredis.Redis, stream: str, group: str, consumer: str) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._pending_done = False

    async def claim_idle(self, min_idle_ms: int) -> int:
        """Take over entries other consumers left unacknowledged for `min_idle_ms`. They join
        this consumer's pending entries, so the next `read` serves its pending entries again
        (a reader past them would otherwise read only new entries and never see the claimed)."""
        claimed = 0
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(self.stream, self.group, self.consumer, min_idle_ms, start, count=500)
            start, entries = reply[0], reply[1]
            claimed += len(entries)
            if entries:
                self._pending_done = False
            if start in (b"0-0", "0-0"):
                return claimed

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        if not self._pending_done:
            pending = await self._read("0", count, None)
            if pending:
                return pending
            self._pending_done = True
        return await self._read(">", count, block_ms)

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        reply = cast(_GroupReply, await self.redis.xreadgroup(self.group, self.consumer, {self.stream: start}, count=count, block=block_ms))
        if not reply:
            return []
        return [(entry_id, fields) for entry_id, fields in reply[0][1] if fields]

    def repending(self) -> None:
        """Read own pending entries again (after a failed commit, say)."""
        self._pending_done = False

    async def ack(self, ids: Sequence[bytes]) -> None:
        if ids:
            await self.redis.xack(self.stream, self.group, *ids)


async def dead_letter(redis: aioredis.Redis, dead_stream: str, source: str, entry: Entry, reason: str) -> None:
    """Keep the original entry, where it came from and why it was refused."""
    entry_id, fields = entry
    record: dict[FieldT, EncodableT] = {"reason": reason, "source": source, "entry_id": entry_id}
    for key, value in fields.items():
        record[b"orig:" + key] = value
    await redis.xadd(dead_stream, record, maxlen=100_000, approximate=True)


def refusal_record(source: str, message: bytes, reason: str) -> dict[FieldT, EncodableT]:
    """A dead letter for a message refused after it was read (the message as it was decoded):
    kept like an unreadable entry, so every refusal leaves a trace even without a replyTo."""
    return {"reason": reason, "source": source, "orig:m": message}


async def trim_acknowledged(redis: aioredis.Redis, stream: str, group: str) -> None:
    """Drop entries every consumer of the group is done with (older than the oldest pending)."""
    summary = await redis.xpending(stream, group)
    if summary and summary.get("pending"):
        oldest = summary["min"]
    else:
        groups = await redis.xinfo_groups(stream)
        info = next((g for g in groups if g["name"] in (group, group.encode())), None)
        if info is None:
            return
        last = info["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        ms, seq = last.split("-")
        oldest = f"{ms}-{int(seq) + 1}"
    await redis.xtrim(stream, minid=oldest, approximate=True)
