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
)  # fmt: skip


def service_of(exc: BaseException) -> str:
    """Which service an error came from: by its type, else by the library that raised it."""
    if isinstance(exc, redis_errors.RedisError):
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


class Outages:
    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("dee.outages")
        self._down: dict[str, list[float]] = {}  # service -> [since (monotonic), failed retries]

    def failed(self, exc: BaseException, where: str) -> None:
        service = service_of(exc)
        outage = self._down.get(service)
        if outage is None:
            self._down[service] = [time.monotonic(), 1]
            self.log.warning("%s unavailable (%s, in %s); retrying until it answers", service, describe(exc), where)
        else:
            outage[1] += 1
            self.log.debug("%s still unavailable (%s, in %s)", service, describe(exc), where)

    def recovered(self, *services: str) -> None:
        """A round that used these services (all of them when none is named) succeeded."""
        if not self._down:
            return
        for service in services or list(self._down):
            outage = self._down.pop(service, None)
            if outage is not None:
                self.log.warning("%s available again after %.1f s (%d failed attempts)",
                                 service, time.monotonic() - outage[0], outage[1])  # fmt: skip

    @property
    def down(self) -> list[str]:
        return sorted(self._down)
