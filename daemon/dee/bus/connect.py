"""Connecting to Redis: clients on a bounded pool, and a first ping whose failure is one
`ServiceUnavailableError` naming the server (its password removed) and the reason."""

from __future__ import annotations

import os
import re

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from dee.errors import ServiceUnavailableError
from dee.redact import redact, redact_text

SERVICE = "Redis"
CONNECT_TIMEOUT_S = 10
HEALTH_CHECK_S = 2


def client(url: str, max_connections: int = 16, wait_s: float = 30) -> aioredis.Redis:
    """A client whose pool waits for a free connection (up to `wait_s`) rather than failing a
    burst of commands. A connection idle for `HEALTH_CHECK_S` is checked (PING) before it is
    used again, so one that went stale in the pool (Redis restarted, a proxy dropped it) is
    replaced instead of failing a command. Commands are not retried by the client: a lost
    XREADGROUP reply must be read again from the pending list, which the callers do."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s, socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
    )  # fmt: skip
    return aioredis.Redis(connection_pool=pool)


def unavailable(url: str, exc: BaseException) -> ServiceUnavailableError:
    errno = re.match(r"Error (\d+) connecting", str(exc))
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        reason = "connection refused"
    elif errno:  # redis-py's "Error 111 connecting to host:port. <the OS's words>."
        reason = os.strerror(int(errno.group(1))).lower()
    elif isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        reason = f"authentication failed ({redact_text(str(exc))})"
    else:
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return ServiceUnavailableError(SERVICE, redact(url), reason)


async def ping(redis: aioredis.Redis, url: str) -> None:
    try:
        await redis.ping()
    except (redis_errors.RedisError, OSError) as exc:
        raise unavailable(url, exc) from exc
