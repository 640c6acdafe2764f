"""What the kernel does with the dispatcher's refusals (SPEC section 6 plus `dee.limits`): a rate
limit that names its wait is retried that many ticks later, an exhausted budget pauses the run
holding its send (or fails the step), and replay reproduces both from the journal."""

from __future__ import annotations

import dataclasses

from dee.kernel.inputs import ChannelResult, Resume
from dee.kernel.policy import GateRequest, PolicyGate, Verdict
from dee.kernel.replay import replay_entries
from dee.kernel.retry import RetryPolicy
from dee.plan import steps
from tests.unit.kernel_helpers import Driver, compile_plan


def _sent(start_tick: int = 0, **driver_args: object) -> Driver:
    plan = compile_plan([steps.send_email("mail", "tmpl_intro", "Hi"), steps.end("done", "sent")])
    d = Driver(plan, start_tick=start_tick, **driver_args)  # type: ignore[arg-type]
    d.feed(now=start_tick)
    assert d.state.status == "waiting" and len(d.outstanding) == 1
    return d


def _refuse(d: Driver, tick: int, kind: str, error: str, data: dict[str, object] | None = None) -> None:
    [request] = d.take_outstanding()
    d.feed(ChannelResult(tick, request.idempotency_key, "failed", error_kind=kind, error=error, data=data or {}))  # type: ignore[arg-type]


def test_the_dispatch_names_the_runs_plan() -> None:
    d = _sent()
    assert d.outstanding[0].plan_id == d.plan.plan.id


def test_a_rate_limit_with_its_wait_is_retried_after_it_in_whole_ticks() -> None:
    d = _sent(tick_interval_ms=1000)
    _refuse(d, 5, "rate_limited", "daily limit", {"limit": "daily_limit", "retryAfterMs": 43_200_001})
    assert d.state.wake_tick == 5 + 43_201  # rounded up: the retry never comes before the limit frees up
    assert d.entries[-1].output == {"errorKind": "rate_limited", "error": "daily limit", "attempt": 1, "nextTick": 43_206}
    d.feed(now=43_206)
    again = d.outstanding[0]
    assert (again.attempt, again.dispatch_no, again.tick) == (1, 2, 43_206)
    _refuse(d, 43_206, "rate_limited", "rate", {"retryAfterMs": 0})
    assert d.state.wake_tick == 43_207  # at least one tick
    d.feed(now=43_207)
    _refuse(d, 43_207, "rate_limited", "rate", {"retryAfterMs": "soon"})
    assert d.state.wake_tick == 43_208  # a wait that is not a number of ms: the next tick
    assert d.state.dispatch is not None and d.state.dispatch.rate_limited == 3


def test_rate_limits_with_a_wait_count_against_the_retry_cap() -> None:
    d = _sent(retry=RetryPolicy(rate_limit_retries=1))
    _refuse(d, 1, "rate_limited", "rate", {"retryAfterMs": 5000})
    d.feed(now=6)
    _refuse(d, 6, "rate_limited", "rate", {"retryAfterMs": 5000})
    assert d.state.status == "failed" and d.entries[-1].output == {"error": "rate_limited: rate"}


def test_an_exhausted_budget_pauses_the_run_holding_its_send_until_resumed() -> None:
    d = _sent(start_tick=2)
    first = d.outstanding[0]
    why = "budget of 5 for plan * on email this day cannot pay 1 more"
    _refuse(d, 4, "budget_exhausted", why, {"limit": "budget"})
    assert d.state.status == "paused" and d.state.dispatch is not None and d.state.dispatch.budget_paused == 1
    paused = d.entries[-1]
    assert (paused.action, paused.output) == ("run.paused", {"reason": f"budget: {why}"})
    assert paused.input is not None and paused.input["errorKind"] == "budget_exhausted"  # the refusal is journaled
    assert d.feed(now=1000).effects == []  # a paused run sends nothing
    d.feed(Resume(1200))
    again = d.outstanding[0]
    assert (again.idempotency_key, again.attempt, again.dispatch_no, again.tick) == (first.idempotency_key, 1, 2, 1200)
    d.deliver(1201)
    assert d.state.status == "completed" and d.result_of("mail").outcome == "delivered"


def test_resumed_after_a_budget_pause_the_gates_are_asked_again() -> None:
    class Count(PolicyGate):
        name = "count"

        def check(self, request: GateRequest) -> Verdict:
            return Verdict.allow(attempt=request.attempt)

    d = _sent()
    d.env = dataclasses.replace(d.env, gates=(Count(),))
    _refuse(d, 1, "budget_exhausted", "no money")
    d.feed(Resume(10))
    assert [e.tick for e in d.of("policy.evaluated")] == [10]
    assert len(d.outstanding) == 1


def test_an_exhausted_budget_fails_the_step_when_so_configured() -> None:
    d = _sent(retry=RetryPolicy(on_budget="fail"))
    _refuse(d, 3, "budget_exhausted", "no money")
    assert d.state.status == "failed" and d.state.dispatch is None
    assert d.result_of("mail").outcome == "failed"
    assert [e.action for e in d.entries[-2:]] == ["step.executed", "run.failed"]
    assert d.entries[-1].output == {"error": "budget_exhausted: no money"}


def test_replay_reproduces_a_rate_limited_and_a_budget_paused_run() -> None:
    limited = _sent()
    _refuse(limited, 1, "rate_limited", "daily limit", {"retryAfterMs": 90_000})
    limited.feed(now=91)
    limited.deliver(92)
    paused = _sent()
    _refuse(paused, 1, "budget_exhausted", "no money")
    paused.feed(Resume(50))
    paused.deliver(51)
    for d in (limited, paused):
        assert d.state.status == "completed"
        replayed = replay_entries(d.entries, lambda start, d=d: d.env)  # type: ignore[misc]
        assert replayed.identical, replayed.diffs
        assert replayed.state is not None and replayed.state.seq == d.state.seq
        assert [r.dispatch_no for r in replayed.dispatches] == [r.dispatch_no for r in d.dispatches()] == [1, 2]
