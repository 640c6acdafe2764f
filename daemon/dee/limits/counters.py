"""Admission: take an action's charges from their counters, all of them or none.

`Limiter.admit(request)` answers None (the action may be sent: its charges are taken) or the
`Refusal` (nothing is taken). Two kinds of counters have the same semantics: `RedisLimiter`
(`dee.limits.shared`), one Lua script per admission, for every dispatcher of a deployment, and
`MemoryLimiter` here, for the memory engine. An action handed out again with the same dispatch
number (redelivered after a crash) is admitted without being charged twice.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from dee.kernel.effects import DispatchRequest
from dee.limits.rules import DAY_MS, Charge, Refusal, Rules

MARK_TTL_MS = DAY_MS  # how long an admitted dispatch is remembered (a redelivery comes within the lease TTL)
GRACE_MS = 5_000  # a counter outlives its window by this much: the clocks of dispatcher hosts differ a little


class SendClock(NamedTuple):
    """The moment a send happens: on a manual clock, the moment of the tick the kernel decided
    it at (simulated time); on a wall clock, now, since an action read late is sent late."""

    epoch_ms: int
    tick_interval_ms: int
    wall: bool = False

    def now_ms(self, tick: int) -> int:
        moment = self.epoch_ms + tick * self.tick_interval_ms
        return max(moment, int(time.time() * 1000)) if self.wall else moment


def ttl_ms(charge: Charge, now_ms: int) -> int | None:
    """How long the counter must live from `now_ms` (None: for ever, a total budget)."""
    return None if charge.resets_at_ms is None else charge.resets_at_ms - now_ms + GRACE_MS


class Limiter(ABC):
    def __init__(self, rules: Rules, clock: SendClock) -> None:
        self.rules = rules
        self.clock = clock

    async def admit(self, request: DispatchRequest) -> Refusal | None:
        """None when the action may be sent now (its charges are taken), else why not."""
        now_ms = self.clock.now_ms(request.tick)
        charges = self.rules.charges(request, now_ms)
        if not charges:
            return None
        failed = await self.take(f"admitted:{request.idempotency_key}:{request.dispatch_no}", charges, now_ms)
        return self.rules.refusal([charges[i] for i in failed], now_ms) if failed else None

    @abstractmethod
    async def take(self, mark: str, charges: Sequence[Charge], now_ms: int) -> list[int]:
        """Atomically: when `mark` is known, nothing; else the indexes of the charges that do
        not fit, or (all fit) take every one and remember `mark`."""


class MemoryLimiter(Limiter):
    """Counters in a dict, for the memory engine: one event loop, and no await inside `take`,
    makes each admission atomic. Expired windows are swept as the dict grows."""

    SWEEP_FROM = 1024

    def __init__(self, rules: Rules, clock: SendClock) -> None:
        super().__init__(rules, clock)
        self._counters: dict[str, tuple[int, int | None]] = {}  # key -> (used, expires at, ms)
        self._sweep_at = self.SWEEP_FROM

    async def take(self, mark: str, charges: Sequence[Charge], now_ms: int) -> list[int]:
        self._sweep(now_ms)
        if self._used(mark, now_ms):
            return []
        failed = [i for i, c in enumerate(charges) if self._used(c.key, now_ms) + c.amount > c.limit]
        if failed:
            return failed
        for charge in charges:
            ttl = ttl_ms(charge, now_ms)
            self._counters[charge.key] = (self._used(charge.key, now_ms) + charge.amount, None if ttl is None else now_ms + ttl)
        self._counters[mark] = (1, now_ms + MARK_TTL_MS)
        return []

    def _used(self, key: str, now_ms: int) -> int:
        used, expires = self._counters.get(key, (0, None))
        return 0 if expires is not None and expires <= now_ms else used

    def _sweep(self, now_ms: int) -> None:
        if len(self._counters) < self._sweep_at:
            return
        self._counters = {k: v for k, v in self._counters.items() if v[1] is None or v[1] > now_ms}
        self._sweep_at = max(self.SWEEP_FROM, 2 * len(self._counters))
