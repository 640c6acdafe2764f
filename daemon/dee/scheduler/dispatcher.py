"""The dispatcher: channel actions from `dee:dispatch:{channel}` to adapters, results back.

Any number of processes read a dispatch stream in one consumer group. Each action is handed to
the channel's adapter with its idempotency key; the answer goes to the run's partition stream
as a `result` message (`shell.dispatch.result_message`). An action is acknowledged only after
its result is on the partition stream; entries of a dead consumer are claimed after the lease
TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import msgspec
import redis.asyncio as aioredis

from dee.bus import messages as wire
from dee.bus.streams import DISPATCH_GROUP, FIELD, Entry, GroupReader, Keys, dead_letter, ensure_group, trim_acknowledged
from dee.metrics import Metrics
from dee.plugin.contracts import ChannelAdapter, DispatchResponse
from dee.scheduler import tuning
from dee.scheduler.outages import TRANSIENT_ERRORS, Outages
from dee.shell import dispatch
from dee.shell.store import OutboxItem

log = logging.getLogger("dee.dispatcher")


class Dispatcher:
    def __init__(
        self, instance: str, redis: aioredis.Redis, adapters: Mapping[str, ChannelAdapter],
        claim_after_ms: int, keys: Keys, metrics: Metrics | None = None, outages: Outages | None = None,
    ) -> None:  # fmt: skip
        self.instance = instance
        self.keys = keys
        self.redis = redis
        self.adapters = dict(adapters)
        self.claim_after_ms = claim_after_ms
        self.metrics = metrics
        self.outages = outages or Outages()
        self._stop = asyncio.Event()
        self._in_flight = asyncio.Semaphore(tuning.DISPATCH_IN_FLIGHT)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await asyncio.gather(*(self.serve(channel) for channel in sorted(self.adapters)))

    async def serve(self, channel: str) -> None:
        """Serve one channel until stopped. A failed round (Redis away, say) is logged and the
        round retried: the entries it held are read again (unacknowledged), their actions are
        sent again under the same idempotency keys (the adapters answer with the first result)."""
        stream = self.keys.dispatch(channel)
        reader = GroupReader(self.redis, stream, DISPATCH_GROUP, self.instance)
        rounds = 0
        next_claim = 0.0
        while not self._stop.is_set():
            try:
                if rounds == 0:
                    await ensure_group(self.redis, stream, DISPATCH_GROUP)
                if time.monotonic() >= next_claim:  # a dead consumer's actions wait at most 1.5 TTLs
                    await reader.claim_idle(self.claim_after_ms)
                    next_claim = time.monotonic() + self.claim_after_ms / 2000
                entries = await reader.read(tuning.DISPATCH_READ_COUNT, tuning.DISPATCH_BLOCK_MS)
                if entries:
                    await self.handle(channel, entries)
                    await reader.ack([e[0] for e in entries])
                rounds += 1
                if rounds % tuning.DISPATCH_TRIM_EVERY_ROUNDS == 0:
                    await trim_acknowledged(self.redis, stream, DISPATCH_GROUP)
                self.outages.recovered("Redis")
            except TRANSIENT_ERRORS as exc:
                self.outages.failed(exc, f"dispatcher {channel}")
                await self._pause(reader)
            except Exception:
                log.exception("dispatcher %s: a round failed; retrying", channel)
                await self._pause(reader)

    async def _pause(self, reader: GroupReader) -> None:
        reader.repending()
        await asyncio.sleep(tuning.STORAGE_PAUSE_S)

    async def handle(self, channel: str, entries: list[Entry]) -> None:
        adapter = self.adapters[channel]
        items: list[OutboxItem] = []
        for entry in entries:
            try:
                items.append(msgspec.json.decode(entry[1][FIELD], type=OutboxItem))
            except (KeyError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                await dead_letter(self.redis, self.keys.dispatch_dead(channel), self.keys.dispatch(channel), entry, str(exc))
        responses = await asyncio.gather(*(self._send(adapter, item) for item in items))
        async with self.redis.pipeline(transaction=False) as pipe:
            for item, response in zip(items, responses, strict=True):
                pipe.xadd(self.keys.inbound(item.partition), {FIELD: wire.encode(dispatch.result_message(item, response))})
            await pipe.execute()

    async def _send(self, adapter: ChannelAdapter, item: OutboxItem) -> DispatchResponse:
        started = time.perf_counter()
        async with self._in_flight:
            response = await dispatch.send(adapter, item)
        if self.metrics is not None:
            self.metrics.observe_dispatch(item.request.channel, response.status, time.perf_counter() - started)
        return response
