"""What the metrics count, without services: a tick's tally of what the kernel did, bounded step
outcome labels, runs by status kept from a count plus moves, and the tick lag of a wall clock."""

from __future__ import annotations

import platform
import time
from collections import Counter

from dee.config import EngineConfig, SchedulerConfig
from dee.kernel.machine import Advance
from dee.metrics import OTHER, OUTCOMES_PER_STEP_TYPE, Metrics, build_version
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.observer import WorkerObserver
from dee.scheduler.runcounts import STATUSES, RunCounts
from dee.shell.tally import Tally
from tests.unit.kernel_helpers import Driver, make_contact, outreach_plan


def voicemail(request):  # type: ignore[no-untyped-def]
    return {"status": "delivered", "outcome": "voicemail" if request.channel == "voice" else None}


def whole_run(d: Driver) -> Advance:
    """Everything a driven run did, as if the kernel had returned it in one advance."""
    return Advance(d.state, d.entries, d.effects, d.rejected, d.transitions)


def test_a_tally_counts_steps_by_type_and_outcome_and_the_net_status_moves() -> None:
    d = Driver(outreach_plan())
    d.run(respond=voicemail)  # not opened: the cold path, a voicemail, the breakup email
    tally = Tally()
    tally.add(whole_run(d), d.plan)
    assert tally.transitions == 9
    assert tally.steps == Counter({("sendEmail", "delivered"): 3, ("wait", "completed"): 3, ("branch", "branch:cold-follow-up"): 1,
                                   ("sendVoice", "voicemail"): 1, ("end", "no_response"): 1})  # fmt: skip
    assert +tally.moves == Counter({"completed": 1}) and -tally.moves == Counter({"pending": 1})  # the rest nets out
    assert not tally.denials and not tally.verdicts  # no gate in this environment


def test_a_step_that_fails_counts_as_its_types_error() -> None:
    d = Driver(outreach_plan(), contact=make_contact(phone=None))
    d.run()
    tally = Tally()
    tally.add(whole_run(d), d.plan)
    assert d.state.status == "failed" and tally.steps[("sendVoice", "error")] == 1
    assert +tally.moves == Counter({"failed": 1})


def test_tallies_merge() -> None:
    one, two = Tally(transitions=2, moves=Counter({"active": 1})), Tally(transitions=3, moves=Counter({"active": -1}))
    two.verdicts["allow"] += 1
    one.update(two)
    assert (one.transitions, +one.moves, one.verdicts) == (5, Counter(), Counter({"allow": 1}))


def test_outcome_labels_are_classes_capped_per_step_type() -> None:
    m = Metrics()
    assert m.outcome_label("branch", "branch:warm-follow-up") == m.outcome_label("branch", "branch:cold") == "branch"
    labels = [m.outcome_label("end", f"outcome-{n}") for n in range(OUTCOMES_PER_STEP_TYPE + 5)]
    assert labels[:OUTCOMES_PER_STEP_TYPE] == [f"outcome-{n}" for n in range(OUTCOMES_PER_STEP_TYPE)]
    assert set(labels[OUTCOMES_PER_STEP_TYPE:]) == {OTHER}
    assert m.outcome_label("end", "outcome-3") == "outcome-3"  # one already shown stays itself
    assert m.outcome_label("wait", "completed") == "completed"  # the cap is per type


def test_run_counts_are_the_snapshot_plus_the_moves_after_it() -> None:
    exported: list[bool] = []
    counts = RunCounts(0, lambda: exported.append(True))
    assert counts.due()
    counts.moved({"pending": 2})  # committed before the snapshot: in the count already
    counts.snapshot_taken()
    counts.moved({"pending": -1, "active": 1})  # committed while the count ran
    assert not counts.counted and not exported
    counts.counted_as({"pending": 2, "completed": 5})
    assert (counts.value("pending"), counts.value("active"), counts.value("completed")) == (1.0, 1.0, 5.0)
    assert exported == [True] and not counts.due()
    counts.moved({"active": -1, "completed": 1})
    assert (counts.value("active"), counts.value("completed")) == (0.0, 6.0)
    counts.closed = True
    counts.counted_as({})  # the worker stopped: a late count changes nothing
    assert counts.value("completed") == 6.0
    assert set(STATUSES) == {"pending", "active", "waiting", "paused", "completed", "failed", "cancelled"}


def test_the_tick_lag_grows_while_a_worker_processes_nothing() -> None:
    interval_ms = 250
    config = EngineConfig(scheduler=SchedulerConfig(clock="wall", tick_interval_ms=interval_ms))
    clock = DeploymentClock(config, epoch_ms=int(time.time() * 1000) - 3_600_000)
    m = Metrics()
    observer = WorkerObserver(m, 5, clock, None)
    observer.started()

    def lag() -> float | None:
        return m.registry.get_sample_value("dee_tick_lag_seconds", {"partition": "5"})

    assert lag() in (0.0, 0.25)  # started now: nothing is behind yet (a tick may just have begun)
    clock.epoch_ms -= 10_000  # ten seconds pass (40 ticks) without a tick processed
    assert 10.0 <= (lag() or 0) <= 10.5
    observer.processed(clock.wall_tick())
    assert lag() in (0.0, 0.25)
    observer.stopped()
    assert lag() is None  # its next owner reports it


def test_a_manual_clock_never_lags_and_build_info_names_the_release() -> None:
    clock = DeploymentClock(EngineConfig(scheduler=SchedulerConfig(clock="manual")), epoch_ms=0)
    m = Metrics()
    observer = WorkerObserver(m, 0, clock, None)
    observer.started()
    assert m.registry.get_sample_value("dee_tick_lag_seconds", {"partition": "0"}) == 0.0
    assert m.registry.get_sample_value("dee_build_info", {"version": build_version(), "python": platform.python_version()}) == 1.0
    assert build_version() != "unknown"  # installed (editable) in the test environment
