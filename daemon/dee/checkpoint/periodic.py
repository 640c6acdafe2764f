"""The daemons' periodic checkpoint (`audit.checkpoint_interval_s`): every daemon tries, every
interval; the advisory lock lets one of them through at a time and the others skip their turn.
A failure is logged and tried again next time: checkpoints are evidence, never in the way of
the ticks."""

from __future__ import annotations

import asyncio
import logging

from dee.checkpoint.keys import load_signer
from dee.checkpoint.store import origin, take_checkpoint
from dee.config import EngineConfig
from dee.stores.postgres.connect import connect

log = logging.getLogger("dee.checkpoint")


async def checkpoint_once(config: EngineConfig) -> int | None:
    """One try: the tree size signed, or None when another daemon was at it."""
    assert config.audit.signing_key_file is not None
    conn = await connect(config.database)
    try:
        signer = load_signer(config.audit.signing_key_file, await origin(conn))
        stored = await take_checkpoint(conn, signer, wait=False)
    finally:
        await conn.close()
    return None if stored is None else stored.size


async def checkpoint_loop(config: EngineConfig) -> None:
    while True:
        await asyncio.sleep(config.audit.checkpoint_interval_s)
        try:
            size = await checkpoint_once(config)
        except Exception as exc:  # the key or the database: said, and tried again next interval
            log.warning("audit checkpoint failed: %s: %s", type(exc).__name__, exc)
            continue
        if size is not None:
            log.info("audit checkpoint signed: tree size %s", size)
