"""The dispatcher under real latency: actions go to the adapter concurrently, at most the
adapter's `max_in_flight` at once, one slow send holds none of the others, no more is read
from the stream than there is room for, and every result is published and acknowledged."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import redis.asyncio as aioredis

from dee.bus import messages as wire
from dee.bus.streams import DISPATCH_GROUP, FIELD, Keys
from dee.kernel.effects import DispatchRequest
from dee.metrics import Metrics
from dee.plugin.contracts import DispatchResponse
from dee.scheduler.dispatcher import Dispatcher
from dee.shell.store import OutboxItem
from tests.integration.conftest import REDIS_URL


class SlowServer:
    """An adapter like a real one: 30 ms a send, `slow@` addresses take 1.5 s."""

    name, channel, max_in_flight = "slowpoke", "email", 4

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.answered: list[str] = []

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(1.5 if str(request.message["to"]).startswith("slow@") else 0.03)
        finally:
            self.now -= 1
        self.answered.append(str(request.message["to"]))
        return DispatchResponse("delivered")


async def test_sends_are_concurrent_bounded_and_a_slow_one_holds_none_of_the_others() -> None:
    keys = Keys(f"dee_test_{uuid.uuid4().hex[:12]}")
    redis = aioredis.from_url(REDIS_URL)
    adapter = SlowServer()
    metrics = Metrics()
    dispatcher = Dispatcher("d1", redis, {"email": adapter}, 10_000, keys, metrics, result_key=b"k" * 32)
    addresses = ["slow@x.test", *(f"p{i}@x.test" for i in range(20))]
    for i, to in enumerate(addresses):
        request = DispatchRequest(f"run-{i}", "hello", "email", f"{i:064d}", f"<{i}@x>", 1, {"to": to}, 0)
        await redis.xadd(keys.dispatch("email"), {FIELD: msgspec.json.encode(OutboxItem(0, f"c{i}", request))})
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.5)
        # while the slow send is still out, the fast ones went past it, and never more than 4 at once
        assert "slow@x.test" not in adapter.answered and len(adapter.answered) >= 12
        pending = await redis.xpending(keys.dispatch("email"), DISPATCH_GROUP)
        assert pending["pending"] <= adapter.max_in_flight  # the rest still waits in the stream

        async def all_published() -> bool:
            return await redis.xlen(keys.inbound(0)) == len(addresses)

        deadline = asyncio.get_running_loop().time() + 10
        while not await all_published():
            assert asyncio.get_running_loop().time() < deadline, "results missing"
            await asyncio.sleep(0.02)
        assert adapter.most == adapter.max_in_flight and adapter.answered[-1] == "slow@x.test"
        results = [wire.decode(f[FIELD]) for _, f in await redis.xrange(keys.inbound(0))]
        assert sorted(r.run_id for r in results if isinstance(r, wire.Result)) == sorted(f"run-{i}" for i in range(21))
        assert (await redis.xpending(keys.dispatch("email"), DISPATCH_GROUP))["pending"] == 0
        body = metrics.render().decode()
        assert 'dee_dispatch_results_total{adapter="slowpoke",channel="email",result="delivered"} 21.0' in body
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 5)
        for key in [k async for k in redis.scan_iter(match=f"{keys.ns}:*")]:
            await redis.delete(key)
        await redis.aclose()
