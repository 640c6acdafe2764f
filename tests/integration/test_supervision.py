"""The daemon's long-running loops outlive failures: a dispatcher round that fails (Redis away)
is retried and the action still goes out once; a coordinator round that fails is followed by the
next one. If either loop died the process would look alive and do nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from dee.bus import messages as wire
from dee.bus.streams import DISPATCH_GROUP, FIELD, GroupReader, Keys, ensure_group
from dee.config import EngineConfig, SchedulerConfig
from dee.kernel.effects import DispatchRequest
from dee.plugin.contracts import DispatchResponse
from dee.scheduler.coordinator import Coordinator
from dee.scheduler.dispatcher import Dispatcher
from dee.shell.store import OutboxItem
from tests.integration.conftest import REDIS_URL


class CountingAdapter:
    name, channel = "counting", "email"

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        self.keys.append(request.idempotency_key)
        return DispatchResponse("delivered")


async def wait_until(check: Any, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_dispatcher_round_that_fails_is_retried_and_the_action_goes_out(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(f"dee_test_{uuid.uuid4().hex[:12]}")
    redis = aioredis.from_url(REDIS_URL)
    adapter = CountingAdapter()
    dispatcher = Dispatcher("d1", redis, {"email": adapter}, 1000, keys, result_key=b"k" * 32)
    failures = {"left": 2}
    read = GroupReader.read

    async def flaky_read(self: GroupReader, count: int, block_ms: int | None) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise redis_errors.ConnectionError("injected: Redis went away")
        return await read(self, count, block_ms)

    monkeypatch.setattr(GroupReader, "read", flaky_read)
    request = DispatchRequest("run-1", "hello", "email", "k" * 64, "<m@x>", 1, {"to": "a@b.test"}, 7)
    await redis.xadd(keys.dispatch("email"), {FIELD: msgspec.json.encode(OutboxItem(3, "c1", request))})
    task = asyncio.create_task(dispatcher.run())
    try:

        async def answered() -> bool:
            return bool(await redis.xlen(keys.inbound(3)))

        await wait_until(answered)
        [(_, fields)] = await redis.xrange(keys.inbound(3))
        result = wire.decode(fields[FIELD])
        assert isinstance(result, wire.Result) and (result.run_id, result.status) == ("run-1", "delivered")
        assert failures["left"] == 0 and adapter.keys == ["k" * 64]
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 5)
        await redis.delete(keys.dispatch("email"), keys.inbound(3))
        await redis.aclose()


async def test_a_coordinator_round_that_fails_is_followed_by_the_next() -> None:
    config = EngineConfig(scheduler=SchedulerConfig(lease_ttl_ms=150))

    async def nothing(*_: Any) -> None:
        return None

    coordinator = Coordinator("c1", config, None, nothing, nothing)  # type: ignore[arg-type]
    rounds: list[str] = []

    async def rebalance() -> None:
        rounds.append("round")
        if len(rounds) == 1:
            raise RuntimeError("injected: an unexpected failure")
        if len(rounds) == 2:
            raise OSError("injected: the database went away")

    coordinator.rebalance = rebalance  # type: ignore[method-assign]
    task = asyncio.create_task(coordinator.run())
    try:
        await wait_until(lambda: asyncio.sleep(0, len(rounds) >= 4), 5)
    finally:
        task.cancel()
    assert len(rounds) >= 4


async def test_a_running_dispatcher_takes_over_the_actions_a_dead_one_held() -> None:
    """Dispatcher b read an action and died without answering; a, which started after that and
    is past its own (empty) pending entries, claims the action once it has been idle for
    `claim_after_ms` and sends it. (It used to claim it and then read only new entries: the
    run waited for its channel outcome forever.)"""
    keys = Keys(f"dee_test_{uuid.uuid4().hex[:12]}")
    redis = aioredis.from_url(REDIS_URL)
    stream = keys.dispatch("email")
    await ensure_group(redis, stream, DISPATCH_GROUP)
    request = DispatchRequest("run-1", "hello", "email", "d" * 64, "<m@x>", 1, {"to": "a@b.test"}, 7)
    await redis.xadd(stream, {FIELD: msgspec.json.encode(OutboxItem(5, "c1", request))})
    assert len(await GroupReader(redis, stream, DISPATCH_GROUP, "b").read(count=10, block_ms=None)) == 1
    adapter = CountingAdapter()
    survivor = Dispatcher("a", redis, {"email": adapter}, 300, keys, result_key=b"k" * 32)
    task = asyncio.create_task(survivor.run())
    try:

        async def answered() -> bool:
            return bool(await redis.xlen(keys.inbound(5)))

        await wait_until(answered, 5)
        assert adapter.keys == ["d" * 64]

        async def acknowledged() -> bool:
            return (await redis.xpending(stream, DISPATCH_GROUP))["pending"] == 0

        await wait_until(acknowledged, 5)
    finally:
        survivor.stop()
        await asyncio.wait_for(task, 5)
        await redis.delete(stream, keys.inbound(5))
        await redis.aclose()
