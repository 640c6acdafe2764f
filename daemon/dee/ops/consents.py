"""Consents recorded in bulk, as a CRM import would before a campaign (`dee simulate`, `dee
bench`: their simulated contacts agreed to be called, so the voice steps of the plan go ahead
under the consent gate, as they would for a real user's contacts)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dee.engine import Engine
from dee.records import ConsentRecord

CONCURRENCY = 500


async def grant(engine: Engine, contact_ids: Iterable[str], channel: str, source: str) -> int:
    """Record a granted `channel` consent for each contact; returns how many."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(contact_id: str) -> None:
        async with limit:
            await engine.record_consent(ConsentRecord(contact_id=contact_id, channel=channel, status="granted", source=source))

    ids = list(contact_ids)
    await asyncio.gather(*(one(c) for c in ids))
    return len(ids)
