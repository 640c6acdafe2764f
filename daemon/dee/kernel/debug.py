"""A step-by-step debugger over a run's recorded inputs: `peek`, then `step_forward`.

It works on a copy rebuilt from the audit log through the kernel, never on the live run; each
step applies exactly one thing (the next timer, the next recorded input, or the policy facts that
came into force at a tick, together), in the same order `advance` would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from dee.kernel.audit import EntryDraft
from dee.kernel.context import condition_snapshot
from dee.kernel.inputs import AnyInput, Start
from dee.kernel.machine import KernelEnv, advance, is_early_fact, start_run
from dee.kernel.replay import EntryLike, inputs_of
from dee.kernel.state import RunState


class NextMove(msgspec.Struct, frozen=True):
    """What `step_forward` would do: fire the run's timer or apply an input, at `tick`."""

    kind: str  # "timer" | "input"
    tick: int
    step_id: str | None
    input: dict[str, Any] | None
    context: dict[str, Any]


class Debugger:
    def __init__(self, entries: Sequence[EntryLike], env_for: Callable[[Start], KernelEnv]) -> None:
        start, self._inputs = inputs_of(entries)
        self._env = env_for(start)
        self._end = entries[-1].tick
        first = start_run(start)
        self.state: RunState = first.state
        self.entries: list[EntryDraft] = list(first.entries)

    def _timer_first(self) -> bool:
        wake = self.state.wake_tick
        if wake is None or self.state.status == "paused":
            return False
        if not self._inputs:
            return wake <= self._end
        upcoming = self._inputs[0]
        return wake < upcoming.tick or (wake == upcoming.tick and not is_early_fact(upcoming))

    def _next_batch(self) -> list[AnyInput]:
        """The next recorded input; with it, the other facts in force from its tick, if it is one
        (applied one call apart, the later ones would count as late)."""
        first = self._inputs.pop(0)
        batch = [first]
        while is_early_fact(first) and self._inputs and is_early_fact(self._inputs[0]) and self._inputs[0].tick == first.tick:
            batch.append(self._inputs.pop(0))
        return batch

    def has_next(self) -> bool:
        return bool(self._inputs) or self._timer_first()

    def peek(self) -> NextMove | None:
        """The next move and the context it would see; nothing is executed."""
        if not self.has_next():
            return None
        s = self.state
        timer = self._timer_first()
        tick = s.wake_tick if timer else self._inputs[0].tick
        assert tick is not None
        snapshot = condition_snapshot(s.contact, s.variables, s.results, s.events, tick)
        return NextMove(
            "timer" if timer else "input", tick, s.current_step,
            None if timer else msgspec.to_builtins(self._inputs[0]), msgspec.to_builtins(snapshot),
        )  # fmt: skip

    async def step_forward(self) -> list[EntryDraft]:
        """Apply the next move; returns the entries it produced."""
        move = self.peek()
        if move is None:
            return []
        before = self.state
        batch: list[AnyInput] = [] if move.kind == "timer" else self._next_batch()
        held = bool(batch) and is_early_fact(batch[0]) and before.wake_tick == move.tick  # facts ahead of their tick's timer
        state = msgspec.structs.replace(before, wake_tick=None, timer=None) if held else before
        result = advance(state, batch, move.tick, self._env)
        self.state = result.state
        if held:  # the timer is the next move, not part of this one
            self.state = msgspec.structs.replace(self.state, wake_tick=before.wake_tick, timer=before.timer)
        self.entries.extend(result.entries)
        return list(result.entries)
