"""Fresh deployments on the real PostgreSQL and Redis: a new database and Redis namespace per
test, migrated, and dropped afterwards. Nothing depends on what an earlier run left behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from dee.config import ClientConfig, EngineConfig, MetricsConfig, SchedulerConfig
from dee.ops.scratch import scratch_deployment
from dee.stores.postgres.admin import with_database

PG_DSN = os.environ.get("DEE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def deployment_config(name: str, **scheduler: Any) -> EngineConfig:
    """A config for a test deployment named `name` (database `name`, Redis namespace `name`)."""
    options = {"clock": "manual", "partitions": 4, "lease_ttl_ms": 2000, **scheduler}
    return EngineConfig(
        database=with_database(PG_DSN, name), redis=REDIS_URL, namespace=name,
        scheduler=SchedulerConfig(**options), metrics=MetricsConfig(enabled=False),
        # a stuck partition fails its test in 30 s rather than after the 120 s default
        client=ClientConfig(reply_timeout_ms=10_000, idle_timeout_ms=30_000),
    )  # fmt: skip


@pytest.fixture
async def deployment(request: pytest.FixtureRequest) -> AsyncIterator[EngineConfig]:
    """A migrated, empty deployment; options from `@pytest.mark.deployment(partitions=16, ...)`."""
    marker = request.node.get_closest_marker("deployment")
    config = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}", **(marker.kwargs if marker else {}))
    async with scratch_deployment(config):
        yield config


def replace_scheduler(config: EngineConfig, **changes: Any) -> EngineConfig:
    return msgspec.structs.replace(config, scheduler=msgspec.structs.replace(config.scheduler, **changes))
