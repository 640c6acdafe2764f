"""A Lua script called once per key, many keys in one pipelined round trip, alike on a single
Redis server and on a Redis Cluster.

redis-py's `Script(keys, args, client=pipeline)` cannot do that on a cluster: awaiting it on
a cluster pipeline starts the pipeline afresh (the calls queued before it are dropped), a
cluster pipeline refuses its `evalsha` method, and nothing loads the script on the masters
the calls go to. Here the calls are queued as plain EVALSHA commands (routed by their keys),
and those a server answers NOSCRIPT (a server started since, a master that never saw the
script) are sent again once the script is loaded (SCRIPT LOAD reaches every master of a
cluster), so each call runs exactly once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

Call = tuple[Sequence[KeyT], Sequence[EncodableT]]  # one call's KEYS and ARGV


class PipelinedScript:
    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run_all(self, calls: Sequence[Call]) -> list[Any]:
        """Every call's answer, in order; the first error of any call is raised (the others
        have run: a caller retries calls that are harmless to repeat)."""
        results = await self._pipelined(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self.redis.script_load(self.source)
            again = await self._pipelined([calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _pipelined(self, calls: Sequence[Call]) -> list[Any]:
        if not calls:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
