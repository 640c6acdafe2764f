"""Storage outages: which failures are worth a retry, and logging them once, not per retry.

A partition worker, the dispatcher, the coordinator and the client's reply reader all retry
when PostgreSQL or Redis stops answering. Logged naively, a 15-second Redis outage was 124
tracebacks; here the first failure of an outage logs one warning (the service and the reason),
retries in between log at debug level, and the first success after it logs one line saying how
long it lasted and how many retries failed. One `Outages` is shared by a whole process.
"""

from __future__ import annotations

import logging
import time
import traceback

import asyncpg
import redis.exceptions as redis_errors

from dee.redact import redact_text

# what a retry can cure: the service is away or too slow, never the message's fault
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
    # a Redis Cluster between states: a failover under way, a slot moving, no node reachable yet
    redis_errors.ClusterDownError, redis_errors.TryAgainError, redis_errors.RedisClusterException,
)  # fmt: skip


def service_of(exc: BaseException) -> str:
    """Which service an error came from: by its type, else by the library that raised it."""
    if isinstance(exc, redis_errors.RedisError | redis_errors.RedisClusterException):
        return "Redis"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return "PostgreSQL"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if "/redis/" in frame.filename:
            return "Redis"
        if "/asyncpg/" in frame.filename:
            return "PostgreSQL"
    return "storage"


def describe(exc: BaseException) -> str:
    """One line for an error, credentials removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# failures this soon after a recovery belong to the same outage: connections that went stale
# while it lasted fail once each as they are used again
SETTLE_S = 3.0


class Outages:
    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("dee.outages")
        self._down: dict[str, list[float]] = {}  # service -> [since (monotonic), failed attempts, loud (1/0)]
        self._recovered: dict[str, float] = {}  # service -> when it last answered again

    def failed(self, exc: BaseException, where: str) -> None:
        service = service_of(exc)
        outage = self._down.get(service)
        if outage is not None:
            outage[1] += 1
            self.log.debug("%s still unavailable (%s, in %s)", service, describe(exc), where)
            return
        settling = time.monotonic() - self._recovered.get(service, -SETTLE_S) < SETTLE_S
        self._down[service] = [time.monotonic(), 1, 0 if settling else 1]
        level = logging.DEBUG if settling else logging.WARNING
        self.log.log(level, "%s unavailable (%s, in %s); retrying until it answers", service, describe(exc), where)

    def recovered(self, *services: str) -> None:
        """A round that used these services succeeded."""
        if not self._down:
            return
        for service in services:
            outage = self._down.pop(service, None)
            if outage is not None:
                self._recovered[service] = time.monotonic()
                level = logging.WARNING if outage[2] else logging.DEBUG
                self.log.log(level, "%s available again after %.1f s (%d failed attempts)",
                             service, time.monotonic() - outage[0], int(outage[1]))  # fmt: skip

    @property
    def down(self) -> list[str]:
        return sorted(self._down)
