"""Connecting to Redis: clients on a bounded pool, and a first ping whose failure is one
`ServiceUnavailableError` naming the server (its password removed) and the reason. A cluster
URL (`redis+cluster://`) gives a Redis Cluster client (`dee.bus.cluster`)."""

from __future__ import annotations

import os
import re
import ssl

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from dee.bus import cluster
from dee.errors import ServiceUnavailableError
from dee.redact import redact, redact_text

SERVICE = "Redis"
CONNECT_TIMEOUT_S = 10
HEALTH_CHECK_S = 2
# what a Redis client raises when Redis is away or refuses: a cluster client's own errors (no
# reachable node, a slot no master serves) are not RedisErrors
ERRORS: tuple[type[BaseException], ...] = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)


def client(url: str, max_connections: int = 16, wait_s: float = 30) -> aioredis.Redis:
    """A client whose pool waits for a free connection (up to `wait_s`) rather than failing a
    burst of commands. A connection idle for `HEALTH_CHECK_S` is checked (PING) before it is
    used again, so one that went stale in the pool (Redis restarted, a proxy dropped it) is
    replaced instead of failing a command. Commands are not retried by the client: a lost
    XREADGROUP reply must be read again from the pending list, which the callers do.

    A cluster URL gives a RedisCluster (`dee.bus.cluster.cluster_client`)."""
    if cluster.is_cluster(url):
        return cluster.cluster_client(url, max_connections, CONNECT_TIMEOUT_S, HEALTH_CHECK_S)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s, socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
    )  # fmt: skip
    return aioredis.Redis(connection_pool=pool)


def unavailable(url: str, exc: BaseException) -> ServiceUnavailableError:
    errno = re.match(r"Error (\d+) connecting", str(exc))
    tls = tls_failure(exc)
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        reason = "connection refused"
    elif tls:  # before the errno: in "Error 1 connecting" the 1 is then OpenSSL's code, not an errno (EPERM)
        reason = f"TLS handshake failed ({tls})"
    elif errno:  # redis-py's "Error 111 connecting to host:port. <the OS's words>."
        reason = os.strerror(int(errno.group(1))).lower()
    elif isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        reason = f"authentication failed ({redact_text(str(exc))})"
    else:
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return ServiceUnavailableError(SERVICE, redact(url), reason)


async def ping(redis: aioredis.Redis, url: str, namespace: str = "dee") -> None:
    """Reach the server (for a cluster: learn its nodes and slots), and refuse a plain URL
    whose server is a cluster node, or a cluster URL whose server is not one."""
    try:
        await redis.ping()
        if not cluster.is_cluster(url):
            await cluster.refuse_cluster_node(redis, url, namespace)
    except redis_errors.RedisClusterException as exc:  # not a RedisError: the cluster client's own
        refused = cluster.refused_kind(url, exc)
        if refused is not None:
            raise refused from None
        raise unavailable(url, exc) from exc
    except (redis_errors.RedisError, OSError) as exc:
        raise unavailable(url, exc) from exc


def tls_failure(exc: BaseException) -> str | None:
    """What a failed TLS handshake said (an untrusted or expired certificate, a host name it does
    not cover, a server that does not speak TLS), or None when the failure was not TLS's.

    redis-py wraps the `ssl` error in its ConnectionError ("Error 1 connecting to ..."), whose
    text alone would read as EPERM; an operator setting up `rediss://` needs to be told that the
    certificate was refused, and why, to fix the CA or the server's certificate."""
    seen: BaseException | None = exc
    for _ in range(4):  # the ssl error is the cause (or the context) of redis-py's ConnectionError
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return str(seen.reason or seen).lower().replace("_", " ")
        seen = seen.__cause__ or seen.__context__
    return None
