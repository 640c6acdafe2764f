"""The two backends the contract suite holds to one behaviour, as fixtures.

`engine` is an entered Engine on each backend in turn: `memory` (a `memory://` deployment in
this process) and `daemon` (a fresh PostgreSQL database and Redis namespace, migrated, with a
daemon running inside the test process, `Engine(config, scheduler=True)`; dropped afterwards).
Both have a manual clock and 4 partitions; scheduler options for both come from
`@pytest.mark.deployment(max_runs_per_tick=2, ...)`. Tests that need other set-ups (a second
deployment, a plugin's adapter) open engines of the same backend with `deploy(...)`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import msgspec
import pytest

from dee import Engine, EngineConfig, MetricsConfig, SchedulerConfig, load_plan
from dee.config import PolicyConfig, PrivacyConfig
from dee.ops.scratch import scratch_deployment
from dee.plan.model import Plan
from dee.plugin.manager import PluginManager
from tests.contract.scenarios import OUTREACH, PARTITIONS, WELCOME
from tests.integration.conftest import deployment_config

BACKENDS = ("memory", "daemon")

Deploy = Callable[..., AbstractAsyncContextManager[Engine]]


def memory_config(**scheduler: Any) -> EngineConfig:
    options = {"clock": "manual", "partitions": PARTITIONS, **scheduler}
    return EngineConfig(database="memory://", scheduler=SchedulerConfig(**options), metrics=MetricsConfig(enabled=False))


def with_email_adapter(config: EngineConfig, adapter: str) -> EngineConfig:
    email = msgspec.structs.replace(config.channels.email, adapter=adapter)
    return msgspec.structs.replace(config, channels=msgspec.structs.replace(config.channels, email=email))


@asynccontextmanager
async def open_engine(
    backend: str, *, plugins: PluginManager | None = None, email_adapter: str | None = None,
    policy: PolicyConfig | None = None, privacy: PrivacyConfig | None = None, **scheduler: Any,
) -> AsyncIterator[Engine]:  # fmt: skip
    """An entered engine of `backend` (a fresh deployment for `daemon`) with these scheduler
    options, plugins, email adapter and policy."""

    def chosen(config: EngineConfig) -> EngineConfig:
        config = with_email_adapter(config, email_adapter) if email_adapter else config
        config = msgspec.structs.replace(config, privacy=privacy) if privacy is not None else config
        return msgspec.structs.replace(config, policy=policy) if policy is not None else config

    if backend == "memory":
        async with Engine(chosen(memory_config(**scheduler)), plugins=plugins) as engine:
            yield engine
        return
    assert backend == "daemon", backend
    base = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}", partitions=PARTITIONS, **scheduler)
    async with scratch_deployment(base) as config, Engine(chosen(config), scheduler=True, plugins=plugins) as engine:
        yield engine


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: every test using `engine` or `deploy` runs once on each."""
    return str(request.param)


@pytest.fixture
async def engine(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """An entered engine on `backend`; scheduler options from the `deployment` marker."""
    marker = request.node.get_closest_marker("deployment")
    async with open_engine(backend, **(marker.kwargs if marker else {})) as entered:
        yield entered


@pytest.fixture
def deploy(backend: str) -> Deploy:
    """`async with deploy(plugins=..., email_adapter=..., policy=..., **scheduler) as engine`: another
    engine of the backend under test, on a deployment of its own."""
    return lambda **options: open_engine(backend, **options)


@pytest.fixture
def outreach() -> Plan:
    return load_plan(OUTREACH)


@pytest.fixture
def welcome() -> Plan:
    return load_plan(WELCOME)
