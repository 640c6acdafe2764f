"""Scratch deployments are exclusive: a second one of the same database refuses rather than
dropping the first one's database in the middle of its work (two `dee bench` on one server)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from dee.errors import ScratchInUseError
from dee.ops.scratch import scratch_deployment
from tests.integration.conftest import deployment_config


async def test_a_scratch_database_in_use_is_refused_and_left_alone() -> None:
    config = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}")
    async with scratch_deployment(config):
        conn = await asyncpg.connect(config.database)
        try:
            await conn.execute("CREATE TABLE mine (n int)")
            with pytest.raises(ScratchInUseError, match="in use by another process"):
                async with scratch_deployment(config):
                    pass
            assert await conn.fetchval("SELECT count(*) FROM mine") == 0  # the same database, still there
        finally:
            await conn.close()
    async with scratch_deployment(config):  # released with the block
        pass


async def test_scratch_databases_of_other_names_go_side_by_side() -> None:
    first, second = (deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}") for _ in range(2))
    async with scratch_deployment(first), scratch_deployment(second):
        for config in (first, second):
            conn = await asyncpg.connect(config.database)
            await conn.close()
