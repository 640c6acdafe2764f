"""The dispatcher: channel actions from `dee:dispatch:{channel}` to adapters, results back.

Any number of processes read a dispatch stream in one consumer group. Each action is handed to
the channel's adapter with its idempotency key, concurrently: at most the adapter's
`max_in_flight` at once (a real adapter takes tens to hundreds of milliseconds; one slow send
must not hold the others), and no more is read from the stream than there is room for (the
backlog stays in Redis, not in this process). Answers go to the runs' partition streams as
`result` messages (`shell.dispatch.result_message`), each acknowledged only after its result is
published, several per round trip. Entries of a dead consumer are claimed after the lease TTL.

With deliverability limits or budgets configured, each action is first admitted by them
(`dee.limits`, shared by every dispatcher of the deployment through Redis): a refused action is
not sent, and its answer is a failed result like any other (`rate_limited` with its wait, or
`budget_exhausted`). Without any, no admission is asked for at all.
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
from dee.limits.counters import Limiter
from dee.metrics import Metrics
from dee.plugin.contracts import ChannelAdapter, DispatchResponse
from dee.scheduler import tuning
from dee.scheduler.outages import TRANSIENT_ERRORS, Outages
from dee.shell import dispatch
from dee.shell.store import OutboxItem

log = logging.getLogger("dee.dispatcher")


class ChannelDispatch:
    """One channel's actions through its adapter: what is in flight and what is answered."""

    def __init__(self, dispatcher: Dispatcher, channel: str, adapter: ChannelAdapter) -> None:
        self.d = dispatcher
        self.channel = channel
        self.adapter = adapter
        self.limit = max(1, int(getattr(adapter, "max_in_flight", tuning.DISPATCH_IN_FLIGHT)))
        self.stream = dispatcher.keys.dispatch(channel)
        self.reader = GroupReader(dispatcher.redis, self.stream, DISPATCH_GROUP, dispatcher.instance)
        self.in_flight: dict[bytes, asyncio.Task[None]] = {}  # stream entry id -> its send
        self.answered: dict[bytes, tuple[int, wire.Result]] = {}  # sent; (partition, result) not yet published
        self._wake = asyncio.Event()
        # exported at 0 from the start; no partition: an entry that is no channel action names none
        self.dead_letters = dispatcher.metrics.dead_letters.labels("", "dispatch") if dispatcher.metrics is not None else None

    async def serve(self) -> None:
        """Until stopped: read as many actions as there is room for, send them, publish what is
        answered. A failed round (Redis away) is logged once as an outage and retried: entries
        it held are read again, and those in flight or answered are not sent again."""
        rounds = 0
        next_claim = 0.0
        started = False
        while not self.d.stopping.is_set() or self.in_flight or self.answered:
            try:
                if not started:
                    await ensure_group(self.d.redis, self.stream, DISPATCH_GROUP)
                    started = True
                if time.monotonic() >= next_claim:  # a dead consumer's actions wait at most 1.5 TTLs
                    await self.reader.claim_idle(self.d.claim_after_ms)
                    next_claim = time.monotonic() + self.d.claim_after_ms / 2000
                await self._round()
                rounds += 1
                if rounds % tuning.DISPATCH_TRIM_EVERY_ROUNDS == 0:
                    await trim_acknowledged(self.d.redis, self.stream, DISPATCH_GROUP)
                self.d.outages.recovered("Redis")
            except TRANSIENT_ERRORS as exc:
                self.d.outages.failed(exc, f"dispatcher {self.channel}")
                await self._pause()
            except Exception:
                log.exception("dispatcher %s: a round failed; retrying", self.channel)
                await self._pause()

    async def _round(self) -> None:
        room = self.limit - len(self.in_flight)
        if room > 0 and not self.d.stopping.is_set():
            block = tuning.DISPATCH_BLOCK_MS if not (self.in_flight or self.answered) else 1
            self._start(await self.reader.read(min(room, tuning.DISPATCH_READ_COUNT), block))
        elif self.in_flight and not self.answered:
            self._wake.clear()
            await asyncio.wait([asyncio.ensure_future(self._wake.wait())], timeout=tuning.DISPATCH_BLOCK_MS / 1000)
        await self._publish()

    def _start(self, entries: list[Entry]) -> None:
        for entry in entries:
            entry_id = entry[0]
            if entry_id in self.in_flight or entry_id in self.answered:
                continue  # read again after a failed round: already being handled
            try:
                item = msgspec.json.decode(entry[1][FIELD], type=OutboxItem)
            except (KeyError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                self.in_flight[entry_id] = asyncio.ensure_future(self._bury(entry, str(exc)))
                continue
            self.in_flight[entry_id] = asyncio.ensure_future(self._send(entry_id, item))
        self._gauge()

    async def _send(self, entry_id: bytes, item: OutboxItem) -> None:
        if self.d.limits is not None and not await self._admitted(entry_id, item):
            return
        started = time.perf_counter()
        response = await dispatch.send(self.adapter, item)
        if self.d.metrics is not None:
            result = "delivered" if response.status == "delivered" else (response.error_kind or "permanent")
            self.d.metrics.observe_dispatch(self.channel, self.adapter.name, result, time.perf_counter() - started)
        self._answer(entry_id, item, response)

    async def _admitted(self, entry_id: bytes, item: OutboxItem) -> bool:
        """Whether the limits let the action be sent now. A refusal is answered at once, the
        action unsent. Limits that cannot be asked (Redis away) send nothing either, and
        answer nothing: the entry stays pending and is read again after a pause."""
        assert self.d.limits is not None
        try:
            refusal = await self.d.limits.admit(item.request)
        except Exception as exc:  # fail closed: an action is sent only when admitted
            if isinstance(exc, TRANSIENT_ERRORS):
                self.d.outages.failed(exc, f"dispatcher {self.channel} limits")
            else:
                log.exception("dispatcher %s: the limits could not be asked; the action waits", self.channel)
            await asyncio.sleep(tuning.STORAGE_PAUSE_S)
            del self.in_flight[entry_id]
            self.reader.repending()
            self._wake.set()
            return False
        if refusal is None:
            return True
        if self.d.metrics is not None:
            self.d.metrics.dispatch_limited.labels(self.channel, refusal.kind).inc()
        self._answer(entry_id, item, dispatch.refused(refusal))
        return False

    def _answer(self, entry_id: bytes, item: OutboxItem, response: DispatchResponse) -> None:
        self.answered[entry_id] = (item.partition, dispatch.result_message(item, response, self.d.result_key))
        del self.in_flight[entry_id]
        self._wake.set()

    async def _bury(self, entry: Entry, reason: str) -> None:
        try:
            await dead_letter(self.d.redis, self.d.keys.dispatch_dead(self.channel), self.stream, entry, reason)
            await self.reader.ack([entry[0]])
            if self.dead_letters is not None:
                self.dead_letters.inc()
        finally:
            del self.in_flight[entry[0]]

    async def _publish(self) -> None:
        """The answered actions' results to their partitions, then their acknowledgement, in
        one round trip (kept to try again if Redis fails)."""
        if not self.answered:
            return
        done = dict(self.answered)
        async with self.d.redis.pipeline(transaction=False) as pipe:
            for partition, result in done.values():
                pipe.xadd(self.d.keys.inbound(partition), {FIELD: wire.encode(result)})
            pipe.xack(self.stream, DISPATCH_GROUP, *done)
            await pipe.execute()
        for entry_id in done:
            self.answered.pop(entry_id, None)
        self._gauge()

    async def _pause(self) -> None:
        self.reader.repending()
        await asyncio.sleep(tuning.STORAGE_PAUSE_S)

    def _gauge(self) -> None:
        if self.d.metrics is not None:
            self.d.metrics.dispatch_in_flight.labels(self.channel, self.adapter.name).set(len(self.in_flight))


class Dispatcher:
    def __init__(
        self, instance: str, redis: aioredis.Redis, adapters: Mapping[str, ChannelAdapter],
        claim_after_ms: int, keys: Keys, metrics: Metrics | None = None, outages: Outages | None = None,
        *, result_key: bytes, limits: Limiter | None = None,
    ) -> None:  # fmt: skip
        self.instance = instance
        self.keys = keys
        self.redis = redis
        self.adapters = dict(adapters)
        self.claim_after_ms = claim_after_ms
        self.metrics = metrics
        self.outages = outages or Outages()
        self.result_key = result_key  # results are signed with it: partitions accept no other
        self.limits = limits  # None: no deliverability limit or budget is configured
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop reading; what is in flight finishes and its results are published."""
        self.stopping.set()

    async def run(self) -> None:
        await asyncio.gather(*(ChannelDispatch(self, channel, self.adapters[channel]).serve() for channel in sorted(self.adapters)))
