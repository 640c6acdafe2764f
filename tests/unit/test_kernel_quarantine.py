"""`quarantine`: when advance itself raises, the shell stops the run (never the partition)."""

from __future__ import annotations

import pytest

from dee.kernel.contact import Contact
from dee.kernel.machine import quarantine
from dee.kernel.state import RunState


def state(status: str) -> RunState:
    return RunState(
        run_id="r1", plan_id="p", plan_version=1, contact=Contact("c1"), variables={}, status=status,  # type: ignore[arg-type]
        start_tick=0, current_tick=5, current_step="s1", wake_tick=90, timer="wait", seq=3,
    )  # fmt: skip


@pytest.mark.parametrize("status", ["active", "waiting"])
def test_a_run_that_may_fail_is_failed_with_the_error_journaled(status: str) -> None:
    result = quarantine(state(status), "KeyError: 'x'", 10)
    assert result.state.status == "failed"
    assert result.state.wake_tick is None and result.state.timer is None
    assert [(e.seq, e.action, e.tick) for e in result.entries] == [(4, "error.occurred", 10), (5, "run.failed", 10)]
    assert result.entries[0].output == {"error": "kernel: KeyError: 'x'"}
    assert result.transitions == [(status, "failed")]


@pytest.mark.parametrize("status", ["pending", "paused", "completed"])
def test_a_run_that_may_not_fail_keeps_its_status_but_never_wakes_again(status: str) -> None:
    result = quarantine(state(status), "boom", 10)
    assert result.state.status == status
    assert result.state.wake_tick is None
    assert [e.action for e in result.entries] == ["error.occurred"]
    assert result.transitions == []
