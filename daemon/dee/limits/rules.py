"""The arithmetic of limits: which counters one channel action charges at a moment, and what a
refusal says. Pure: a moment in Unix ms in, charges out; the counters themselves are elsewhere
(`dee.limits.counters`).

Every limit is a counter of a fixed window aligned to UTC: a rate of N per second, minute or
hour counts sends in each such window of Unix time, a daily limit or warm-up in each UTC day, a
budget in each UTC day, calendar month, or for ever (`total`). A window's counter is its own
key, so a new window starts at zero and an old one expires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import msgspec

from dee.kernel.effects import DispatchRequest
from dee.limits.settings import MICROS, Budget, BudgetsConfig, DeliverabilityConfig, day_date, micros, parse_rate, unix_day

LimitKind = Literal["daily_limit", "domain_rate", "warmup", "budget"]
DAY_MS = 86_400_000
MINUTE_MS = 60_000


class Charge(NamedTuple):
    """What one action takes from one counter, and why it is refused when that does not fit."""

    kind: LimitKind
    key: str  # the counter, relative to the deployment's limits prefix
    amount: int  # sends, or micros of a budget
    limit: int
    resets_at_ms: int | None  # when the counter's window ends (None: never, a total budget)
    reason: str


class Refusal(msgspec.Struct, frozen=True):
    """Why an action may not be sent now, and (for a rate limit) in how long it may."""

    kind: LimitKind
    reason: str
    retry_after_ms: int | None = None


def money(amount_micros: int) -> str:
    """Micros as the decimal amount they are (`1250000` -> `1.25`)."""
    return f"{(Decimal(amount_micros) / MICROS).normalize():f}"


def call_minutes(message: Mapping[str, Any]) -> int:
    """The minutes a call may last: its `maxDurationMs` rounded up, one when it names none."""
    limit = message.get("maxDurationMs")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return 1
    return -(-limit // MINUTE_MS)


def budget_window(period: str, now_ms: int) -> tuple[str, int | None]:
    """The window of a budget period at a moment: its name and when it ends."""
    day = now_ms // DAY_MS
    if period == "day":
        return str(day), (day + 1) * DAY_MS
    if period == "month":
        today = day_date(day)
        following = date(today.year + today.month // 12, today.month % 12 + 1, 1)
        return f"{today:%Y-%m}", unix_day(following) * DAY_MS
    return "total", None


class _Priced(NamedTuple):
    budget: Budget
    per_send: int
    per_minute: int
    limit: int


class Rules:
    """The configured limits, ready to charge actions (build with `Rules.of`)."""

    def __init__(self, deliverability: DeliverabilityConfig, budgets: BudgetsConfig) -> None:
        self.daily_limit = deliverability.daily_limit
        rates = {domain.lower(): parse_rate(rate) for domain, rate in deliverability.domain_rates.items()}
        self.default_rate = rates.pop("*", None)
        self.rates = rates
        self.warmup = {domain.lower(): schedule for domain, schedule in deliverability.warmup.items()}
        self.budgets = tuple(_Priced(b, micros(b.cost_per_send), micros(b.cost_per_minute), micros(b.limit)) for b in budgets.limits)
        self.email = deliverability.configured
        self.channels = frozenset(b.channel for b in budgets.limits) | ({"email"} if self.email else set())

    @classmethod
    def of(cls, deliverability: DeliverabilityConfig, budgets: BudgetsConfig) -> Rules | None:
        """The rules, or None when nothing is configured (admission then costs nothing)."""
        return cls(deliverability, budgets) if deliverability.configured or budgets.limits else None

    def charges(self, request: DispatchRequest, now_ms: int) -> list[Charge]:
        """Every counter the action takes from when it is sent at `now_ms` (Unix ms)."""
        if request.channel not in self.channels:
            return []
        out = self._email(request.message, now_ms) if request.channel == "email" and self.email else []
        for priced in self.budgets:
            budget = priced.budget
            if budget.channel == request.channel and budget.plan in ("*", request.plan_id):
                out.append(self._budget(priced, request, now_ms))
        return out

    def _email(self, message: Mapping[str, Any], now_ms: int) -> list[Charge]:
        day = now_ms // DAY_MS
        day_ends = (day + 1) * DAY_MS
        today = day_date(day).isoformat()
        sender = str(message.get("from") or "").strip().lower()
        out: list[Charge] = []
        if self.daily_limit is not None:
            reason = f"daily limit of {self.daily_limit} emails from {sender or '(no sender)'} reached for {today} (UTC)"
            out.append(Charge("daily_limit", f"daily:{sender}:{day}", 1, self.daily_limit, day_ends, reason))
        sending_domain = sender.rpartition("@")[2]
        schedule = self.warmup.get(sending_domain)
        warming = schedule.limit_on(day) if schedule is not None else None
        if schedule is not None and warming is not None:
            n, limit = warming
            out.append(Charge("warmup", f"warmup:{sending_domain}:{day}", 1, limit, day_ends,
                              f"warm-up of {sending_domain}: {limit} emails on {today} (day {n} since {schedule.start})"))  # fmt: skip
        domain = str(message.get("to") or "").strip().lower().rpartition("@")[2]
        rate = self.rates.get(domain, self.default_rate)
        if rate is not None:
            window = now_ms // rate.period_ms
            out.append(Charge("domain_rate", f"rate:{domain}:{rate.period_ms}:{window}", 1, rate.sends,
                              (window + 1) * rate.period_ms, f"rate of {rate.text} to {domain or '(no domain)'} reached"))  # fmt: skip
        return out

    def _budget(self, priced: _Priced, request: DispatchRequest, now_ms: int) -> Charge:
        budget = priced.budget
        cost = priced.per_send + (priced.per_minute * call_minutes(request.message) if priced.per_minute else 0)
        window, resets = budget_window(budget.period, now_ms)
        period = "in total" if budget.period == "total" else f"this {budget.period}"
        reason = (f"budget of {money(priced.limit)} for plan {budget.plan} on {budget.channel} {period} "
                  f"cannot pay {money(cost)} more")  # fmt: skip
        return Charge("budget", f"budget:{budget.plan}:{budget.channel}:{budget.period}:{window}", cost, priced.limit, resets, reason)

    @staticmethod
    def refusal(failed: Sequence[Charge], now_ms: int) -> Refusal:
        """The refusal for the charges that did not fit: an exhausted budget first (waiting
        does not help it), else the limit that frees up last (retrying sooner is refused again)."""
        for charge in failed:
            if charge.kind == "budget":
                return Refusal("budget", charge.reason)
        last = max(failed, key=lambda c: c.resets_at_ms or 0)
        return Refusal(last.kind, last.reason, max(1, (last.resets_at_ms or now_ms) - now_ms))
