"""The `[policy.deliverability]` and `[policy.budgets]` sections, validated when loaded.

Money is exact: amounts are Decimals in the file (`0.0125`, or `"0.0125"`) and integer
millionths of the currency unit ("micros") everywhere after, because the counters live in Redis,
whose only exact atomic arithmetic is on integers (and whose Lua numbers are doubles, exact up to
2^53 micros, some nine billion units). An amount with more than six decimal places is refused
rather than rounded.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Literal, NamedTuple

import msgspec

MICROS = 1_000_000  # millionths of the currency unit
MAX_AMOUNT = Decimal(2**53 // MICROS)  # what a Redis counter (a Lua double) holds exactly, in micros
RATE_UNITS_MS = {"s": 1000, "min": 60_000, "h": 3_600_000}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|min|h)\s*$")
_UNIX_DAY_ONE = date(1970, 1, 1).toordinal()


class Rate(NamedTuple):
    """At most `sends` in each window of `period_ms`."""

    sends: int
    period_ms: int
    text: str


def parse_rate(text: str) -> Rate:
    """`"100/min"` as a Rate; units `s`, `min` and `h`, at least one send per window."""
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"a rate is N/s, N/min or N/h with N at least 1, not {text!r}")
    return Rate(int(match.group(1)), RATE_UNITS_MS[match.group(2)], text.replace(" ", ""))


def micros(amount: Decimal) -> int:
    """An amount in integer millionths (exact: `Budget` refuses finer amounts at load)."""
    return int(amount * MICROS)


def unix_day(day: date) -> int:
    """Days since 1970-01-01: the index of a UTC day, as `moment_ms // 86_400_000` is."""
    return day.toordinal() - _UNIX_DAY_ONE


def day_date(day: int) -> date:
    """The UTC date of a day index (`unix_day`'s inverse)."""
    return date.fromordinal(_UNIX_DAY_ONE + day)


class _Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Warmup(_Settings, frozen=True):
    """A sending domain's warm-up: on day N since `start` (UTC) at most `daily[N]` emails from
    it; before `start`, `daily[0]`; after the list ends, no warm-up limit."""

    start: str
    daily: tuple[int, ...]

    def __post_init__(self) -> None:
        try:
            date.fromisoformat(self.start)
        except ValueError:
            raise ValueError(f"warmup start: a date as YYYY-MM-DD, not {self.start!r}") from None
        if not self.daily or min(self.daily) < 1:
            raise ValueError("warmup daily: a list of at least one daily limit, each at least 1")

    def limit_on(self, day: int) -> tuple[int, int] | None:
        """(N, daily[N]) on the UTC day `day` (days since 1970-01-01); None once warmed up."""
        n = max(0, day - unix_day(date.fromisoformat(self.start)))
        return (n, self.daily[n]) if n < len(self.daily) else None


class DeliverabilityConfig(_Settings, frozen=True):
    """Email limits, enforced by the dispatcher across every partition and process:
    `daily_limit` emails per sender address per UTC day, `domain_rates` per recipient domain
    (`"*"`: every other domain, each counted apart), `warmup` per sending domain."""

    daily_limit: int | None = None
    domain_rates: dict[str, str] = {}
    warmup: dict[str, Warmup] = {}

    def __post_init__(self) -> None:
        if self.daily_limit is not None and self.daily_limit < 1:
            raise ValueError("daily_limit: at least 1 email a day (leave it out for no limit)")
        for domain, rate in self.domain_rates.items():
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ValueError(f"domain_rates {domain!r}: {exc}") from None
        for name, table in (("domain_rates", self.domain_rates), ("warmup", self.warmup)):
            if len({d.lower() for d in table}) != len(table):
                raise ValueError(f"{name}: a domain is named twice (domains are compared without case)")

    @property
    def configured(self) -> bool:
        return self.daily_limit is not None or bool(self.domain_rates) or bool(self.warmup)


class Budget(_Settings, frozen=True):
    """What sends of `plan` (an id, or `"*"` for every plan) on `channel` may cost in each
    `period` (`total`, a UTC `day`, a UTC calendar `month`): each send costs `cost_per_send`,
    plus, on a call, `cost_per_minute` for every minute of its time limit."""

    channel: str
    limit: Decimal
    plan: str = "*"
    cost_per_send: Decimal = Decimal(0)
    cost_per_minute: Decimal = Decimal(0)
    period: Literal["total", "day", "month"] = "total"

    def __post_init__(self) -> None:
        where = f"budget {self.plan}/{self.channel}"
        for name in ("limit", "cost_per_send", "cost_per_minute"):
            amount: Decimal = getattr(self, name)
            if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
                raise ValueError(f"{where}: {name} must be an amount from 0 to {MAX_AMOUNT}, not {amount}")
            if int(amount.normalize().as_tuple().exponent) < -6:
                raise ValueError(f"{where}: {name} {amount} has more than 6 decimal places")
        if self.limit <= 0:
            raise ValueError(f"{where}: limit must be more than 0")
        if self.cost_per_send == 0 and self.cost_per_minute == 0:
            raise ValueError(f"{where}: give cost_per_send or cost_per_minute (a budget nothing costs limits nothing)")


class BudgetsConfig(_Settings, frozen=True):
    """Spending limits, and what a send that would exceed one does to its run: `pause` it
    (resumed, the send is tried again) or `fail` the step."""

    limits: tuple[Budget, ...] = ()
    on_exhausted: Literal["pause", "fail"] = "pause"

    def __post_init__(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        for budget in self.limits:
            identity = (budget.plan, budget.channel, budget.period)
            if identity in seen:
                raise ValueError(f"budgets: two budgets for plan {budget.plan!r}, channel {budget.channel!r}, period {budget.period}")
            seen.add(identity)
