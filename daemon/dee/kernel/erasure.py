"""What erasing a contact does to one of its runs (pure: the shell destroys the key).

The run's state keeps nothing of the contact but its id: the contact snapshot, the variables,
the visible events, a held or pending message (a rendered body) are dropped. A run not yet
ended is cancelled with the outcome `erased` (`run.cancelled`, so reports count its end), and
every run journals `contact.erased` with the contact id, the reason code and the tick (and
the plan version and epoch its sealed start held, and the run's outcome), nothing personal:
those entries are never sealed, so the log still says what happened once the key is gone.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dee.kernel.audit import EntryDraft
from dee.kernel.contact import Contact
from dee.kernel.state import RunState

ERASED_OUTCOME = "erased"
ERASED_MARK = "erased"


def erased() -> dict[str, Any]:
    """What readers are shown in place of a sealed part of an entry whose key was destroyed."""
    return {ERASED_MARK: True}


def is_erased(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and value.get(ERASED_MARK) is True


def erase_run(state: RunState, tick: int, reason: str) -> tuple[RunState, list[EntryDraft]]:
    """The run with its contact data scrubbed, and the entries that journal it."""
    at = max(tick, state.current_tick)
    entries: list[EntryDraft] = []
    changes: dict[str, object] = {
        "contact": Contact(id=state.contact.id), "variables": {}, "events": (), "held": (), "dispatch": None,
        "channel_wait": None,
    }  # fmt: skip

    def entry(action: str, output: dict[str, Any]) -> None:
        seq = state.seq + len(entries) + 1
        entries.append(EntryDraft(state.run_id, seq, state.plan_id, state.current_step, at, action, output=output))

    if not state.terminal:
        changes.update(status="cancelled", outcome=ERASED_OUTCOME, wake_tick=None, timer=None, completed_tick=at,
                       current_tick=at, paused_from=None)  # fmt: skip
        entry("run.cancelled", output={"reason": ERASED_OUTCOME, "outcome": ERASED_OUTCOME})
    # the plan version and epoch are what readers took from `run.started`, now unreadable
    # and the outcome, which a sealed `run.completed` no longer shows (`dee audit verify` checks
    # the run's row against it)
    entry("contact.erased", output={"contactId": state.contact.id, "reason": reason, "cancelled": not state.terminal,
                                    "outcome": state.outcome if state.terminal else ERASED_OUTCOME,
                                    "planVersion": state.plan_version, "epochMs": state.epoch_ms})  # fmt: skip
    scrubbed = msgspec.structs.replace(state, seq=state.seq + len(entries), **changes)
    return scrubbed, entries
