"""Where simulated adapters remember what they "sent": in memory, or durably in Redis.

A simulated send IS the ledger write: recording the answer for an idempotency key and counting
the send happen in one atomic step, so a repeated key returns the first answer and the send
count of every key shows whether anything was ever sent twice, across process crashes too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec

from dee.bus import connect as redis_connect
from dee.bus.scripts import PipelinedScript
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
    """Hashes `<namespace>:sim:{<channel>}:answers|sends|requests` (one hash tag: the script
    writes all three), keyed by idempotency key."""

    def __init__(self, url: str, channel: str, namespace: str = "dee") -> None:
        self.url = url
        self.keys = [Keys(namespace).simulated(channel, name) for name in ("answers", "sends", "requests")]
        # a bounded pool that waits for a free connection rather than failing a burst of sends
        self._redis = redis_connect.client(url, max_connections=16)
        self._script = PipelinedScript(self._redis, _RECORD)
        self._waiting: list[tuple[str, bytes, asyncio.Future[bytes]]] = []
        self._flushes: set[asyncio.Future[None]] = set()

    async def record(self, key: str, decide: Callable[[], DispatchResponse]) -> DispatchResponse:
        """Recorded together with the other sends of this moment: the dispatcher hands a batch
        of requests over at once, and one pipelined round trip records them all (each key
        still in its own atomic script call)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, msgspec.json.encode(decide()), future))
        if len(self._waiting) == 1:  # the first of this moment: flush once the others have joined
            flush = asyncio.ensure_future(self._flush())
            self._flushes.add(flush)  # the loop keeps only a weak reference to a task
            flush.add_done_callback(self._flushes.discard)
        return msgspec.json.decode(await future, type=DispatchResponse)

    async def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            results = await self._script.run_all([(self.keys, (key, answer)) for key, answer, _ in batch])
        except Exception as exc:  # every waiting send fails alike (the dispatcher retries them)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), raw in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(raw)

    async def sends(self) -> dict[str, int]:
        counts = cast("dict[bytes, bytes]", await self._redis.hgetall(self.keys[1]))  # a client without decode_responses
        return {k.decode(): int(v) for k, v in counts.items()}


def ledger_for(config: Any, channel: str) -> MemoryLedger | RedisLedger:
    """Durable in daemon deployments (config with a real database), in memory otherwise."""
    database = getattr(config, "database", "memory://")
    if database.startswith("memory:"):
        return MemoryLedger()
    return RedisLedger(config.redis, channel, getattr(config, "namespace", "dee"))


# ---- real sends: at most one accepted send per idempotency key -------------------------------

Send = Callable[[], Awaitable[DispatchResponse]]
FINAL_KINDS = ("permanent", "hard_bounce")  # failures a retry of the same key cannot change
KEEP_ANSWERS_S = 30 * 86_400  # how long a key's answer is kept (retries come within hours)


def is_final(response: DispatchResponse) -> bool:
    """Whether the answer settles the key: delivered, or refused for good. A transient failure,
    a rate limit or a soft bounce is not kept, so the kernel's retry of the key sends again."""
    return response.status == "delivered" or response.error_kind in FINAL_KINDS


IN_PROGRESS = DispatchResponse("failed", "transient", "a send with this idempotency key is in progress")


class MemorySends:
    """`once` for one process (memory engines, tests)."""

    def __init__(self) -> None:
        self.answers: dict[str, DispatchResponse] = {}
        self.attempts: Counter[str] = Counter()
        self._sending: set[str] = set()

    async def once(self, key: str, send: Send) -> DispatchResponse:
        if key in self.answers:
            return self.answers[key]
        if key in self._sending:
            return IN_PROGRESS
        self._sending.add(key)
        try:
            self.attempts[key] += 1
            response = await send()
            if is_final(response):
                self.answers[key] = response
            return response
        finally:
            self._sending.discard(key)


class RedisSends:
    """`once` across processes and crashes: a key's answer is a Redis string (kept
    `KEEP_ANSWERS_S`), and a send in progress holds a lock that expires after `lock_ms` (set it
    above the adapter's own timeout: a dispatcher that died mid-send blocks its key that long,
    and a redelivered action waits for the lock rather than sending beside it).

    The one window left is the protocol's own: a crash after the server accepted the message
    and before its answer is stored here sends again when the action is redelivered, with the
    same Message-ID (receivers can drop the copy)."""

    def __init__(self, url: str, channel: str, namespace: str = "dee", lock_ms: int = 60_000) -> None:
        self._redis = redis_connect.client(url, max_connections=16)
        self._prefix = f"{namespace}:sent:{channel}"
        self._lock_ms = lock_ms

    async def once(self, key: str, send: Send) -> DispatchResponse:
        answer_key, lock_key = f"{self._prefix}:answer:{key}", f"{self._prefix}:lock:{key}"
        deadline = asyncio.get_running_loop().time() + 2 * self._lock_ms / 1000
        while True:
            known = await self._redis.get(answer_key)
            if known is not None:
                return msgspec.json.decode(known, type=DispatchResponse)
            if await self._redis.set(lock_key, b"1", nx=True, px=self._lock_ms):
                break
            # another send of this key is under way (a second dispatcher, or a dead one whose
            # lock has not expired yet): wait for its answer, or for the lock to lapse
            if asyncio.get_running_loop().time() > deadline:
                return IN_PROGRESS
            await asyncio.sleep(0.1)
        try:
            await self._redis.hincrby(f"{self._prefix}:attempts", key, 1)
            response = await send()
            if is_final(response):
                await self._redis.set(answer_key, msgspec.json.encode(response), ex=KEEP_ANSWERS_S)
            return response
        finally:
            await self._redis.delete(lock_key)

    async def attempts(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(f"{self._prefix}:attempts"))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self._redis.aclose()


def sends_for(config: Any, channel: str, lock_ms: int = 30_000) -> MemorySends | RedisSends:
    """Durable in daemon deployments (config with a real database), in memory otherwise."""
    if getattr(config, "database", "memory://").startswith("memory:"):
        return MemorySends()
    return RedisSends(config.redis, channel, getattr(config, "namespace", "dee"), lock_ms)
