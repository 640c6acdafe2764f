"""Where simulated adapters remember what they "sent": in memory, or durably in Redis.

A simulated send IS the ledger write: recording the answer for an idempotency key and counting
the send happen in one atomic step, so a repeated key returns the first answer and the send
count of every key shows whether anything was ever sent twice, across process crashes too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from dee.bus.streams import Keys
from dee.plugin.contracts import DispatchResponse

_RECORD = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  return existing
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return ARGV[2]
"""


class MemoryLedger:
    def __init__(self) -> None:
        self.answers: dict[str, DispatchResponse] = {}
        self.sends: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()

    async def record(self, key: str, decide: Callable[[], DispatchResponse]) -> DispatchResponse:
        self.requests[key] += 1
        if key not in self.answers:
            self.answers[key] = decide()
            self.sends[key] += 1
        return self.answers[key]


class RedisLedger:
    """Hashes `<namespace>:sim:{channel}:answers|sends|requests`, keyed by idempotency key."""

    def __init__(self, url: str, channel: str, namespace: str = "dee") -> None:
        self.url = url
        self.keys = [Keys(namespace).simulated(channel, name) for name in ("answers", "sends", "requests")]
        # a bounded pool that waits for a free connection rather than failing a burst of sends
        self._redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=16))

    async def record(self, key: str, decide: Callable[[], DispatchResponse]) -> DispatchResponse:
        raw = await self._redis.eval(_RECORD, 3, *self.keys, key, msgspec.json.encode(decide()))
        return msgspec.json.decode(raw, type=DispatchResponse)

    async def sends(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in (await self._redis.hgetall(self.keys[1])).items()}


def ledger_for(config: Any, channel: str) -> MemoryLedger | RedisLedger:
    """Durable in daemon deployments (config with a real database), in memory otherwise."""
    database = getattr(config, "database", "memory://")
    if database.startswith("memory:"):
        return MemoryLedger()
    return RedisLedger(config.redis, channel, getattr(config, "namespace", "dee"))
