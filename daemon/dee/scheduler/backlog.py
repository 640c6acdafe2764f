"""Stream backlogs, sampled: `dee_inbound_backlog_messages` and `dee_dispatch_backlog_messages`.

A stream's backlog is what its consumer group has not finished with: the entries not yet
delivered to it (XINFO GROUPS `lag`, Redis 7) plus those delivered and not yet acknowledged
(`pending`). When Redis cannot tell the lag (an entry was deleted from the middle of the
stream, or Redis 6) the stream's length stands in for it: an upper bound, never an
understatement. Every `tuning.BACKLOG_SAMPLE_S` one pipelined round trip asks about the
partitions this process owns and about every dispatch stream (which every daemon reads, so
each reports the same value for it: take the max over daemons, not the sum).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis.asyncio as aioredis

from dee.bus.streams import DISPATCH_GROUP, GROUP, Keys
from dee.metrics import Metrics
from dee.scheduler import tuning
from dee.scheduler.outages import TRANSIENT_ERRORS, Outages


def backlog(groups: Any, group: str, length: int) -> int | None:
    """The group's backlog from an XINFO GROUPS reply (None when the group does not exist)."""
    for info in groups:
        name = info.get("name")
        if name in (group, group.encode()):
            lag = info.get("lag")
            return int(info.get("pending") or 0) + (int(lag) if lag is not None else length)
    return None


class BacklogSampler:
    def __init__(
        self, redis: aioredis.Redis, keys: Keys, metrics: Metrics, owned: Callable[[], Collection[int]],
        channels: Sequence[str], outages: Outages,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.owned = owned
        self.channels = sorted(channels)
        self.outages = outages

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
                self.outages.recovered("Redis")
            except TRANSIENT_ERRORS as exc:
                self.outages.failed(exc, "backlog sampler")
            await asyncio.sleep(tuning.BACKLOG_SAMPLE_S)

    async def sample(self) -> None:
        partitions = sorted(self.owned())
        streams = [(self.keys.inbound(p), GROUP) for p in partitions]
        streams += [(self.keys.dispatch(c), DISPATCH_GROUP) for c in self.channels]
        if not streams:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, _ in streams:
                pipe.xinfo_groups(stream)
                pipe.xlen(stream)
            replies = await pipe.execute(raise_on_error=False)
        values = [None if isinstance(g, Exception) or isinstance(n, Exception) else backlog(g, group, n)
                  for (_, group), g, n in zip(streams, replies[::2], replies[1::2], strict=True)]  # fmt: skip
        still = self.owned()  # a partition given up during the round trip is its new owner's to report
        for partition, value in zip(partitions, values, strict=False):
            if value is not None and partition in still:
                self.metrics.inbound_backlog.labels(str(partition)).set(value)
        for channel, value in zip(self.channels, values[len(partitions):], strict=True):
            if value is not None:
                self.metrics.dispatch_backlog.labels(channel).set(value)
