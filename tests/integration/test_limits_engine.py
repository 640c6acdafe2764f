"""Limits and budgets end to end, real mail to the SMTP peer, through a real daemon (Postgres,
Redis, the in-process scheduler and dispatcher) and through the memory engine alike: a daily
limit of N lets exactly N emails out and the rest go out at the next UTC midnight; an exhausted
budget pauses runs until it allows them and they are resumed; replay reproduces both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from dee import Engine, EngineConfig, load_plan
from dee.config import ChannelsConfig, EmailChannelConfig, MetricsConfig, PolicyConfig, SchedulerConfig, SenderConfig
from dee.limits.settings import Budget, BudgetsConfig, DeliverabilityConfig
from dee.ops.scratch import scratch_deployment
from tests.integration.conftest import deployment_config
from tests.peers.smtp import Recorder, smtp_server

WELCOME = "config/plans/welcome-sequence.yaml"
MIDNIGHT = 43_200  # the manual clock's tick 0 is 2026-01-05T12:00:00Z; ticks are seconds
pytestmark = pytest.mark.parametrize("backend", ["memory", "daemon"])


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int]]:
    with smtp_server() as running:
        yield running


@asynccontextmanager
async def engine_of(backend: str, port: int, policy: PolicyConfig) -> AsyncIterator[Engine]:
    """An engine of `backend` sending through the SMTP peer, with `policy`."""
    email = EmailChannelConfig(adapter="smtp", smtp_port=port, sender=SenderConfig(email="sales@acme.test", name="Acme"),
                               smtp_timeout_ms=3000)  # fmt: skip
    if backend == "memory":
        config = EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"), metrics=MetricsConfig(enabled=False))
        async with Engine(msgspec.structs.replace(config, channels=ChannelsConfig(email=email), policy=policy)) as engine:
            yield engine
        return
    async with scratch_deployment(deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}")) as config:
        config = msgspec.structs.replace(config, channels=ChannelsConfig(email=email), policy=policy)
        async with Engine(config, scheduler=True) as engine:
            yield engine


@pytest.fixture
async def limited(backend: str, server: tuple[Recorder, int]) -> AsyncIterator[Engine]:
    async with engine_of(backend, server[1], PolicyConfig(deliverability=DeliverabilityConfig(daily_limit=3))) as engine:
        yield engine


@pytest.fixture
async def budgeted(backend: str, server: tuple[Recorder, int]) -> AsyncIterator[Engine]:
    budget = Budget(plan="welcome-sequence", channel="email", limit=Decimal("0.02"), cost_per_send=Decimal("0.01"), period="day")
    async with engine_of(backend, server[1], PolicyConfig(budgets=BudgetsConfig(limits=(budget,)))) as engine:
        yield engine


def contacts(n: int) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "email": f"p{i}@example.com", "attributes": {"first_name": f"P{i}"}} for i in range(n)]


def welcomed(server: Recorder) -> list[str]:
    return sorted(r.recipients[0] for r in server.received if str(r.message["Subject"]).startswith("Welcome"))


async def run_ids(engine: Engine) -> dict[str, str]:
    return {r.contact_id: r.id for r in (await engine.list_runs(limit=100)).runs}


async def test_a_daily_limit_lets_exactly_n_out_and_the_rest_go_out_the_next_utc_day(
    limited: Engine, server: tuple[Recorder, int], backend: str
) -> None:
    engine, (recorder, _) = limited, server
    await engine.bulk_execute(load_plan(WELCOME), contacts(5), {"product": "DEE"})
    await engine.run_until_idle()
    assert len(welcomed(recorder)) == 3
    runs = await run_ids(engine)
    waiting = {}
    for contact_id, run_id in runs.items():
        retried = [e for e in await engine.audit.get_by_run(run_id) if e.action == "error.retried"]
        if retried:
            waiting[contact_id] = retried
    assert len(waiting) == 2 and {f"p{c[1:]}@example.com" for c in waiting}.isdisjoint(welcomed(recorder))
    for [retry] in waiting.values():
        assert retry.output is not None and retry.output["errorKind"] == "rate_limited" and retry.output["nextTick"] == MIDNIGHT
        assert retry.input is not None and retry.input["data"] == {"limit": "daily_limit", "retryAfterMs": MIDNIGHT * 1000}
    await engine.advance_clock(MIDNIGHT - 1 - engine.current_tick)
    assert len(welcomed(recorder)) == 3  # nothing more on the first day
    await engine.advance_clock(1)
    assert welcomed(recorder) == [f"p{i}@example.com" for i in range(5)]  # each once
    for contact_id in waiting:
        replayed = await engine.replay(runs[contact_id])
        assert replayed.identical, replayed.diffs


async def test_an_exhausted_budget_pauses_runs_until_it_allows_them_and_they_are_resumed(
    budgeted: Engine, server: tuple[Recorder, int], backend: str
) -> None:
    engine, (recorder, _) = budgeted, server
    await engine.bulk_execute(load_plan(WELCOME), contacts(3), {"product": "DEE"})
    await engine.run_until_idle()
    assert len(welcomed(recorder)) == 2
    runs = await run_ids(engine)
    [paused] = [r for r in (await engine.list_runs(limit=100)).runs if r.status == "paused"]
    why = "budget: budget of 0.02 for plan welcome-sequence on email this day cannot pay 0.01 more"
    pauses = [e for e in await engine.audit.get_by_run(paused.id) if e.action == "run.paused"]
    assert [e.output for e in pauses] == [{"reason": why}]
    await engine.resume_run(paused.id)  # the same day: refused again, paused again
    await engine.run_until_idle()
    assert (await engine.get_run(paused.id)).status == "paused" and len(welcomed(recorder)) == 2
    await engine.advance_clock(MIDNIGHT - engine.current_tick)
    assert (await engine.get_run(paused.id)).status == "paused"  # a paused run waits for its resume
    await engine.resume_run(paused.id)
    await engine.run_until_idle()
    assert len(welcomed(recorder)) == 3 and (await engine.get_run(paused.id)).status == "waiting"  # its one-day wait
    actions = [e.action for e in await engine.audit.get_by_run(paused.id)]
    assert actions.count("run.paused") == 2 and actions.count("run.resumed") == 2
    replayed = await engine.replay(paused.id)
    assert replayed.identical, replayed.diffs
    assert set(runs) == {"c0", "c1", "c2"}
