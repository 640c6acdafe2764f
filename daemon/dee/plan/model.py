"""The plan model: immutable msgspec Structs with the same field names as plan files.

A step is `Step(id, type, params)`: the type names a step-type plugin and `params` is the plain
JSON object that plugin reads (camelCase keys, exactly as in a YAML plan file). Keeping params
as plain data means a third-party step type needs no change here, and the canonical encoding
(and with it the plan's content checksum) is the same whether a plan came from Python builders
or from a file.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

JSONValue = Any

MS_PER_SECOND = 1000


class Duration(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A span of logical time; converted to ticks with the deployment's tick length."""

    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def total_ms(self) -> int:
        return MS_PER_SECOND * (((self.days * 24 + self.hours) * 60 + self.minutes) * 60 + self.seconds)

    def to_ticks(self, tick_interval_ms: int) -> int:
        """Whole ticks, rounded up: a wait never ends before the time it asked for."""
        return -(-self.total_ms() // tick_interval_ms)


class Tracking(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    opens: bool = False
    clicks: bool = False


class Voicemail(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """Voicemail handling of a call: detect it, then leave the stored message `message_id`."""

    detect: bool = True
    message_id: str | None = None


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One arm of a branch: when the CEL expression `when` holds, go to step `goto`."""

    when: str
    goto: str


class Edge(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """An explicit transition. Edges leaving one step are tried in order; the first whose
    condition holds (or that has none) wins."""

    from_: str
    to: str
    condition: str | None = None


class ExitCondition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Checked every time a run is touched; when it holds the run completes with `outcome`."""

    when: str
    outcome: str


class Transitions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mode: Literal["linear", "explicit"] = "linear"
    edges: tuple[Edge, ...] = ()


class Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    type: str
    params: dict[str, JSONValue] = {}


class Plan(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """An immutable, validated plan. `version` is assigned when the plan is registered (the same
    content always gets the same version); `checksum` is derived from the content alone."""

    id: str
    name: str
    steps: tuple[Step, ...]
    transitions: Transitions = Transitions()
    exit_conditions: tuple[ExitCondition, ...] = ()
    checksum: str = ""
    version: int | None = None

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def first_step(self) -> str:
        return self.steps[0].id

    def content(self) -> dict[str, JSONValue]:
        """The plan as a plan file would hold it (camelCase, steps flattened)."""
        return {
            "id": self.id,
            "name": self.name,
            "steps": [step_to_document(s) for s in self.steps],
            "transitions": msgspec.to_builtins(self.transitions),
            "exitConditions": msgspec.to_builtins(self.exit_conditions),
        }


def step_to_document(step: Step) -> dict[str, JSONValue]:
    return {"id": step.id, "type": step.type, **step.params}


def content_checksum(content: dict[str, JSONValue]) -> str:
    """SHA-256 of the canonical encoding (sorted keys, UTF-8 JSON) of a plan's content."""
    return hashlib.sha256(msgspec.json.encode(content, order="sorted")).hexdigest()
