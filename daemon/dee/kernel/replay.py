"""Replay: re-run a run from its audit entries alone, through today's kernel, and compare.

The audit log holds every input with the tick at which it was applied (the start payload in
`run.started`, each event, channel result and command in the entry it caused). Feeding those
inputs through `advance` with the run's plan version and the current templates must reproduce
the same step results; any difference is reported field by field. Wall-clock timestamps and
entry ids are never compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from dee.errors import AuditChainError
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import AnyInput, Start, input_from_builtins
from dee.kernel.machine import KernelEnv, advance, start_run
from dee.kernel.state import RunState, StepResult

RUN_STEP = "(run)"
COMPARED_FIELDS = ("step_id", "type", "tick", "outcome", "target_tick", "idempotency_key", "content_hash", "policy_verdict")


class EntryLike(Protocol):
    """What replay reads of an entry (an `AuditEntry`, or the kernel's `EntryDraft`): read-only."""

    @property
    def step_id(self) -> str | None: ...
    @property
    def tick(self) -> int: ...
    @property
    def action(self) -> str: ...
    @property
    def input(self) -> dict[str, Any] | None: ...
    @property
    def output(self) -> dict[str, Any] | None: ...


class ReplayStep(msgspec.Struct, frozen=True):
    id: str
    original_result: StepResult | None
    replayed_result: StepResult | None
    identical: bool


class ReplayDiff(msgspec.Struct, frozen=True):
    step: str
    field: str
    expected: Any
    actual: Any


class ReplayResult(msgspec.Struct, frozen=True):
    identical: bool
    steps: list[ReplayStep]
    diffs: list[ReplayDiff]
    state: RunState | None = None
    # the run's contact was erased: its recorded inputs are gone, so nothing was replayed or compared
    erased: bool = False
    dispatches: list[DispatchRequest] = []  # the answered actions a recorded replay re-issues


def trace(entries: Sequence[EntryLike]) -> list[StepResult]:
    """The comparable trace of a run: step results, inputs received and run status changes."""
    out: list[StepResult] = []
    for e in entries:
        output = e.output or {}
        if "result" in output:
            out.append(msgspec.convert(output["result"], StepResult))
        elif e.action == "event.received":
            kind = output.get("eventType") or ("contact" if "contactChanged" in output else "result")
            verdict = "ignored" if "ignored" in output else "held" if "held" in output else "received"
            out.append(StepResult(e.step_id or RUN_STEP, f"event:{kind}", e.tick, verdict))
        elif e.action.startswith("run.") and e.action != "run.started":
            detail = output.get("outcome") or output.get("reason") or output.get("error") or ""
            out.append(StepResult(RUN_STEP, e.action, e.tick, str(detail)))
        elif e.action == "error.retried":
            out.append(StepResult(e.step_id or RUN_STEP, "retry", e.tick, str(output.get("errorKind"))))
    return out


def start_of(entries: Sequence[EntryLike]) -> Start:
    """The start input alone (what picks a run's plan version), without decoding the others."""
    if not entries or entries[0].action != "run.started" or entries[0].input is None:
        raise AuditChainError("the audit log does not begin with run.started and its start input")
    start = input_from_builtins(entries[0].input)
    if not isinstance(start, Start):
        raise AuditChainError("run.started does not hold a start input")
    return start


def inputs_of(entries: Sequence[EntryLike]) -> tuple[Start, list[AnyInput]]:
    """The start input and every later input, each at the tick it was applied."""
    start = start_of(entries)
    later = [
        msgspec.structs.replace(input_from_builtins(e.input), tick=e.tick)
        for e in entries[1:]
        if e.input is not None
    ]
    return start, later


def replay_entries(
    entries: Sequence[EntryLike],
    env_for: Callable[[Start], KernelEnv],
    inputs: Sequence[AnyInput] | None = None,
) -> ReplayResult:
    """Replay a run from `entries`; `inputs` overrides the recorded inputs (what-if replays)."""
    start, recorded = inputs_of(entries)
    feed = list(recorded if inputs is None else inputs)
    env = env_for(start)
    first = start_run(start)
    now = max([entries[-1].tick, *(i.tick for i in feed)])
    replayed = advance(first.state, feed, now, env)
    result = compare(trace(entries), trace([*first.entries, *replayed.entries]), replayed.state)
    # what a recorded replay may re-issue: only actions the run's log shows answered, which the
    # adapters answer again from what they recorded; never a first send (a what-if's new action,
    # or one still in flight), which no gate of today has asked about
    answered = {e.input.get("idempotencyKey") for e in entries if e.input is not None and e.input.get("kind") == "result"}
    sends = [e for e in replayed.effects if isinstance(e, DispatchRequest) and e.idempotency_key in answered]
    return msgspec.structs.replace(result, dispatches=sends)


def compare(original: list[StepResult], replayed: list[StepResult], state: RunState | None = None) -> ReplayResult:
    steps: list[ReplayStep] = []
    diffs: list[ReplayDiff] = []
    for index in range(max(len(original), len(replayed))):
        a = original[index] if index < len(original) else None
        b = replayed[index] if index < len(replayed) else None
        label = (a or b).step_id  # type: ignore[union-attr]
        found = [] if a == b else _field_diffs(label, a, b)  # equal structs (the rule) need no field walk
        diffs += found
        steps.append(ReplayStep(label, a, b, not found))
    return ReplayResult(not diffs, steps, diffs, state)


def _field_diffs(label: str, a: StepResult | None, b: StepResult | None) -> list[ReplayDiff]:
    if a is None or b is None:
        return [ReplayDiff(label, "(step)", msgspec.to_builtins(a), msgspec.to_builtins(b))]
    return [
        ReplayDiff(label, name, getattr(a, name), getattr(b, name))
        for name in COMPARED_FIELDS
        if getattr(a, name) != getattr(b, name)
    ]
