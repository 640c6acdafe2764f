"""Connecting to PostgreSQL: a failure is one `ServiceUnavailableError` naming the server (its
password removed) and the reason, never a driver traceback."""

from __future__ import annotations

from typing import Any

import asyncpg

from dee.errors import ServiceUnavailableError
from dee.redact import redact, redact_text

SERVICE = "PostgreSQL"
CONNECT_TIMEOUT_S = 10


def why(exc: BaseException) -> str:
    """The reason of a failed connection in a few words (asyncpg's message, or the OS's)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact_text(text)


def unavailable(url: str, exc: BaseException) -> ServiceUnavailableError:
    return ServiceUnavailableError(SERVICE, redact(url), why(exc))


async def connect(url: str, **options: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S, **options)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise unavailable(url, exc) from exc


async def create_pool(url: str, **options: Any) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(url, timeout=CONNECT_TIMEOUT_S, **options)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise unavailable(url, exc) from exc
