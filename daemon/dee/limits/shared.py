"""Counters in Redis, shared by every dispatcher process of a deployment.

One Lua script per admission reads every counter the action charges and, only when all of them
fit, increments them all: Redis runs a script alone, so concurrent dispatchers in any number of
processes never admit past a limit between them. Counters are integers (sends, or micros of a
budget) under `Keys.limit`; a window's counter expires a little after its window ends, and a
total budget's counter, one per budget, lives as long as the deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.typing import EncodableT

from dee.bus.streams import Keys
from dee.limits.counters import MARK_TTL_MS, Limiter, SendClock, ttl_ms
from dee.limits.rules import Charge, Rules

# KEYS[1]: the dispatch's admission mark; KEYS[2..]: the counters. ARGV[1]: the mark's TTL;
# then per counter: amount, limit, TTL in ms (0: none). Returns the 0-based indexes that do not fit.
_ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local failed = {}
for i = 2, #KEYS do
  local at = 3 * (i - 2) + 2
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[at]) > tonumber(ARGV[at + 1]) then failed[#failed + 1] = i - 2 end
end
if #failed > 0 then return failed end
for i = 2, #KEYS do
  local at = 3 * (i - 2) + 2
  redis.call('INCRBY', KEYS[i], ARGV[at])
  local ttl = tonumber(ARGV[at + 2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return {}
"""


class RedisLimiter(Limiter):
    def __init__(self, rules: Rules, clock: SendClock, redis: aioredis.Redis, keys: Keys) -> None:
        super().__init__(rules, clock)
        self.keys = keys
        self._admit = redis.register_script(_ADMIT)

    def admission_keys(self, mark: str, charges: Sequence[Charge]) -> list[str]:
        """The script's KEYS: the mark, then the counters (all in one slot, see `Keys.limit`)."""
        return [self.keys.limit(mark), *(self.keys.limit(c.key) for c in charges)]

    async def take(self, mark: str, charges: Sequence[Charge], now_ms: int) -> list[int]:
        args: list[EncodableT] = [MARK_TTL_MS]
        for charge in charges:
            args += [charge.amount, charge.limit, ttl_ms(charge, now_ms) or 0]
        keys = self.admission_keys(mark, charges)
        return [int(i) for i in cast(list[int], await self._admit(keys=keys, args=args))]
