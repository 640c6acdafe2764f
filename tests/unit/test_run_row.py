"""What a run's row should say, from its chain alone (`dee.kernel.run_row`): for a run in every
status, and after every command allowed from it, the kernel's own state agrees with what its
entries imply; a row edited away from them does not."""

from __future__ import annotations

import msgspec
import pytest

from dee.kernel.erasure import erase_run, erased
from dee.kernel.run_row import implied, row_problems
from tests.unit.kernel_helpers import Driver
from tests.unit.test_kernel_commands import ALLOWED_COMMANDS, COMMANDS, STATUSES


def agrees(d: Driver) -> list[str]:
    return row_problems(d.state.status, d.state.outcome, d.state.current_step, d.entries)


@pytest.mark.parametrize("status", list(STATUSES))
def test_a_run_in_every_status_agrees_with_its_chain(status: str) -> None:
    d = STATUSES[status]()
    assert d.state.status == status
    assert agrees(d) == []


@pytest.mark.parametrize(("status", "command"), list(ALLOWED_COMMANDS))
def test_a_run_after_every_allowed_command_agrees_with_its_chain(status: str, command: str) -> None:
    d = STATUSES[status]()
    d.feed(COMMANDS[command](d.state.current_tick))
    assert agrees(d) == []
    d.run()
    assert agrees(d) == []


def test_an_edited_row_disagrees() -> None:
    d = STATUSES["completed"]()
    s = d.state
    assert implied(d.entries).statuses == ("completed",) and s.outcome is not None
    assert row_problems("failed", s.outcome, s.current_step, d.entries) == ["status 'failed', the chain says 'completed'"]
    assert row_problems(s.status, "replied", s.current_step, d.entries) == [f"outcome 'replied', the chain says {s.outcome!r}"]
    assert len(row_problems(s.status, s.outcome, "elsewhere", d.entries)) == 1
    waiting = STATUSES["waiting"]()
    assert row_problems("completed", None, waiting.state.current_step, waiting.entries) != []


@pytest.mark.parametrize("status", list(STATUSES))
def test_an_erased_run_agrees_with_its_chain_once_its_entries_are_unreadable(status: str) -> None:
    """After an erasure every sealed part reads `{"erased": true}`, the outcome of `run.completed`
    too: the erasure's own entries, in clear, say what the row's outcome is."""
    d = STATUSES[status]()
    scrubbed, journaled = erase_run(d.state, d.state.current_tick, "gdpr-request")
    unreadable = [msgspec.structs.replace(e, input=erased(), output=erased(), context=erased()) for e in d.entries]
    entries = [*unreadable, *journaled]
    assert row_problems(scrubbed.status, scrubbed.outcome, scrubbed.current_step, entries) == []
    assert row_problems(scrubbed.status, "replied", scrubbed.current_step, entries) != []
