"""What a run's row should say, as its audit chain implies it: the status (or the statuses it
may be in), the outcome and the current step. A row edited behind the engine's back (a failed
run shown as completed, another outcome, another step) disagrees with its own chain.

The chain records every status change that matters to a reader: `run.completed`,
`run.failed`, `run.cancelled` and `run.paused` set the status; `run.started`, `run.resumed` and
`run.retried` leave the run live (pending, active or waiting, which the chain does not tell
apart entry by entry). The outcome is the last `run.completed`'s (or an erasure's: its
`run.cancelled` and `contact.erased` name it, in clear, where the sealed `run.completed` no
longer can); the current step is the step of the last `step.entered`. The entries are read
opened (`engine.audit.opened`): an outcome is sealed with the rest of its entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from dee.kernel.replay import EntryLike

LIVE = ("pending", "active", "waiting")
SETS = {"run.completed": ("completed",), "run.failed": ("failed",), "run.cancelled": ("cancelled",),
        "run.paused": ("paused",), "run.started": LIVE, "run.resumed": LIVE, "run.retried": LIVE}  # fmt: skip


class Implied(NamedTuple):
    statuses: tuple[str, ...]
    outcome: str | None
    current_step: str | None


def implied(entries: Sequence[EntryLike]) -> Implied:
    statuses: tuple[str, ...] = LIVE
    outcome = step = None
    for e in entries:
        if e.action in SETS:
            statuses = SETS[e.action]
            outcome = (e.output or {}).get("outcome") if e.action in ("run.completed", "run.cancelled") else None
        elif e.action == "contact.erased":
            outcome = (e.output or {}).get("outcome", outcome)
        elif e.action == "step.entered":
            step = e.step_id
    return Implied(statuses, outcome, step)


def row_problems(status: str, outcome: str | None, current_step: str | None, entries: Sequence[EntryLike]) -> list[str]:
    """How a row's status, outcome and current step differ from what `entries` (the whole
    chain, in order) imply; empty when they agree."""
    want = implied(entries)
    problems = []
    if status not in want.statuses:
        problems.append(f"status {status!r}, the chain says {' or '.join(repr(s) for s in want.statuses)}")
    if outcome != want.outcome:
        problems.append(f"outcome {outcome!r}, the chain says {want.outcome!r}")
    if current_step != want.current_step:
        problems.append(f"current step {current_step!r}, the chain says {want.current_step!r}")
    return problems
