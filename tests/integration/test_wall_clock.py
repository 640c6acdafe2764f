"""The wall clock: a daemon moves ticks on its own, and waits end in real time."""

from __future__ import annotations

import asyncio
import time

import pytest

from dee import Duration, Engine, EngineConfig, create_plan, steps, transitions


@pytest.mark.deployment(clock="wall", tick_interval_ms=50)
async def test_a_wait_ends_in_wall_time(deployment: EngineConfig) -> None:
    plan = create_plan(
        id="wall", name="Wall clock",
        steps=[steps.send_email(id="hello", template_id="tmpl_check_in", subject="Hi"),
               steps.wait(id="pause", duration=Duration(seconds=1)),
               steps.end(id="done", outcome="waited")],
        transitions=transitions.linear(),
    )  # fmt: skip
    async with Engine(deployment, scheduler=True) as engine:
        started = time.monotonic()
        run = await engine.execute(plan, {"id": "w1", "email": "w1@acme.test", "attributes": {"first_name": "W"}},
                                   {"product": "DEE"})  # fmt: skip
        while (await engine.get_run(run.id)).status != "completed":
            assert time.monotonic() - started < 15, "the wait did not end in wall time"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        done = await engine.get_run(run.id)
        assert done.outcome == "waited"
        assert elapsed >= 0.95  # never before the wait (its start tick may have begun up to one tick earlier)
        timeline = await engine.get_timeline(run.id)
        waited = next(t for t in timeline if t.action == "wait.completed")
        started_wait = next(t for t in timeline if t.action == "wait.started")
        assert waited.tick - started_wait.tick == 20  # 1 s at 50 ms per tick, exactly
        assert (await engine.replay(run.id)).identical
