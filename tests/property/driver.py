"""Drive a `Scenario` through the kernel the way a partition worker would, and re-feed it.

`drive` plays the shell: at each step it takes the earliest thing that is due (an external
input, an answer from the world, or the run's own timer), calls `advance` with every input of
that tick (then, in a second call, the scenario's `late` inputs due by then), and hands the
`DispatchRequest` effects to the world, which schedules their answers as new inputs (as does
the world's operator, who retries failed runs). It records every call, so the exact inputs
the kernel saw (with their ticks) can be fed again in other batch compositions (`feed`),
replayed, or compared.

Cycles in a plan (through a wait) can make a run last forever: after `max_calls` calls the
driver finishes the current tick and stops there; `final_now` is the tick everything was
processed up to, and every composition ends with an advance to that same tick.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import msgspec
from strategies import Scenario

from dee.kernel.audit import EntryDraft
from dee.kernel.effects import DispatchRequest, Effect
from dee.kernel.inputs import AnyInput, ChannelResult, Event, Retry
from dee.kernel.machine import Advance, KernelEnv, advance, start_run
from dee.kernel.state import RunState

AdvanceFn = Callable[[RunState, Sequence[AnyInput], int, KernelEnv], Advance]
MAX_CALLS = 150


def encode(value: object) -> bytes:
    """msgspec JSON, keys in insertion order: a difference in dict order is a difference too."""
    return msgspec.json.encode(value)


@dataclass(frozen=True)
class Call:
    """One `advance` call: the state it was given, its inputs and `now`, and what it returned."""

    state: RunState
    inputs: tuple[AnyInput, ...]
    now: int
    result: Advance


@dataclass(frozen=True)
class Recording:
    first: Advance  # what start_run returned
    calls: tuple[Call, ...]
    final_now: int

    @property
    def inputs(self) -> list[AnyInput]:
        """Every input the kernel was given, in the order it was given."""
        return [i for c in self.calls for i in c.inputs]

    @property
    def entries(self) -> list[EntryDraft]:
        return [*self.first.entries, *(e for c in self.calls for e in c.result.entries)]

    @property
    def effects(self) -> list[Effect]:
        return [*self.first.effects, *(e for c in self.calls for e in c.result.effects)]

    @property
    def final(self) -> RunState:
        return self.calls[-1].result.state if self.calls else self.first.state

    def fingerprint(self) -> tuple[bytes, bytes, bytes]:
        """Entries, effects and final state, byte for byte: what determinism is about."""
        return encode(self.entries), encode(self.effects), encode(self.final)


def _answers(scenario: Scenario, request: DispatchRequest, index: int, serial: Iterator[int]) -> list[AnyInput]:
    """The world's reaction to one dispatch: its result (maybe twice, maybe never) and maybe an
    event of the contact tied to the message by message id."""
    answer = scenario.world.answer(request.channel, index)
    if answer.lost:
        return []
    at = request.tick + answer.delay
    result = ChannelResult(
        at, request.idempotency_key, answer.status,  # type: ignore[arg-type]
        error_kind=answer.error_kind,  # type: ignore[arg-type]
        error="simulated failure" if answer.status == "failed" else None,
        outcome=answer.outcome,
    )  # fmt: skip
    out: list[AnyInput] = [result]
    if answer.duplicate:
        out.append(msgspec.structs.replace(result, tick=at + 1))
    if answer.follow_up and answer.status == "delivered":
        data = {"kind": "soft"} if answer.follow_up == "email.bounced" else {}
        out.append(Event(at + answer.follow_up_delay, f"world-{next(serial)}", answer.follow_up,
                         message_id=request.message_id, data=data))  # fmt: skip
    return out


def drive_steps(
    scenario: Scenario, env: KernelEnv, advance_fn: AdvanceFn = advance, max_calls: int = MAX_CALLS
) -> Generator[Call, None, Recording]:
    """Run `scenario`, yielding after each advance call (so runs can be interleaved)."""
    first = start_run(scenario.start)
    state = first.state
    external = list(scenario.script)
    late = list(scenario.late)
    answers: list[tuple[int, int, AnyInput]] = []  # heap of (tick, arrival, input)
    arrival = itertools.count()
    serial = itertools.count()
    dispatched = {"email": 0, "voice": 0}
    calls: list[Call] = []
    cut: int | None = None
    failures = 0
    while True:
        due = [t for t in (
            external[0].tick if external else None,
            answers[0][0] if answers else None,
            state.wake_tick if state.status != "paused" else None,
        ) if t is not None]  # fmt: skip
        if not due:
            break
        now = min(due)
        if now > scenario.horizon or (cut is not None and now > cut):
            break
        batch: list[AnyInput] = []
        while answers and answers[0][0] == now:
            batch.append(heapq.heappop(answers)[2])
        while external and external[0].tick == now:
            batch.append(external.pop(0))
        batches = [batch]
        if late and late[0].tick <= now:  # in a call of their own, after the tick's first one
            batches.append([])
            while late and late[0].tick <= now:
                batches[-1].append(msgspec.structs.replace(late.pop(0), tick=now))
        for inputs in batches:
            result = advance_fn(state, inputs, now, env)
            call = Call(state, tuple(inputs), now, result)
            calls.append(call)
            state = result.state
            failures += sum(1 for _, to in result.transitions if to == "failed")
            failed_now = result.state.status == "failed" and any(to == "failed" for _, to in result.transitions)
            if failed_now and failures <= len(scenario.world.retries):
                at = now + scenario.world.retries[failures - 1]
                heapq.heappush(answers, (at, next(arrival), Retry(at, command_id=f"operator-retry-{failures}")))
            for effect in result.effects:
                if isinstance(effect, DispatchRequest):
                    index = dispatched.get(effect.channel, 0)
                    dispatched[effect.channel] = index + 1
                    for inp in _answers(scenario, effect, index, serial):
                        heapq.heappush(answers, (inp.tick, next(arrival), inp))
            yield call
        if cut is None and len(calls) >= max_calls:
            cut = now
    final_now = cut if cut is not None else scenario.horizon
    result = advance_fn(state, [], final_now, env)
    call = Call(state, (), final_now, result)
    calls.append(call)
    yield call
    return Recording(first, tuple(calls), final_now)


def drive(scenario: Scenario, env: KernelEnv | None = None, advance_fn: AdvanceFn = advance) -> Recording:
    steps = drive_steps(scenario, env or scenario.env(), advance_fn)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def feed(
    scenario: Scenario, env: KernelEnv, batches: Sequence[tuple[Sequence[AnyInput], int]], final_now: int
) -> Recording:
    """Start the run and feed it `batches` of (inputs, now), then advance to `final_now`."""
    first = start_run(scenario.start)
    state = first.state
    calls: list[Call] = []
    for inputs, now in [*batches, ((), final_now)]:
        result = advance(state, list(inputs), now, env)
        calls.append(Call(state, tuple(inputs), now, result))
        state = result.state
    return Recording(first, tuple(calls), final_now)


# ---- batch compositions of one recorded input sequence ---------------------------------------


def one_per_call(inputs: Sequence[AnyInput]) -> list[tuple[list[AnyInput], int]]:
    """Each input alone, at its own tick (inputs of one tick are split across calls)."""
    return [([i], i.tick) for i in inputs]


def all_at_once(inputs: Sequence[AnyInput], start_tick: int) -> list[tuple[list[AnyInput], int]]:
    return [(list(inputs), inputs[-1].tick if inputs else start_tick)]


def split(inputs: Sequence[AnyInput], cuts: Iterable[int], pushes: Sequence[float]) -> list[tuple[list[AnyInput], int]]:
    """Batches cut before the given indexes. Each batch's `now` lies between its last input's
    tick and the next batch's first tick (`pushes[k]` in [0, 1] picks where)."""
    if not inputs:
        return []
    bounds = sorted({c for c in cuts if 0 < c < len(inputs)})
    pieces = [list(inputs[a:b]) for a, b in zip([0, *bounds], [*bounds, len(inputs)], strict=False)]
    batches = []
    for k, piece in enumerate(pieces):
        low = piece[-1].tick
        high = pieces[k + 1][0].tick if k + 1 < len(pieces) else low
        push = pushes[k % len(pushes)] if pushes else 0.0
        batches.append((piece, low + int((high - low) * push)))
    return batches
