"""Stream backlogs, sampled: `dee_inbound_backlog_messages` and `dee_dispatch_backlog_messages`.

A stream's backlog is what its consumer group has not finished with: the entries not yet
delivered to it (XINFO GROUPS `lag`, Redis 7) plus those delivered and not yet acknowledged
(`pending`). When Redis cannot tell the lag (an entry deleted from the middle of the stream,
which the daemons never do, or a Redis older than 7) the gauge is left without a value rather
than given a wrong one; asking for the stream's length would need one more command in the
daemon's ACL (docs/securing-redis.md). Every `tuning.BACKLOG_SAMPLE_S` one pipelined round trip asks about the
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


def backlog(groups: Any, group: str) -> int | None:
    """The group's backlog from an XINFO GROUPS reply (None when the group does not exist or
    Redis cannot tell its lag)."""
    for info in groups:
        if info.get("name") in (group, group.encode()):
            lag = info.get("lag")
            return None if lag is None else int(info.get("pending") or 0) + int(lag)
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
            replies = await pipe.execute(raise_on_error=False)
        values = [None if isinstance(reply, Exception) else backlog(reply, group)
                  for (_, group), reply in zip(streams, replies, strict=True)]  # fmt: skip
        still = self.owned()  # a partition given up during the round trip is its new owner's to report
        for partition, value in zip(partitions, values, strict=False):
            if value is not None and partition in still:
                self.metrics.inbound_backlog.labels(str(partition)).set(value)
        for channel, value in zip(self.channels, values[len(partitions):], strict=True):
            if value is not None:
                self.metrics.dispatch_backlog.labels(channel).set(value)
