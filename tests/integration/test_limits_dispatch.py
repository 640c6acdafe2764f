"""The dispatcher asks the limits before every send: a refused action never reaches the adapter
and is answered with a signed failed result (`rate_limited` with its wait, `budget_exhausted`),
counted in `dee_dispatch_limited_total`; limits that cannot be asked send nothing and answer
nothing until they can."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import msgspec
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from dee.bus import messages as wire
from dee.bus.streams import DISPATCH_GROUP, FIELD, Keys
from dee.kernel.effects import DispatchRequest
from dee.limits.counters import Limiter, MemoryLimiter, SendClock
from dee.limits.rules import Charge, Rules
from dee.limits.settings import Budget, BudgetsConfig, DeliverabilityConfig
from dee.limits.shared import RedisLimiter
from dee.metrics import Metrics
from dee.plugin.contracts import DispatchResponse
from dee.scheduler.dispatcher import Dispatcher
from dee.shell.store import OutboxItem
from tests.integration.conftest import REDIS_URL

KEY = b"k" * 32


class Counting:
    name, channel, max_in_flight = "counting", "email", 8

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        self.sent.append(request.run_id)
        return DispatchResponse("delivered")


@pytest.fixture
async def redis() -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    keys = Keys(f"dee_test_{uuid.uuid4().hex[:12]}")
    client = aioredis.from_url(REDIS_URL)
    yield client, keys
    for key in [k async for k in client.scan_iter(match=f"{keys.ns}:*")]:
        await client.delete(key)
    await client.aclose()


async def dispatch_all(client: aioredis.Redis, keys: Keys, limits: Limiter, count: int, metrics: Metrics | None = None,
                       plan: str = "p") -> tuple[Counting, list[wire.Result]]:  # fmt: skip
    """`count` emails through a dispatcher with `limits`; the results it published, in order."""
    adapter = Counting()
    dispatcher = Dispatcher("d1", client, {"email": adapter}, 10_000, keys, metrics, result_key=KEY, limits=limits)
    for i in range(count):
        request = DispatchRequest(f"run-{i}", "mail", "email", f"{i:064d}", f"<{i}@x>", 1,
                                  {"to": f"p{i}@gmail.com", "from": "sales@acme.test"}, 0, plan_id=plan)  # fmt: skip
        await client.xadd(keys.dispatch("email"), {FIELD: msgspec.json.encode(OutboxItem(0, f"c{i}", request))})
    task = asyncio.create_task(dispatcher.run())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while await client.xlen(keys.inbound(0)) < count:
            assert asyncio.get_running_loop().time() < deadline, "results missing"
            await asyncio.sleep(0.02)
        assert (await client.xpending(keys.dispatch("email"), DISPATCH_GROUP))["pending"] == 0
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 5)
    results = [wire.decode(f[FIELD]) for _, f in await client.xrange(keys.inbound(0))]
    assert all(isinstance(r, wire.Result) and wire.result_signed(r, KEY) for r in results)
    return adapter, sorted(results, key=lambda r: r.run_id)  # type: ignore[arg-type,return-value]


async def test_a_refused_email_is_not_sent_and_comes_back_rate_limited_with_its_wait(redis: tuple[aioredis.Redis, Keys]) -> None:
    client, keys = redis
    rules = Rules.of(DeliverabilityConfig(daily_limit=3), BudgetsConfig())
    assert rules is not None
    metrics = Metrics()
    noon = 1_767_614_400_000  # 2026-01-05T12:00:00Z
    limits = RedisLimiter(rules, SendClock(noon, 1000), client, keys)
    adapter, results = await dispatch_all(client, keys, limits, 5, metrics)
    assert len(adapter.sent) == 3
    refused = [r for r in results if r.status == "failed"]
    assert len(refused) == 2 and {r.run_id for r in refused}.isdisjoint(adapter.sent)
    for result in refused:
        assert result.error_kind == "rate_limited"
        assert result.data == {"limit": "daily_limit", "retryAfterMs": 12 * 3_600_000}  # until UTC midnight
        assert result.error == "daily limit of 3 emails from sales@acme.test reached for 2026-01-05 (UTC)"
    body = metrics.render().decode()
    assert 'dee_dispatch_limited_total{channel="email",limit="daily_limit"} 2.0' in body
    assert 'dee_dispatch_results_total{adapter="counting",channel="email",result="delivered"} 3.0' in body


async def test_an_exhausted_budget_comes_back_budget_exhausted(redis: tuple[aioredis.Redis, Keys]) -> None:
    client, keys = redis
    budget = Budget(plan="p", channel="email", limit=Decimal("2"), cost_per_send=Decimal("1"))
    rules = Rules.of(DeliverabilityConfig(), BudgetsConfig(limits=(budget,)))
    assert rules is not None
    adapter, results = await dispatch_all(client, keys, RedisLimiter(rules, SendClock(0, 1000), client, keys), 4)
    assert len(adapter.sent) == 2
    refused = [r for r in results if r.status == "failed"]
    assert [(r.error_kind, r.data) for r in refused] == [("budget_exhausted", {"limit": "budget"})] * 2
    assert refused[0].error == "budget of 2 for plan p on email in total cannot pay 1 more"


class Flaky(MemoryLimiter):
    """Counters whose store is away for the first `failures` admissions."""

    def __init__(self, rules: Rules, failures: int) -> None:
        super().__init__(rules, SendClock(0, 1000))
        self.failures = failures
        self.asked = 0

    async def take(self, mark: str, charges: Sequence[Charge], now_ms: int) -> list[int]:
        self.asked += 1
        if self.asked <= self.failures:
            raise redis.exceptions.ConnectionError("limits away")
        return await super().take(mark, charges, now_ms)


async def test_limits_that_cannot_be_asked_send_nothing_until_they_can(redis: tuple[aioredis.Redis, Keys]) -> None:
    client, keys = redis
    rules = Rules.of(DeliverabilityConfig(daily_limit=10), BudgetsConfig())
    assert rules is not None
    limits = Flaky(rules, failures=2)
    adapter, results = await dispatch_all(client, keys, limits, 1)
    assert limits.asked == 3 and adapter.sent == ["run-0"]  # sent once, after the limits answered
    assert [r.status for r in results] == ["delivered"]
