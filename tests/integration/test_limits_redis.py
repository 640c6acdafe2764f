"""Limits and budgets in real Redis (`dee.limits.shared`): concurrent admissions from many
clients (as from many dispatcher processes) admit exactly the limit, counters live under the
deployment's namespace and expire with their window, and the Redis counters answer exactly as
the memory engine's do."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from dee.bus.streams import Keys
from dee.kernel.effects import DispatchRequest
from dee.limits.counters import GRACE_MS, MemoryLimiter, SendClock
from dee.limits.rules import Refusal, Rules
from dee.limits.settings import Budget, BudgetsConfig, DeliverabilityConfig, Warmup
from dee.limits.shared import RedisLimiter
from dee.ops.scratch import clear_namespace
from tests.integration.conftest import REDIS_URL

NOON = int(datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
async def keys() -> AsyncIterator[Keys]:
    namespace = f"dee_test_{uuid.uuid4().hex[:12]}"
    yield Keys(namespace)
    await clear_namespace(REDIS_URL, namespace)


def email(n: int, to: str = "pat@gmail.com", tick: int = 0, dispatch_no: int = 1) -> DispatchRequest:
    message = {"to": to, "from": "sales@acme.test"}
    return DispatchRequest(f"run-{n}", "mail", "email", f"{n:064d}", f"<{n}@x>", 1, message, tick, dispatch_no, plan_id="p")


def rules(deliverability: DeliverabilityConfig | None = None, budgets: BudgetsConfig | None = None) -> Rules:
    found = Rules.of(deliverability or DeliverabilityConfig(), budgets or BudgetsConfig())
    assert found is not None
    return found


async def admitted_concurrently(keys: Keys, limits_rules: Rules, count: int, clients: int = 8) -> int:
    """`count` admissions at once, spread over `clients` Redis clients of their own."""
    redises = [aioredis.from_url(REDIS_URL) for _ in range(clients)]
    try:
        limiters = [RedisLimiter(limits_rules, SendClock(NOON, 1000), r, keys) for r in redises]
        answers = await asyncio.gather(*(limiters[n % clients].admit(email(n)) for n in range(count)))
    finally:
        for r in redises:
            await r.aclose()
    return sum(answer is None for answer in answers)


async def test_concurrent_admissions_from_many_clients_admit_exactly_the_daily_limit(keys: Keys) -> None:
    assert await admitted_concurrently(keys, rules(DeliverabilityConfig(daily_limit=50)), 400) == 50


async def test_concurrent_admissions_spend_a_budget_exactly(keys: Keys) -> None:
    budget = Budget(channel="email", limit=Decimal("10"), cost_per_send=Decimal("0.3"), period="day")
    assert await admitted_concurrently(keys, rules(budgets=BudgetsConfig(limits=(budget,))), 200) == 33  # 9.9 of 10


async def test_counters_live_under_the_namespace_and_expire_with_their_window(keys: Keys) -> None:
    budget = Budget(channel="email", limit=Decimal("5"), cost_per_send=Decimal("1"))
    limits_rules = rules(DeliverabilityConfig(daily_limit=10, domain_rates={"gmail.com": "5/min"}), BudgetsConfig(limits=(budget,)))
    redis = aioredis.from_url(REDIS_URL)
    try:
        limiter = RedisLimiter(limits_rules, SendClock(NOON + 15_000, 1000), redis, keys)
        assert await limiter.admit(email(1)) is None
        found = {k.decode(): (await redis.get(k), await redis.pttl(k)) async for k in redis.scan_iter(match=f"{keys.ns}:*")}
    finally:
        await redis.aclose()
    day = NOON // 86_400_000
    prefix = f"{keys.ns}:{{limits}}:"
    assert set(found) == {f"{prefix}daily:sales@acme.test:{day}", f"{prefix}rate:gmail.com:60000:{NOON // 60_000}",
                          f"{prefix}budget:*:email:total:total", f"{prefix}admitted:{1:064d}:1"}  # fmt: skip
    assert found[f"{prefix}budget:*:email:total:total"] == (b"1000000", -1)  # micros; a total budget never expires
    used, ttl = found[f"{prefix}rate:gmail.com:60000:{NOON // 60_000}"]
    assert used == b"1" and 45_000 < ttl <= 45_000 + GRACE_MS  # the minute ends 45 s after the send
    used, ttl = found[f"{prefix}daily:sales@acme.test:{day}"]
    assert used == b"1" and 12 * 3_600_000 - 60_000 < ttl <= 12 * 3_600_000 + GRACE_MS


async def test_redis_and_memory_counters_answer_alike(keys: Keys) -> None:
    """One sequence of sends over minutes, two UTC days, two senders, a warm-up, a budget of one
    plan and a redelivery, through both kinds of counters: the same admissions, the same refusals."""
    budget = Budget(plan="q", channel="email", limit=Decimal("0.012"), cost_per_send=Decimal("0.004"))
    limits_rules = rules(
        DeliverabilityConfig(daily_limit=6, domain_rates={"gmail.com": "2/min", "*": "1/min"},
                             warmup={"acme.test": Warmup(start="2026-01-05", daily=(3, 5))}),
        BudgetsConfig(limits=(budget,)),
    )  # fmt: skip
    redis = aioredis.from_url(REDIS_URL)
    try:
        shared = RedisLimiter(limits_rules, SendClock(NOON, 1000), redis, keys)
        local = MemoryLimiter(limits_rules, SendClock(NOON, 1000))
        answers: list[tuple[Refusal | None, Refusal | None]] = []
        for n in range(120):  # four sends at once every 15 minutes, for 30 hours
            k = n % 4
            to = ("a@yahoo.com", "b@yahoo.com", "c@gmail.com", "d@web.de")[k]
            message = {"from": "sales@acme.test" if k < 2 else "ops@other.test", "to": to}
            request = DispatchRequest(f"run-{n}", "mail", "email", f"{n % 100:064d}", "<m@x>", 1, message, (n // 4) * 900, 1,
                                      plan_id="q" if k == 2 else "p")  # fmt: skip
            answers.append((await shared.admit(request), await local.admit(request)))
    finally:
        await redis.aclose()
    assert all(a == b for a, b in answers), [(n, a, b) for n, (a, b) in enumerate(answers) if a != b]
    kinds = [a.kind if a is not None else "admitted" for a, _ in answers]
    assert set(kinds) == {"admitted", "domain_rate", "warmup", "budget", "daily_limit"}, kinds
    redelivered = [n for n in range(100, 120) if kinds[n - 100] == "admitted"]  # the key and dispatch number of an admitted one
    assert redelivered and all(kinds[n] == "admitted" for n in redelivered)
