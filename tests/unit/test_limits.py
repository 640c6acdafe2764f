"""The arithmetic of deliverability limits and budgets (`dee.limits`), on the in-process
counters: fixed UTC windows and their edges, the UTC day rollover, warm-up day N, exact money,
what a refusal says, all-or-none admission, and the configuration's validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dee.config import EngineConfig
from dee.errors import ConfigError
from dee.kernel.effects import DispatchRequest
from dee.limits.counters import MemoryLimiter, SendClock
from dee.limits.rules import Refusal, Rules, budget_window, call_minutes, money
from dee.limits.settings import Budget, BudgetsConfig, DeliverabilityConfig, Warmup, micros, parse_rate

_keys = iter(range(10**9))


def ms(text: str) -> int:
    """An ISO time (UTC) as Unix ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def email(to: str = "pat@gmail.com", sender: str = "sales@acme.test", plan: str = "outreach") -> DispatchRequest:
    """An email decided at tick 0: with `SendClock(now, 1)` it is sent at `now`."""
    message = {"to": to, "from": sender, "subject": "s", "text": "t"}
    return DispatchRequest("run", "mail", "email", f"key-{next(_keys)}", "<m@x>", 1, message, 0, plan_id=plan)


def call(max_duration_ms: int | None = None, plan: str = "outreach") -> DispatchRequest:
    message: dict[str, Any] = {"to": "+15550100", "from": "+15550000", "maxDurationMs": max_duration_ms}
    return DispatchRequest("run", "call", "voice", f"key-{next(_keys)}", "<c@x>", 1, message, 0, plan_id=plan)


def limiter(deliverability: DeliverabilityConfig | None = None, budgets: BudgetsConfig | None = None) -> MemoryLimiter:
    rules = Rules.of(deliverability or DeliverabilityConfig(), budgets or BudgetsConfig())
    assert rules is not None
    return MemoryLimiter(rules, SendClock(0, 1))


async def at(limits: MemoryLimiter, moment: str | int, request: DispatchRequest) -> Refusal | None:
    """Admit `request` as sent at `moment` (ISO UTC, or Unix ms)."""
    limits.clock = SendClock(ms(moment) if isinstance(moment, str) else moment, 1)
    return await limits.admit(request)


# ---- rates and windows -------------------------------------------------------------------


def test_rates_parse_and_refuse_what_is_not_a_rate() -> None:
    assert parse_rate("100/min")[:2] == (100, 60_000)
    assert parse_rate(" 5 / s ")[:2] == (5, 1000) and parse_rate("3/h")[:2] == (3, 3_600_000)
    for bad in ("0/s", "5/day", "5", "/min", "-1/s", "1.5/s"):
        with pytest.raises(ValueError, match="a rate is N/s"):
            parse_rate(bad)


async def test_a_domain_rate_counts_in_fixed_windows_and_says_when_the_window_ends() -> None:
    limits = limiter(DeliverabilityConfig(domain_rates={"gmail.com": "2/s"}))
    assert await at(limits, 5_000, email()) is None
    assert await at(limits, 5_999, email()) is None
    refused = await at(limits, 5_999, email())
    assert refused == Refusal("domain_rate", "rate of 2/s to gmail.com reached", 1)
    assert await at(limits, 6_000, email()) is None  # a new window starts at zero
    assert await at(limits, 6_000, email(to="pat@yahoo.com")) is None  # another domain: no rate configured


async def test_the_default_rate_counts_every_other_domain_on_its_own() -> None:
    limits = limiter(DeliverabilityConfig(domain_rates={"*": "1/min", "Gmail.COM": "2/min"}))
    results = [await at(limits, 0, email(to)) for to in ("a@yahoo.com", "b@yahoo.com", "c@web.de", "d@GMAIL.com", "e@gmail.com")]
    assert [r is None for r in results] == [True, False, True, True, True]
    assert results[1] == Refusal("domain_rate", "rate of 1/min to yahoo.com reached", 60_000)


async def test_the_daily_limit_is_per_sender_and_rolls_over_at_utc_midnight() -> None:
    limits = limiter(DeliverabilityConfig(daily_limit=2))
    assert await at(limits, "2026-01-05T00:00:00", email()) is None
    assert await at(limits, "2026-01-05T12:00:00", email()) is None
    refused = await at(limits, "2026-01-05T23:59:59.999", email())
    assert refused == Refusal("daily_limit", "daily limit of 2 emails from sales@acme.test reached for 2026-01-05 (UTC)", 1)
    assert await at(limits, "2026-01-05T23:59:59.999", email(sender="Other@Acme.test")) is None  # another sender
    assert await at(limits, "2026-01-06T00:00:00", email()) is None
    assert await at(limits, "2026-01-06T00:00:00", email()) is None
    late = await at(limits, "2026-01-06T18:00:00", email())
    assert late is not None and late.retry_after_ms == 6 * 3_600_000


async def test_warm_up_allows_daily_n_on_day_n_and_nothing_more_once_warmed_up() -> None:
    schedule = Warmup(start="2026-01-05", daily=(1, 2, 3))
    limits = limiter(DeliverabilityConfig(warmup={"acme.test": schedule}))
    admitted = {}
    for day in ("2026-01-03", "2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"):
        results = [await at(limits, f"{day}T10:00:00", email()) for _ in range(5)]
        admitted[day] = sum(r is None for r in results)
    assert admitted == {"2026-01-03": 1, "2026-01-05": 1, "2026-01-06": 2, "2026-01-07": 3, "2026-01-08": 5}
    refused = await at(limits, "2026-01-07T10:00:00", email())
    assert refused == Refusal("warmup", "warm-up of acme.test: 3 emails on 2026-01-07 (day 2 since 2026-01-05)", 14 * 3_600_000)
    assert await at(limits, "2026-01-07T10:00:00", email(sender="sales@other.test")) is None  # another sending domain


def test_budget_windows_are_utc_days_calendar_months_or_for_ever() -> None:
    assert budget_window("day", ms("2026-01-31T23:59:59")) == (str(ms("2026-01-31T00:00:00") // 86_400_000), ms("2026-02-01T00:00:00"))
    assert budget_window("month", ms("2026-01-31T23:59:59")) == ("2026-01", ms("2026-02-01T00:00:00"))
    assert budget_window("month", ms("2026-02-01T00:00:00")) == ("2026-02", ms("2026-03-01T00:00:00"))
    assert budget_window("month", ms("2026-12-15T08:00:00")) == ("2026-12", ms("2027-01-01T00:00:00"))
    assert budget_window("total", ms("2026-12-15T08:00:00")) == ("total", None)


# ---- money -------------------------------------------------------------------------------


def test_money_is_exact_millionths() -> None:
    assert micros(Decimal("0.0125")) == 12_500 and micros(Decimal("9007199254")) == 9_007_199_254_000_000
    assert money(12_500) == "0.0125" and money(300_000_000) == "300" and money(0) == "0"
    assert 0.1 + 0.1 + 0.1 > 0.3  # what floats would get wrong below


async def test_a_budget_pays_exactly_up_to_its_limit() -> None:
    budget = Budget(channel="email", limit=Decimal("0.3"), cost_per_send=Decimal("0.1"))
    limits = limiter(budgets=BudgetsConfig(limits=(budget,)))
    results = [await at(limits, 0, email()) for _ in range(4)]
    assert results[:3] == [None, None, None]
    assert results[3] == Refusal("budget", "budget of 0.3 for plan * on email in total cannot pay 0.1 more")
    assert await at(limits, ms("2030-01-01T00:00:00"), email()) is not None  # a total budget never resets


def test_a_call_reserves_its_time_limit_rounded_up_to_minutes() -> None:
    assert [call_minutes({"maxDurationMs": v}) for v in (None, 0, 1, 60_000, 60_001, 90_000)] == [1, 1, 1, 1, 2, 2]
    assert call_minutes({}) == 1 and call_minutes({"maxDurationMs": True}) == 1


async def test_voice_budgets_per_plan_and_period() -> None:
    monthly = Budget(channel="voice", limit=Decimal("0.1"), cost_per_send=Decimal("0.01"), cost_per_minute=Decimal("0.014"),
                     period="month")  # fmt: skip
    other_plan = Budget(plan="other", channel="voice", limit=Decimal("0.01"), cost_per_send=Decimal("0.01"))
    limits = limiter(budgets=BudgetsConfig(limits=(monthly, other_plan)))
    assert limits.rules.charges(call(90_000), 0)[0].amount == 38_000  # 0.01 + 2 minutes of 0.014
    assert await at(limits, "2026-01-10T10:00:00", call(90_000)) is None  # 0.038
    assert await at(limits, "2026-01-10T10:00:00", call(90_000)) is None  # 0.076
    refused = await at(limits, "2026-01-10T10:00:00", call(90_000))  # 0.114 > 0.1
    assert refused == Refusal("budget", "budget of 0.1 for plan * on voice this month cannot pay 0.038 more")
    assert await at(limits, "2026-01-10T10:00:00", call(None)) is None  # one minute: 0.024, 0.1 exactly
    assert await at(limits, "2026-02-01T00:00:00", call(90_000)) is None  # a new month
    assert await at(limits, "2026-02-01T00:00:00", call(plan="other")) is None
    other = await at(limits, "2026-02-01T00:00:00", call(plan="other"))
    assert other is not None and "plan other" in other.reason  # both budgets apply to plan other


# ---- admission ---------------------------------------------------------------------------


async def test_admission_takes_every_charge_or_none() -> None:
    limits = limiter(DeliverabilityConfig(daily_limit=3, domain_rates={"gmail.com": "1/h"}))
    assert await at(limits, 0, email()) is None
    assert (await at(limits, 0, email())) == Refusal("domain_rate", "rate of 1/h to gmail.com reached", 3_600_000)
    assert await at(limits, 0, email(to="pat@yahoo.com")) is None
    assert await at(limits, 0, email(to="pat@web.de")) is None  # the refused one took no daily slot
    assert (await at(limits, 0, email(to="pat@mail.ru"))) is not None


async def test_an_exhausted_budget_is_named_before_a_rate_and_the_longest_wait_wins() -> None:
    budget = Budget(channel="email", limit=Decimal("1"), cost_per_send=Decimal("1"))
    limits = limiter(DeliverabilityConfig(daily_limit=1, domain_rates={"*": "1/s"}), BudgetsConfig(limits=(budget,)))
    assert await at(limits, 500, email()) is None
    refused = await at(limits, 500, email())
    assert refused is not None and refused.kind == "budget"
    rules = limits.rules
    charges = rules.charges(email(), 500)
    rate, daily = (next(c for c in charges if c.kind == kind) for kind in ("domain_rate", "daily_limit"))
    assert rules.refusal([rate, daily], 500) == Refusal("daily_limit", daily.reason, 86_400_000 - 500)


async def test_a_redelivered_dispatch_is_not_charged_twice() -> None:
    limits = limiter(DeliverabilityConfig(daily_limit=1))
    first = email()
    assert await at(limits, 0, first) is None
    assert await at(limits, 0, first) is None  # the same key and dispatch number: after a crash
    again = DispatchRequest(**{**{f: getattr(first, f) for f in first.__struct_fields__}, "dispatch_no": 2})
    assert await at(limits, 0, again) is not None  # a retry is a new dispatch


async def test_expired_windows_and_admission_marks_are_swept() -> None:
    limits = limiter(DeliverabilityConfig(domain_rates={"*": "1/min"}))
    for minute in range(3 * 1440):  # three days: 4320 windows and as many marks, a day of marks alive at a time
        assert await at(limits, minute * 60_000, email()) is None
    assert len(limits._counters) <= 2 * (1440 + 1)


def test_nothing_configured_is_no_rules_and_an_unlimited_channel_no_charge() -> None:
    assert Rules.of(DeliverabilityConfig(), BudgetsConfig()) is None
    budget = Budget(channel="voice", limit=Decimal(1), cost_per_send=Decimal(1))
    voice_only = Rules.of(DeliverabilityConfig(), BudgetsConfig(limits=(budget,)))
    assert voice_only is not None and voice_only.charges(email(), 0) == []
    email_only = Rules.of(DeliverabilityConfig(daily_limit=5), BudgetsConfig())
    assert email_only is not None and email_only.charges(call(), 0) == []


def test_the_wall_clock_sends_now_and_the_manual_clock_at_the_decided_tick() -> None:
    assert SendClock(1000, 500).now_ms(4) == 3000
    now = int(datetime.now(UTC).timestamp() * 1000)
    assert SendClock(1000, 500, wall=True).now_ms(4) >= now


# ---- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "message"), [
    ({"deliverability": {"daily_limit": 0}}, "daily_limit: at least 1"),
    ({"deliverability": {"domain_rates": {"gmail.com": "100/day"}}}, "domain_rates 'gmail.com': a rate is N/s"),
    ({"deliverability": {"domain_rates": {"a.com": "1/s", "A.com": "2/s"}}}, "domain_rates: a domain is named twice"),
    ({"deliverability": {"warmup": {"acme.test": {"start": "05/01/2026", "daily": [5]}}}}, "warmup start: a date as YYYY-MM-DD"),
    ({"deliverability": {"warmup": {"acme.test": {"start": "2026-01-05", "daily": []}}}}, "warmup daily"),
    ({"budgets": {"limits": [{"channel": "voice", "limit": "1", "cost_per_send": "0.0000001"}]}}, "more than 6 decimal places"),
    ({"budgets": {"limits": [{"channel": "voice", "limit": "-1", "cost_per_send": "1"}]}}, "limit must be an amount"),
    ({"budgets": {"limits": [{"channel": "voice", "limit": "NaN", "cost_per_send": "1"}]}}, "limit must be an amount"),
    ({"budgets": {"limits": [{"channel": "voice", "limit": "1e10", "cost_per_send": "1"}]}}, "limit must be an amount"),
    ({"budgets": {"limits": [{"channel": "voice", "limit": "0", "cost_per_send": "1"}]}}, "limit must be more than 0"),
    ({"budgets": {"limits": [{"channel": "voice", "limit": "5"}]}}, "give cost_per_send or cost_per_minute"),
    ({"budgets": {"limits": [{"channel": "email", "limit": "5", "cost_per_send": "1"},
                             {"channel": "email", "limit": "9", "cost_per_send": "2"}]}}, "two budgets for plan '*'"),
    ({"budgets": {"on_exhausted": "skip"}}, "Invalid enum value 'skip'"),
    ({"budgets": {"limits": [{"channel": "email", "limit": "5", "cost_per_send": "1", "period": "week"}]}}, "Invalid enum value"),
    ({"deliverability": {"daily_limits": 5}}, "unknown field `daily_limits`"),
])  # fmt: skip
def test_the_configuration_is_validated_at_load(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EngineConfig.from_dict({"policy": policy})


def test_the_configuration_loads_amounts_exactly_from_toml_and_the_environment(tmp_path: Any) -> None:
    file = tmp_path / "dee.toml"
    file.write_text("""
[policy.deliverability]
domain_rates = {"gmail.com" = "100/min", "*" = "10/s"}
warmup = {"acme.test" = {start = "2026-01-05", daily = [50, 100]}}

[policy.budgets]
on_exhausted = "fail"

[[policy.budgets.limits]]
channel = "voice"
cost_per_send = 0.01
cost_per_minute = "0.014"
limit = 500
period = "month"
""")
    config = EngineConfig.load(file, env={"DEE_POLICY_DELIVERABILITY_DAILY_LIMIT": "2000"})
    deliverability, budgets = config.policy.deliverability, config.policy.budgets
    assert deliverability.daily_limit == 2000 and deliverability.domain_rates == {"gmail.com": "100/min", "*": "10/s"}
    assert deliverability.warmup == {"acme.test": Warmup(start="2026-01-05", daily=(50, 100))}
    [budget] = budgets.limits
    assert (budget.cost_per_send, budget.cost_per_minute, budget.limit) == (Decimal("0.01"), Decimal("0.014"), Decimal(500))
    assert (budget.plan, budget.period, budgets.on_exhausted) == ("*", "month", "fail")
